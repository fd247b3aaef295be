"""`cangflow run reconcile` killed with SIGKILL while it applies ERP-truth lines, then run again:
every line applied exactly once, one order, and the same stock as a clean run would leave."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from tests.builders import World

pytestmark = pytest.mark.integration

SKUS = 300


@pytest.fixture(scope="module")
def world(tasks_db):
    world = World.create(tasks_db, bins=1)
    with tasks_db.session() as s:
        s.execute(
            text("""
            INSERT INTO sku (code) SELECT :prefix || n FROM generate_series(1, :n) AS n
        """),
            {"prefix": f"{world.warehouse}-K", "n": SKUS},
        )
    world.skus = [f"{world.warehouse}-K{n}" for n in range(1, SKUS + 1)]
    for sku in world.skus:
        world.receive(sku, 10)
    return world


def _state(db, warehouse: str) -> dict:
    with db.session() as s:
        return dict(
            s.execute(
                text("""
            SELECT (SELECT count(*) FROM adjustment_order) AS orders,
                   (SELECT count(*) FROM adjustment_order_line WHERE status = 'applied') AS applied,
                   (SELECT count(*) FROM stock_movement WHERE movement_type = 'adjustment') AS adjustments,
                   (SELECT sum(b.on_hand) FROM stock_balance b JOIN warehouse w ON w.id = b.warehouse_id
                    WHERE w.code = :w) AS on_hand
        """),
                {"w": warehouse},
            )
            .mappings()
            .one()
        )


def test_killed_while_applying_then_rerun_applies_every_line_once(
    world, tasks_db, own_database_url, tmp_path
):
    as_of = datetime.now(UTC).isoformat()
    feed = tmp_path / "erp.csv"
    feed.write_text(
        "warehouse,sku,lot,quantity,as_of\n"
        + "".join(f"{world.warehouse},{sku},,12,{as_of}\n" for sku in world.skus)
    )
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(CANGFLOW_DATABASE_URL=own_database_url, PREFECT_HOME=str(tmp_path / "prefect"))
    command = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "reconcile",
        "--erp-file",
        str(feed),
        "--truth",
        "erp",
        "--auto-approve-limit",
        "5",
    ]
    run = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while (
            _state(tasks_db, world.warehouse)["applied"] < 20
            and time.monotonic() < deadline
            and run.poll() is None
        ):
            time.sleep(0.05)
        assert run.poll() is None, "the run finished before it could be killed"
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    cut = _state(tasks_db, world.warehouse)
    assert 20 <= cut["applied"] < SKUS
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    after = _state(tasks_db, world.warehouse)
    assert after == {"orders": 1, "applied": SKUS, "adjustments": SKUS, "on_hand": 12 * SKUS}
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    # The same feed a third time: nothing new, so the run ends stale (exit code 4), changing nothing.
    assert again.returncode == 4 and re.search(r"^  status +stale$", again.stdout, re.MULTILINE), (
        again.stdout
    )
    assert "reconciled before" in again.stderr
    assert _state(tasks_db, world.warehouse) == after
