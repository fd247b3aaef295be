"""Feeds night after night: a feed too old, already reconciled or missing ends the run as stale
(exit code 4), visibly; two runs of one feed, or of one warehouse, never run at once and never
fail for it; a feed whose shape broke (cut short, all zeros, quantities that jumped) is refused
unless the operator confirms it, with a normal feed as the control."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import text

from flows.cli import main as cangflow
from flows.reconcile import reconcile_flow
from tests.builders import World
from tests.flows.test_reconcile import staging_tables, write_feed
from warehouse.db.roles import STAGING_SCHEMA
from warehouse.reconcile import FeedRejected

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


def configure(monkeypatch, **values) -> None:
    from warehouse.settings import get_settings

    for name, value in values.items():
        monkeypatch.setenv(f"CANGFLOW_{name.upper()}", str(value))
    get_settings.cache_clear()


def run_row(db, run_id: int) -> dict:
    with db.session() as s:
        return dict(
            s.execute(
                text(
                    "SELECT status, error, warehouse_ids, profile FROM reconciliation_run WHERE id = :id"
                ),
                {"id": run_id},
            )
            .mappings()
            .one()
        )


def staging_of(db, run_id: int) -> list[str]:
    return [name for name in staging_tables(db) if name.startswith(f"erp_feed_{run_id}_")]


# -- stale feeds ---------------------------------------------------------------------------------


def test_a_feed_older_than_the_limit_ends_stale_changing_nothing_until_a_run_allows_its_age(
    tasks_db, prefect_api, tmp_path, monkeypatch
):
    import time

    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(10)
    # The stock was received a moment ago, so the feed's age limit is made a second (0.0003 h).
    path = write_feed(tmp_path, [(world.warehouse, sku, "", 12)], as_of=now(), name="late.csv")
    configure(monkeypatch, reconcile_max_feed_age_hours=0.0003)
    time.sleep(1.5)
    for _ in range(2):  # the same old feed twice: stale both times, not "reconciled before"
        stale = reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=5)
        assert (
            stale["status"] == "stale" and " h old, over the limit of 0.0003 h" in stale["stale"]
        ), stale
        assert run_row(tasks_db, stale["run_id"])["status"] == "stale"
        assert world.on_hand(sku) == 10 and staging_of(tasks_db, stale["run_id"]) == []
    allowed = reconcile_flow(
        erp_file=path, truth="erp", auto_approve_limit=5, max_feed_age_hours=26
    )
    assert (allowed["status"], allowed["run_id"], allowed["applied"]) == (
        "done",
        stale["run_id"],
        1,
    )
    assert world.on_hand(sku) == 12


def test_the_command_exits_4_when_the_feed_folder_has_no_feed_or_only_an_old_one(
    tasks_db, prefect_api, tmp_path, capsys
):
    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(10)
    folder = tmp_path / "feeds"
    folder.mkdir()
    assert cangflow(["run", "reconcile", "--feed-dir", str(folder)]) == 4
    said = capsys.readouterr()
    assert "stale: the feed folder" in said.err and "holds no *.csv feed" in said.err
    assert "(Stale)" in said.out  # the run's own state, as the UI shows it
    write_feed(folder, [(world.warehouse, sku, "", 10)], name="erp.csv")
    assert cangflow(["run", "reconcile", "--feed-dir", str(folder)]) == 0  # a new feed: reconciled
    capsys.readouterr()
    assert cangflow(["run", "reconcile", "--feed-dir", str(folder)]) == 4  # the same one again
    assert "was reconciled before" in capsys.readouterr().err
    assert cangflow(["run", "reconcile", "--feed-dir", str(tmp_path / "nowhere")]) == 2
    assert (
        cangflow(["run", "reconcile", "--feed-dir", str(folder), "--max-feed-age-hours", "0"]) == 2
    )


def test_the_stale_gauge_an_alert_watches_is_pushed_set_then_cleared_by_a_new_feed(
    tasks_db, prefect_api, tmp_path, monkeypatch
):
    from tests.services import http_receiver

    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(10)
    folder = tmp_path / "gauge-feeds"
    folder.mkdir()
    with http_receiver() as gateway:
        configure(monkeypatch, pushgateway_url=gateway.url)
        assert reconcile_flow(feed_dir=str(folder))["status"] == "stale"
        write_feed(folder, [(world.warehouse, sku, "", 10)], name="erp.csv")
        assert reconcile_flow(feed_dir=str(folder))["status"] == "done"
    (_, stale_path, stale), (_, _, fresh) = gateway.requests
    assert "/job/cangflow_reconcile/" in stale_path
    assert f'cangflow_reconciliation_feed_stale{{source="{folder}"}} 1.0' in stale
    assert f'cangflow_reconciliation_feed_stale{{source="{folder}"}} 0.0' in fresh
    assert f'cangflow_reconciliation_feed_as_of_timestamp_seconds{{source="{folder}"}}' in fresh


# -- one run at a time ---------------------------------------------------------------------------


def _twice_at_once(path: str, monkeypatch, *, meet_in_compare: bool) -> tuple[list, list]:
    """Two runs of one feed started together: each one's summary or exception, and the errors
    the diff step raised. Comparing is slowed so that the two would overlap there; with
    `meet_in_compare` each run's first diff waits until the other's has started too."""
    import time

    from warehouse.reconcile import compare

    real = compare.compare
    meeting = threading.Barrier(2, timeout=60)
    met: set[int] = set()
    errors: list = []
    waiting: list[int] = []  # per diff: connections of runs of this feed, the diffing one included

    def slow(session, run_id, *args, **kwargs):
        if meet_in_compare and threading.get_ident() not in met:
            met.add(threading.get_ident())
            meeting.wait()
        time.sleep(1.5)
        waiting.append(
            session.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": f"cangflow-reconcile-run-{run_id}"},
            ).scalar()
        )
        try:
            return real(session, run_id, *args, **kwargs)
        except Exception as error:
            errors.append(error)
            raise

    monkeypatch.setattr(compare, "compare", slow)
    start = threading.Barrier(2)
    outcomes: list = [None, None]

    def run(slot: int) -> None:
        start.wait()
        try:
            outcomes[slot] = reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=100)
        except Exception as error:
            outcomes[slot] = error

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return outcomes, errors, waiting


def test_two_runs_of_one_feed_at_once_reconcile_it_once_and_neither_fails(
    tasks_db, prefect_api, tmp_path, monkeypatch
):
    world = World.create(tasks_db, bins=1)
    skus = [world.stocked_sku(10) for _ in range(3)]
    path = write_feed(tmp_path, [(world.warehouse, sku, "", 7) for sku in skus], name="twice.csv")
    outcomes, errors, waiting = _twice_at_once(path, monkeypatch, meet_in_compare=False)
    assert not [o for o in outcomes if isinstance(o, Exception)] and errors == [], (
        outcomes,
        errors,
    )
    assert waiting == [2]  # one diff, while the other run waited for the feed's lock
    assert sorted(o["status"] for o in outcomes) == [
        "done",
        "stale",
    ]  # the second waited, then found it done
    done, stale = sorted(outcomes, key=lambda o: o["status"])
    assert stale["run_id"] == done["run_id"] and "reconciled before" in stale["stale"]
    assert [world.on_hand(sku) for sku in skus] == [7, 7, 7] and done["applied"] == 3
    assert staging_of(tasks_db, done["run_id"]) == []


def test_the_control_without_the_locks_two_runs_of_one_feed_collide(
    tasks_db, prefect_api, tmp_path, monkeypatch
):
    """The negative control: with the locks taken away the two runs diff the same run at once,
    and one's diff fails on the other's rows (the failure the locks exist to prevent)."""
    from psycopg import errors as db_errors

    from warehouse.reconcile import exclusive

    monkeypatch.setattr(exclusive.Hold, "run", lambda self, run_id, run_key: None)
    monkeypatch.setattr(exclusive.Hold, "warehouses", lambda self, ids: None)
    world = World.create(tasks_db, bins=1)
    skus = [world.stocked_sku(10) for _ in range(3)]
    path = write_feed(
        tmp_path, [(world.warehouse, sku, "", 7) for sku in skus], name="twice-unlocked.csv"
    )
    _, errors, _ = _twice_at_once(path, monkeypatch, meet_in_compare=True)
    collisions = [
        e
        for e in errors
        if isinstance(getattr(e, "orig", e), (db_errors.UniqueViolation, db_errors.UndefinedTable))
    ]
    assert collisions, errors


def test_a_run_that_cannot_get_its_lock_in_time_exits_naming_the_run_that_holds_it(
    tasks_db, prefect_api, tmp_path, monkeypatch, own_database_url
):
    from warehouse.reconcile import runs
    from warehouse.reconcile.exclusive import RUN_LOCK, WAREHOUSE_LOCK, AlreadyRunning, key_of
    from warehouse.reconcile.feed import inspect

    configure(monkeypatch, reconcile_wait_seconds=1)
    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(10)
    path = write_feed(tmp_path, [(world.warehouse, sku, "", 9)], name="held.csv")
    with tasks_db.session() as s:  # the run the feed will have, started elsewhere
        from pathlib import Path

        run = runs.start(
            s,
            feed_name="held.csv",
            feed_sha256=inspect(Path(path), max_bytes=10**6).sha256,
            settings=runs.RunSettings(truth="erp", auto_approve_limit=5),
        )
        warehouse_id = s.execute(
            text("SELECT id FROM warehouse WHERE code = :w"), {"w": world.warehouse}
        ).scalar()
    dsn = own_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(
        dsn, autocommit=True, application_name=f"cangflow-reconcile-run-{run.id}"
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK, key_of(run.key)))
        with pytest.raises(AlreadyRunning, match=rf"already running \(run {run.id}\)"):
            reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=5)
        other.execute("SELECT pg_advisory_unlock_all()")
        # Another feed of the same warehouse being reconciled: this one waits for it too.
        other.execute("SELECT pg_advisory_lock(%s, %s)", (WAREHOUSE_LOCK, warehouse_id))
        with pytest.raises(
            AlreadyRunning,
            match=rf"warehouse id {warehouse_id} is already running \(run {run.id}\)",
        ):
            reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=5)
    assert world.on_hand(sku) == 10 and staging_of(tasks_db, run.id) == []
    assert (
        reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=5)["applied"] == 1
    )  # the lock is gone
    assert world.on_hand(sku) == 9


def test_a_feed_that_waited_for_its_warehouse_while_a_newer_feed_was_reconciled_is_refused(
    tasks_db, prefect_api, tmp_path, monkeypatch, own_database_url
):
    """Every other operation at the same moment: an older feed loaded and checked, then waiting
    for its warehouse, must not be applied over the newer feed reconciled meanwhile."""
    import time

    from warehouse.reconcile.exclusive import WAREHOUSE_LOCK

    configure(monkeypatch, reconcile_wait_seconds=60)
    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(10)
    older = write_feed(tmp_path, [(world.warehouse, sku, "", 8)], as_of=now(), name="older.csv")
    with tasks_db.session() as s:
        warehouse_id = s.execute(
            text("SELECT id FROM warehouse WHERE code = :w"), {"w": world.warehouse}
        ).scalar()
    outcome: list = []
    dsn = own_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(
        dsn, autocommit=True, application_name="cangflow-reconcile-run-0"
    ) as other:
        other.execute(
            "SELECT pg_advisory_lock(%s, %s)", (WAREHOUSE_LOCK, warehouse_id)
        )  # a newer feed's run
        waiting = threading.Thread(target=lambda: outcome.append(_outcome(older)))
        waiting.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # loaded and checked: it now waits for the warehouse
            with tasks_db.session() as s:
                if s.execute(
                    text(
                        "SELECT count(*) FROM reconciliation_run WHERE feed_name = 'older.csv' "
                        "AND feed_rows IS NOT NULL"
                    )
                ).scalar():
                    break
            time.sleep(0.1)
        with tasks_db.session() as s:  # the newer feed's run ends, reconciled
            s.execute(
                text("""INSERT INTO reconciliation_run (run_key, feed_name, feed_sha256, truth, settings, status,
                                  as_of, warehouse_ids) VALUES ('newer-feed', 'newer.csv', repeat('1', 64), 'erp', '{}',
                                  'done', now(), ARRAY[CAST(:w AS bigint)])"""),
                {"w": warehouse_id},
            )
        other.execute("SELECT pg_advisory_unlock_all()")
        waiting.join(timeout=120)
    [refused] = outcome
    assert isinstance(refused, FeedRejected) and "older than the last reconciled feed" in str(
        refused
    ), refused
    assert world.on_hand(sku) == 10


def _outcome(path: str):
    try:
        return reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=5)
    except Exception as error:
        return error


def test_staging_tables_a_killed_run_left_are_dropped_unless_that_run_is_being_retried(
    tasks_db, prefect_api, tmp_path, own_database_url
):
    from warehouse.reconcile import runs
    from warehouse.reconcile.exclusive import RUN_LOCK, key_of, reconciling

    with tasks_db.session() as s:
        left = runs.start(
            s, feed_name="left.csv", feed_sha256="a" * 64, settings=runs.RunSettings()
        )
        busy = runs.start(
            s, feed_name="busy.csv", feed_sha256="b" * 64, settings=runs.RunSettings()
        )
        for run, tag in ((left, "0badf00d"), (busy, "0badcafe")):
            s.execute(
                text(f"CREATE UNLOGGED TABLE {STAGING_SCHEMA}.erp_feed_{run.id}_{tag} (seq int)")
            )
    dsn = own_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute(
            "SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK, key_of(busy.key))
        )  # being retried right now
        with reconciling(tasks_db, wait_seconds=0) as hold:
            assert f"erp_feed_{left.id}_0badf00d" in hold.sweep()
    assert staging_of(tasks_db, left.id) == [] and staging_of(tasks_db, busy.id) == [
        f"erp_feed_{busy.id}_0badcafe"
    ]
    with reconciling(tasks_db, wait_seconds=0) as hold:  # that run has ended
        hold.sweep()
    assert staging_of(tasks_db, busy.id) == []


# -- the feed's shape ----------------------------------------------------------------------------


@pytest.fixture
def shaped(tasks_db, prefect_api, tmp_path, monkeypatch):
    """A warehouse of 20 SKUs of 50 each, reconciled once from a matching feed: the yardstick."""
    configure(monkeypatch, reconcile_profile_min_rows=10)
    world = World.create(tasks_db, bins=1)
    world.skus = [world.stocked_sku(50) for _ in range(20)]
    first = reconcile_flow(
        erp_file=write_feed(
            tmp_path, [(world.warehouse, sku, "", 50) for sku in world.skus], name="yardstick.csv"
        )
    )
    assert first["status"] == "done" and first["differences"] == 0
    profile = run_row(tasks_db, first["run_id"])["profile"]
    assert profile == {"rows": 20, "zero_pct": 0.0, "mean_qty": 50.0}
    return world


SHAPES = {
    # name: (quantities of the 20 SKUs (None: row left out), words the refusal must hold)
    "cut short": (
        [50] * 6 + [None] * 14,
        "fewer than 10 rows, far fewer than the 20 of the previous feed",
    ),
    "all zeros": ([0] * 20, "of the quantities are zero"),
    "a unit changed": ([600] * 20, "the mean quantity left 25.00..100.00"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_feed_whose_shape_broke_is_refused_until_the_operator_confirms_it(
    shape, shaped, tasks_db, tmp_path
):
    world = shaped
    quantities, why = SHAPES[shape]
    rows = [
        (world.warehouse, sku, "", qty)
        for sku, qty in zip(world.skus, quantities, strict=True)
        if qty is not None
    ]
    path = write_feed(tmp_path, rows, name=f"{shape.replace(' ', '-')}.csv")
    with pytest.raises(FeedRejected) as refused:
        reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=10**6)
    assert why in str(refused.value) and "--confirm-feed-shape" in str(refused.value)
    assert [world.on_hand(sku) for sku in world.skus] == [50] * 20
    quarantined = sorted(world_quarantine().glob(f"*{shape.replace(' ', '-')}.csv.report.txt"))
    assert quarantined and why in quarantined[-1].read_text()
    confirmed = reconcile_flow(
        erp_file=path, truth="erp", auto_approve_limit=10**6, confirm_feed_shape=True
    )
    assert confirmed["status"] == "done"
    if shape == "a unit changed":  # confirming the shape is not approving a run over the brake
        assert (
            confirmed["held"] == 20 and "units, 1100.0% of the 1,000 in stock" in confirmed["brake"]
        )
        assert cangflow(["adjustments", "approve", "--run", str(confirmed["run_id"])]) == 0
    expected = [
        qty if qty is not None else 50 for qty in quantities
    ]  # a feed that is not declared full zeroes nothing by omission
    assert [world.on_hand(sku) for sku in world.skus] == expected
    # The confirmed feed is the next night's yardstick: the same shape again passes.
    again = write_feed(tmp_path, rows, name=f"{shape.replace(' ', '-')}-next.csv")
    assert reconcile_flow(erp_file=again, truth="erp", auto_approve_limit=10**6)["status"] == "done"


def test_the_control_a_feed_of_the_usual_shape_with_a_few_differences_passes(
    shaped, tasks_db, tmp_path
):
    world = shaped
    quantities = [50] * 17 + [0, 45, 60]  # one SKU sold out, two counted off: a normal night
    rows = [
        (world.warehouse, sku, "", qty) for sku, qty in zip(world.skus, quantities, strict=True)
    ]
    summary = reconcile_flow(
        erp_file=write_feed(tmp_path, rows, name="usual.csv"), truth="erp", auto_approve_limit=10**6
    )
    assert summary["status"] == "done" and summary["applied"] == 3
    assert [world.on_hand(sku) for sku in world.skus] == quantities


def world_quarantine():
    from warehouse.settings import get_settings

    return get_settings().quarantine_path
