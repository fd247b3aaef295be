"""`cangflow run snapshot` killed with SIGKILL in the middle of a long catch-up, then run again:
the days are complete, each exactly once, and every check passes (invariant 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time as clock
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import text

from tests.builders import World
from warehouse import snapshots, stock
from warehouse.history.calendar import today

pytestmark = pytest.mark.integration

TODAY = today()
DAYS = 240

# Every built day's rows against a direct sum of the ledger up to the end of that day.
_AGAINST_LEDGER = text("""
WITH direct AS (
    SELECT d.snapshot_date, m.balance_id, sum(m.qty) AS on_hand
    FROM snapshot_day d JOIN stock_movement m ON m.occurred_at < (d.snapshot_date + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2 HAVING sum(m.qty) <> 0
)
SELECT count(*) FROM direct FULL JOIN stock_snapshot s USING (snapshot_date, balance_id)
WHERE direct.on_hand IS DISTINCT FROM s.on_hand
""")


@pytest.fixture(scope="module")
def history(own_db):
    world = World.create(own_db, bins=2)
    skus = [world.add_sku() for _ in range(3)]
    with own_db.session() as s:
        for back in range(DAYS, 0, -1):
            when = datetime.combine(TODAY - timedelta(days=back), time(10), tzinfo=UTC)
            stock.receive(
                s,
                warehouse=world.warehouse,
                sku=skus[back % 3],
                qty=back % 7 + 1,
                location=world.locations[back % 2],
                occurred_at=when,
            )
    return world


def _built(db) -> int:
    with db.session() as s:
        return s.execute(text("SELECT count(*) FROM snapshot_day")).scalar()


def test_killed_snapshot_run_is_completed_by_the_next_run(
    own_db, own_database_url, history, tmp_path
):
    env = {
        **os.environ,
        "CANGFLOW_DATABASE_URL": own_database_url,
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "flows.cli", "run", "snapshot"]
    run = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = clock.monotonic() + 240
        while _built(own_db) < 20 and clock.monotonic() < deadline and run.poll() is None:
            clock.sleep(0.1)
        assert run.poll() is None, (
            "the run ended before it could be killed; make the history longer"
        )
        os.killpg(run.pid, signal.SIGKILL)  # the CLI and the ephemeral Prefect server with it
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    killed_at = _built(own_db)
    assert 20 <= killed_at < DAYS
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    with own_db.session() as s:
        days = s.execute(text("SELECT snapshot_date FROM snapshot_day ORDER BY 1")).scalars().all()
        assert days == [TODAY - timedelta(days=back) for back in range(DAYS, 0, -1)]
        assert (
            s.execute(text("SELECT count(*) FROM snapshot_day WHERE verified_at IS NULL")).scalar()
            == 0
        )
        assert s.execute(_AGAINST_LEDGER).scalar() == 0
        assert snapshots.verify_latest(s).ok
