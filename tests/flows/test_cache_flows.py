"""The relay and warmup flows as Prefect runs them, and the relay's --follow mode as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from flows.cache_warmup import warmup_flow
from flows.relay import relay_flow
from tests.builders import World
from tests.flows.test_snapshot_flows import artifact_rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tasks_db, prefect_api):
    world = World.create(tasks_db, bins=1)
    for qty in (5, 6, 7):
        world.stocked_sku(qty)
    return world


def _unpublished(db) -> int:
    with db.session() as s:
        return s.execute(
            text("SELECT count(*) FROM outbox_message WHERE published_at IS NULL")
        ).scalar()


def test_relay_flow_publishes_everything_due_and_the_cache_consumer_handles_it(world, tasks_db):
    from prometheus_client import REGISTRY

    with (
        tasks_db.session() as s
    ):  # the oldest due message has waited a minute: the backlog gauge says so
        s.execute(
            text(
                "UPDATE outbox_message SET created_at = now() - interval '60 seconds' "
                "WHERE id = (SELECT min(id) FROM outbox_message WHERE published_at IS NULL)"
            )
        )
    from tasks.cache import publish_pending

    publish_pending.fn(max_batches=0)  # measures, publishes nothing
    assert REGISTRY.get_sample_value("cangflow_outbox_oldest_pending_age_seconds") >= 60
    summary = relay_flow()
    assert summary["published"] >= 3 and summary["handled"] == summary["published"]
    assert _unpublished(tasks_db) == 0
    assert REGISTRY.get_sample_value("cangflow_outbox_oldest_pending_age_seconds") == 0
    assert artifact_rows("outbox-relay")[0]["published"] == summary["published"]
    assert relay_flow()["published"] == 0


def test_warmup_flow_warms_the_most_moved_then_the_most_read(world):
    first = warmup_flow(top=10)
    assert first["source"] == "ledger" and first["keys"] >= 3
    from tasks.cache import stock_cache

    cache = stock_cache()
    for sku in world.skus:
        cache.available(warehouse=world.warehouse, sku=sku)
    cache.stats.flush()
    from warehouse.metrics import sinks as metrics

    with metrics.use(metrics.RecordingMetrics()) as seen:
        second = warmup_flow(top=10)
    assert second["source"] == "reads" and second["keys"] == len(world.skus)
    assert (
        seen.value("cangflow_cache_hit_ratio_last_hour") == second["hit_rate_this_hour"] is not None
    )
    assert artifact_rows("cache-warmup")[0]["keys"] == second["keys"]


def test_relay_follow_mode_publishes_new_changes_until_ctrl_c_stops_it_completed(
    world, tasks_db, own_database_url, tmp_path
):
    """On the temporary API (no server), as run by hand in a terminal: Ctrl-C goes to the whole
    process group. The relay ends its round and its run Completed, and the command exits 0;
    it used to be recorded Crashed, or to hang while its last report met a killed API."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(CANGFLOW_DATABASE_URL=own_database_url, PREFECT_HOME=str(tmp_path / "prefect"))
    follow = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "relay", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        world.receive(world.skus[0], 1)
        deadline = time.monotonic() + 180
        while _unpublished(tasks_db) and time.monotonic() < deadline and follow.poll() is None:
            time.sleep(0.2)
        assert follow.poll() is None and _unpublished(tasks_db) == 0
        world.receive(world.skus[1], 1)  # a change made while it follows
        deadline = time.monotonic() + 30
        while _unpublished(tasks_db) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _unpublished(tasks_db) == 0
        os.killpg(follow.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        said, _ = follow.communicate(timeout=120)
        assert follow.returncode == 0, said
        assert "(Completed)" in said and "relay stopped" in said, said
    finally:
        if follow.poll() is None:
            os.killpg(follow.pid, signal.SIGKILL)
            follow.wait(timeout=30)
