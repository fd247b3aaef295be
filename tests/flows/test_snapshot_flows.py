"""The snapshot and rollover flows as Prefect runs them: summaries, table artifacts under stable
keys, a failed check that fails the run visibly and is rebuilt by the next one, and bad dates
refused by the command before any flow starts."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import text

from flows.partition_rollover import rollover_flow
from flows.snapshot import SnapshotRunFailed, snapshot_flow
from tests.builders import World
from tests.integration.helpers import SNAPSHOTS_AGAINST_LEDGER
from tests.roles import owner_session
from warehouse import stock
from warehouse.history.calendar import today

pytestmark = pytest.mark.integration

TODAY = today()
DAYS = 15


@pytest.fixture(scope="module")
def world(tasks_db, prefect_api):
    world = World.create(tasks_db, bins=2)
    sku = world.add_sku()
    for back in range(DAYS, 0, -1):
        when = datetime.combine(TODAY - timedelta(days=back), time(9), tzinfo=UTC)
        with tasks_db.session() as s:
            stock.receive(
                s,
                warehouse=world.warehouse,
                sku=sku,
                qty=10,
                location=world.locations[back % 2],
                occurred_at=when,
            )
    world.skus = [sku]
    return world


def artifact_rows(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact with key {key!r}"
    latest = max(found, key=lambda a: a.created)
    return latest.data if isinstance(latest.data, list) else __import__("json").loads(latest.data)


def test_snapshot_flow_builds_every_day_up_to_yesterday_and_leaves_a_table(world):
    summary = snapshot_flow()
    assert summary["ok"] and summary["days_built"] == DAYS
    assert summary["latest_check"].endswith(": ok")
    rows = artifact_rows("snapshot-run")
    assert [row["date"] for row in rows] == [
        str(TODAY - timedelta(days=back)) for back in range(DAYS, 0, -1)
    ]
    assert {row["check"] for row in rows} == {"ok"}
    again = snapshot_flow()
    assert again["days_built"] == 0 and again["ok"]


def test_a_failed_check_fails_the_run_naming_the_key_and_the_next_run_rebuilds(
    world, tasks_db, own_admin_db
):
    snapshot_flow()
    yesterday = TODAY - timedelta(days=1)
    with own_admin_db.session() as s:  # tampering: what no cangflow role may do
        s.execute(
            text("UPDATE stock_snapshot SET on_hand = on_hand + 1 WHERE snapshot_date = :d"),
            {"d": yesterday},
        )
    with pytest.raises(SnapshotRunFailed, match=world.skus[0]):
        snapshot_flow()
    with tasks_db.session() as s:
        assert (
            s.execute(
                text("SELECT count(*) FROM snapshot_dirty WHERE snapshot_date = :d"),
                {"d": yesterday},
            ).scalar()
            == 1
        )
    repaired = snapshot_flow()
    assert repaired["ok"] and repaired["dirty_rebuilt"] == [str(yesterday)]


def test_a_backfill_rebuilds_exactly_the_range(world):
    start, end = TODAY - timedelta(days=6), TODAY - timedelta(days=4)
    summary = snapshot_flow(start=start, end=end)
    assert summary["days_built"] == 3 and summary["ok"]


def test_rollover_flow_reports_what_it_did_in_a_table(world):
    snapshot_flow()
    summary = rollover_flow()
    assert set(summary) >= {
        "partitions_created",
        "rows_moved_from_default",
        "months_closed",
        "partitions_retired",
    }
    # Months due for closing are either empty before the first snapshot or covered by one.
    assert not [why for why in summary["months_left_open"].values() if "no snapshot" in why], (
        summary
    )
    assert artifact_rows("partition-rollover")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--date", "2999-01-01"], "has not ended"),
        (["--from", "2026-03-05", "--to", "2026-03-01"], "is after"),
        (["--from", "2026-03-05"], "needs both"),
        (["--date", "05/03/2026"], "is not a date"),
    ],
)
def test_bad_dates_are_refused_before_a_flow_starts(own_database_url, arguments, message):
    env = {**os.environ, "CANGFLOW_DATABASE_URL": own_database_url}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "snapshot", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_two_runs_of_one_date_at_once_leave_one_set_of_rows_and_no_error(world, tasks_db):
    import threading

    day = TODAY - timedelta(days=2)
    outcomes, barrier = [], threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            outcomes.append(snapshot_flow(day=day)["ok"])
        except Exception as error:
            outcomes.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [True, True]
    with tasks_db.session() as s:
        rows, keys = s.execute(
            text(
                "SELECT count(*), count(DISTINCT balance_id) FROM stock_snapshot WHERE snapshot_date = :d"
            ),
            {"d": day},
        ).one()
    assert rows == keys == 2  # one row per bin holding stock


def test_a_day_whose_suite_failed_stays_flagged_and_fails_every_run_until_a_rebuild_passes(
    world, tasks_db, monkeypatch
):
    """Without the flag the rerun found nothing to build, ran no suite and exited 0."""
    from tasks.quality import QualityGateFailed
    from warehouse.quality import suites as quality

    snapshot_flow()
    yesterday = TODAY - timedelta(days=1)
    real = quality.validate
    bad = quality.QualityResult(
        "stock_snapshot",
        False,
        [
            {
                "expectation": "expect_column_values_to_be_between",
                "arguments": {},
                "success": False,
                "unexpected": 1,
                "sample": [-1],
            }
        ],
    )

    def failing_snapshot_suite(db, suite, **context):
        return bad if suite == "stock_snapshot" else real(db, suite, **context)

    monkeypatch.setattr(quality, "validate", failing_snapshot_suite)
    with pytest.raises(QualityGateFailed):  # the day is rebuilt and committed, then its suite fails
        snapshot_flow(day=yesterday)
    for _ in range(2):  # every later run rebuilds the day and fails on the suite again
        with pytest.raises(QualityGateFailed):
            snapshot_flow()
    monkeypatch.setattr(quality, "validate", real)
    repaired = snapshot_flow()
    assert repaired["ok"] and repaired["dirty_rebuilt"] == [str(yesterday)]
    assert snapshot_flow()["dirty_rebuilt"] == []


def _alter_and_backdate(world, tasks_db, altered, *, forget_digest: bool) -> None:
    """Alter one row of an older day by hand (as the owner: the app role may not), then
    record a movement dated the day after it, so every later day is rebuilt on the altered one."""
    with owner_session(tasks_db) as s:
        s.execute(
            text(
                "UPDATE stock_snapshot SET on_hand = on_hand + 5 WHERE snapshot_date = :d AND sku_id = "
                "(SELECT id FROM sku WHERE code = :sku)"
            ),
            {"d": altered, "sku": world.skus[0]},
        )
        if forget_digest:  # as for a day verified before digests were kept: only the audit can tell
            s.execute(
                text("UPDATE snapshot_day SET content_digest = NULL WHERE snapshot_date = :d"),
                {"d": altered},
            )
    with tasks_db.session() as s:
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=world.skus[0],
            qty=1,
            location=world.locations[0],
            occurred_at=datetime.combine(altered + timedelta(days=1), time(12), tzinfo=UTC),
        )


@pytest.mark.parametrize("forget_digest", [False, True], ids=["digest", "no digest"])
def test_a_hand_altered_older_snapshot_is_found_and_the_next_run_repairs_the_chain(
    world, tasks_db, forget_digest
):
    """Before: each day's check compared the build with the same formula over the same altered
    base and passed; the latest check failed and every run rebuilt only the newest days, forever."""
    snapshot_flow()
    altered = TODAY - timedelta(days=8)
    _alter_and_backdate(world, tasks_db, altered, forget_digest=forget_digest)
    with pytest.raises(SnapshotRunFailed) as failed:
        snapshot_flow()
    assert f"the snapshot of {altered} was altered" in str(
        failed.value
    ) or f"chain check {altered}" in str(failed.value)
    assert f"days from {altered} are marked dirty" in str(failed.value), str(failed.value)
    assert "live balance" in str(failed.value) or "altered" in str(failed.value)
    repaired = snapshot_flow()
    assert repaired["ok"] and repaired["dirty_rebuilt"][0] == str(altered), repaired
    with tasks_db.session() as s:
        assert s.execute(SNAPSHOTS_AGAINST_LEDGER).scalar() == 0
    assert snapshot_flow()["dirty_rebuilt"] == []


def test_balances_that_differ_from_a_right_chain_fail_the_run_without_endless_rebuilds(
    world, tasks_db
):
    snapshot_flow()
    balance_of = "(SELECT id FROM stock_balance WHERE sku_id = (SELECT id FROM sku WHERE code = :sku) ORDER BY id LIMIT 1)"
    with tasks_db.session() as s:  # a write that bypasses the ledger
        s.execute(
            text(f"UPDATE stock_balance SET on_hand = on_hand + 1 WHERE id = {balance_of}"),
            {"sku": world.skus[0]},
        )
    try:
        for _ in range(2):
            with pytest.raises(
                SnapshotRunFailed, match="agrees with the ledger, so the live balances differ"
            ):
                snapshot_flow()
            with tasks_db.session() as s:
                assert (
                    s.execute(text("SELECT count(*) FROM snapshot_dirty")).scalar() == 0
                )  # nothing to rebuild
    finally:
        with tasks_db.session() as s:
            s.execute(
                text(f"UPDATE stock_balance SET on_hand = on_hand - 1 WHERE id = {balance_of}"),
                {"sku": world.skus[0]},
            )
    assert snapshot_flow()["ok"]
