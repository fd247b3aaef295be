"""Partition rollover on 26 months of ledger: partitions premade, rows rescued from the default
partition, months past the grace period closed in the database itself (through the parent and
directly), HistoryClosed through the API, reopen audited and closed again after a rebuild, and
months past the retention archived. Runs the rollover's tasks (their plain functions) on a
database of its own."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import warehouse
from tests.builders import World
from tests.integration.test_snapshots import run_snapshots
from warehouse import snapshots, stock
from warehouse.errors import HistoryClosed, InvalidArgument
from warehouse.history import closing as history
from warehouse.history import partitions
from warehouse.history.calendar import today
from warehouse.history.partitions import add_months, month_label, month_start, partition_name
from warehouse.settings import get_settings

pytestmark = pytest.mark.integration

TODAY = today()
THIS_MONTH = month_start(TODAY)
MONTHS = 26
PER_MONTH = 5


def month(offset: int) -> date:
    return add_months(THIS_MONTH, offset)


def mid(month_: date) -> datetime:
    return datetime(month_.year, month_.month, 15, 12, tzinfo=UTC)


def due_to_close(month_: date) -> bool:
    return history.last_day(month_) < TODAY - timedelta(days=get_settings().history_grace_days)


def rollover(today: date = TODAY) -> dict:
    from tasks import rollover as steps

    return {
        "made": steps.premake_partitions.fn(today),
        "moved": steps.rescue_default_rows.fn(),
        "closed": steps.close_due_months.fn(today),
        "retired": steps.retire_old_partitions.fn(today),
    }


@pytest.fixture(scope="module")
def rolled(tasks_db):
    db = tasks_db
    world = World.create(db, bins=1)
    sku = world.add_sku()
    # One receipt in the middle of each of the last 26 months; the migration premade only
    # last month onward, so the older ones land in the default partition. They are written
    # under a longer retention, as if in their own time: today's 24 months would refuse the
    # two oldest (before the history floor), which the rollover below then retires.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CANGFLOW_RETENTION_MONTHS", str(MONTHS + 12))
        get_settings.cache_clear()
        for offset in range(-MONTHS, 0):
            with db.session() as s:
                stock.receive(
                    s,
                    warehouse=world.warehouse,
                    sku=sku,
                    qty=PER_MONTH,
                    location=world.locations[0],
                    occurred_at=mid(month(offset)),
                )
    get_settings.cache_clear()
    with db.session() as s:
        in_default = partitions.rows_in_default(s, "stock_movement")
    from tasks.rollover import rescue_default_rows
    from tasks.snapshot import ensure_snapshot_partitions
    from warehouse.metrics import sinks as metrics

    with metrics.use(metrics.RecordingMetrics()) as seen:
        moved = rescue_default_rows.fn()
    left = {
        table: seen.counters.get(
            ("cangflow_partition_default_rows", (("table", table),))
        )  # None: never set
        for table in partitions.PARTITIONED_TABLES
    }
    month_ends = [history.last_day(month(offset)) for offset in range(-MONTHS, 0)]
    ensure_snapshot_partitions.fn(tuple(month_ends))
    for day in month_ends:  # the snapshots closing needs: each month's last day, verified
        with db.session() as s:
            snapshots.build_checked_day(s, day)
    result = rollover()
    url = db.url.render_as_string(hide_password=False)
    owner, admin = (
        warehouse.connect(url, role="owner", pool_size=2),
        warehouse.connect(url, role=None, pool_size=1),
    )
    yield {
        "db": db,
        "world": world,
        "sku": sku,
        "in_default": in_default,
        "moved": moved,
        "result": result,
        "left_gauge": left,
        "owner": owner,
        "admin": admin,
    }
    owner.dispose()
    admin.dispose()


def test_rows_in_the_default_partition_are_moved_into_their_months_and_reported(rolled):
    assert sum(rolled["in_default"].values()) == MONTHS - 1  # last month's partition existed
    assert sum(m.rows_moved for m in rolled["moved"]) == MONTHS - 1
    with rolled["db"].session() as s:
        assert partitions.rows_in_default(s, "stock_movement") == {}
        assert s.execute(text("SELECT count(*) FROM stock_movement_default")).scalar() == 0
    assert rolled["left_gauge"] == dict.fromkeys(
        partitions.PARTITIONED_TABLES, 0
    )  # what the alert watches


def test_partitions_exist_from_last_month_to_the_premake_horizon_for_both_tables(rolled):
    with rolled["db"].session() as s:
        for table in partitions.PARTITIONED_TABLES:
            names = partitions.existing(s, table)
            for offset in range(-1, get_settings().premake_months + 1):
                assert partition_name(table, month(offset)) in names


def test_months_past_the_grace_period_are_closed_and_newer_ones_stay_open(rolled):
    with rolled["db"].session() as s:
        closed = set(history.closed_months(s))
    kept = [month(o) for o in range(-MONTHS + 2, 1)]  # the two oldest were archived
    assert {m for m in kept if due_to_close(m)} == closed
    assert month(0) not in closed


def closed_month() -> date:
    return month(-3)


# What the app role meets on a closed month: the trigger where its privileges let the statement
# through the parent, PostgreSQL's own refusal (42501) everywhere else. The superuser meets the
# trigger every time: it is what holds against the roles that could disable it.
APP_REFUSAL = ["CGH01", "42501", "42501", "42501", "42501", "42501", "42501", "42501", "CGH01"]
_STATEMENTS = [
    (
        "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, sku_id, qty) "
        "SELECT :at, 'adjustment', 0, id, warehouse_id, location_id, sku_id, 1 FROM stock_balance LIMIT 1"
    ),
    (
        "INSERT INTO {partition} (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, sku_id, qty) "
        "SELECT :at, 'adjustment', 0, id, warehouse_id, location_id, sku_id, 1 FROM stock_balance LIMIT 1"
    ),
    "UPDATE stock_movement SET qty = qty + 1 WHERE occurred_at = :at",
    "UPDATE {partition} SET qty = qty + 1",
    "DELETE FROM stock_movement WHERE occurred_at = :at",
    "DELETE FROM {partition}",
    "TRUNCATE {partition}",
    "UPDATE {snapshot_partition} SET on_hand = on_hand + 1",
    "DELETE FROM stock_snapshot WHERE snapshot_date = :last_day",
]
_STATEMENT_IDS = [
    "insert-parent",
    "insert-partition",
    "update-parent",
    "update-partition",
    "delete-parent",
    "delete-partition",
    "truncate-partition",
    "update-snapshot",
    "delete-snapshot-parent",
]


@pytest.mark.parametrize("as_app", [False, True], ids=["superuser", "app-role"])
@pytest.mark.parametrize("statement", _STATEMENTS, ids=_STATEMENT_IDS)
def test_a_closed_month_refuses_changes_in_the_database(rolled, statement, as_app):
    closed = closed_month()
    assert due_to_close(closed), "month -3 is always past the grace period"
    sql = statement.format(
        partition=partition_name("stock_movement", closed),
        snapshot_partition=partition_name("stock_snapshot", closed),
    )
    with pytest.raises(DBAPIError) as refused:
        with rolled["db" if as_app else "admin"].session() as s:
            s.execute(text(sql), {"at": mid(closed), "last_day": history.last_day(closed)})
    expected = APP_REFUSAL[_STATEMENTS.index(statement)] if as_app else "CGH01"
    assert refused.value.orig.sqlstate == expected, str(refused.value)
    if expected == "CGH01":
        assert month_label(closed) in str(refused.value)


def test_a_stock_operation_dated_in_a_closed_month_raises_history_closed(rolled):
    closed = closed_month()
    for operation in ("receive", "deduct"):
        with pytest.raises(HistoryClosed, match=month_label(closed)):
            with rolled["db"].session() as s:
                arguments = {
                    "warehouse": rolled["world"].warehouse,
                    "sku": rolled["sku"],
                    "qty": 1,
                    "occurred_at": mid(closed),
                }
                if operation == "receive":
                    stock.receive(s, **arguments, location=rolled["world"].locations[0])
                else:
                    stock.deduct(s, **arguments)
    with rolled["db"].session() as s:  # the open present takes changes
        stock.receive(
            s,
            warehouse=rolled["world"].warehouse,
            sku=rolled["sku"],
            qty=1,
            location=rolled["world"].locations[0],
        )


def test_a_closed_month_refuses_the_direct_and_the_combined_path_too(rolled):
    """Alone, a direct pick dated in a closed month raises HistoryClosed. In a combined batch it
    fails the batch's statement; the others then run alone and apply, and it alone is refused."""
    from warehouse.stock import taking
    from warehouse.stock.combining import _Request

    world, sku = rolled["world"], rolled["sku"]
    direct = stock.DirectStock(rolled["db"])
    direct.deduct(warehouse=world.warehouse, sku=sku, qty=1)  # stock there, and ids cached
    before = world.on_hand(sku)
    closed = mid(closed_month())
    with pytest.raises(HistoryClosed, match=month_label(closed_month())):
        direct.deduct(warehouse=world.warehouse, sku=sku, qty=1, occurred_at=closed)
    combining = stock.CombiningDeductions(direct)
    batch = [
        _Request(
            taking.plan(
                "deduct",
                warehouse=world.warehouse,
                lines=[taking.one_line(sku, 1, None, None)],
                key=None,
                occurred_at=at,
                reference=None,
            )
        )
        for at in (None, closed, None)
    ]
    combining._combine(batch)
    assert [(request.change, request.error) for request in batch] == [(None, None)] * 3
    outcomes = []
    for request in batch:
        try:
            outcomes.append(direct.take(request.planned).on_hand_change)
        except HistoryClosed:
            outcomes.append("closed")
    assert outcomes == [-1, "closed", -1]
    assert world.on_hand(sku) == before - 2


def test_months_past_the_retention_are_archived_and_reads_before_them_are_refused(rolled):
    retired = {r.name for r in rolled["result"]["retired"]}
    assert retired == {
        partition_name("stock_movement", month(-26)),
        partition_name("stock_movement", month(-25)),
        partition_name("stock_snapshot", month(-26)),
    }
    with rolled["db"].session() as s:
        archived = set(
            s.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'archive'")
            ).scalars()
        )
        assert retired <= archived
        assert (
            s.execute(
                text("SELECT count(*) FROM archive." + partition_name("stock_movement", month(-26)))
            ).scalar()
            == 1
        )
        states = dict(
            s.execute(text("SELECT month, state FROM history_month WHERE state = 'archived'")).all()
        )
        assert set(states) == {month(-26), month(-25)}
        with pytest.raises(InvalidArgument, match="before the retained history"):
            stock.on_hand(
                s, warehouse=rolled["world"].warehouse, sku=rolled["sku"], as_of=mid(month(-25))
            )
        # The snapshot of the last archived month's last day still answers for what follows.
        assert (
            stock.on_hand(
                s, warehouse=rolled["world"].warehouse, sku=rolled["sku"], as_of=mid(month(-24))
            )
            == 3 * PER_MONTH
        )


RAW_ROWS_IN_RETIRED_HISTORY = {
    "ledger through the parent": (
        "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, "
        "sku_id, qty) SELECT :at, 'adjustment', 0, id, warehouse_id, location_id, sku_id, 1 FROM stock_balance LIMIT 1"
    ),
    "ledger into the default partition": (
        "INSERT INTO stock_movement_default (occurred_at, movement_type, operation_id, balance_id, warehouse_id, "
        "location_id, sku_id, qty) SELECT :at, 'adjustment', 0, id, warehouse_id, location_id, sku_id, 1 "
        "FROM stock_balance LIMIT 1"
    ),
    "a snapshot row through the parent": (
        "INSERT INTO stock_snapshot (snapshot_date, warehouse_id, sku_id, balance_id, location_id, on_hand, reserved) "
        "SELECT CAST(:at AS date) - 400, warehouse_id, sku_id, id, location_id, 1, 0 FROM stock_balance LIMIT 1"
    ),
}


@pytest.mark.parametrize("statement", list(RAW_ROWS_IN_RETIRED_HISTORY))
def test_retired_history_refuses_rows_in_the_database_itself(rolled, statement):
    """The retired months have no partition any more: their rows would land in a default
    partition, which refuses them (and the rescue step so never brings a retired month back)."""
    with pytest.raises(
        DBAPIError
    ) as refused:  # as the superuser: the trigger, not a privilege, refuses
        with rolled["admin"].session() as s:
            s.execute(text(RAW_ROWS_IN_RETIRED_HISTORY[statement]), {"at": mid(month(-25))})
    assert refused.value.orig.sqlstate == "CGH02"
    assert "is retired" in str(refused.value)


def test_a_receipt_dated_in_a_retired_month_is_refused_by_the_database_when_the_setting_lets_it_through(
    rolled,
):
    """Raise the retention after months were retired: the API's floor moves back, the database's
    does not (it follows what was retired); the caller gets HistoryClosed naming month and floor."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CANGFLOW_RETENTION_MONTHS", "60")
        get_settings.cache_clear()
        try:
            with rolled["db"].session() as s, pytest.raises(HistoryClosed) as refused:
                stock.receive(
                    s,
                    warehouse=rolled["world"].warehouse,
                    sku=rolled["sku"],
                    qty=1,
                    location=rolled["world"].locations[0],
                    occurred_at=mid(month(-25)),
                )
        finally:
            get_settings.cache_clear()
    assert refused.value.month == month_label(month(-25)) and refused.value.floor is not None


def test_after_months_are_retired_the_books_still_add_up_from_the_opening_balance(rolled):
    """Month 25: the retired months' movements are gone from the hot ledger; the snapshot of the
    newest retired month's last day carries them as the opening balance."""
    from warehouse import invariants

    with rolled["db"].session() as s:
        assert invariants.check(s) == []
        with_opening_only = s.execute(
            text("SELECT count(*) FROM stock_snapshot WHERE snapshot_date = :day"),
            {"day": history.last_day(month(-25))},
        ).scalar()
    assert with_opening_only > 0  # the opening balance exists and is used


def test_rollover_again_changes_nothing(rolled):
    again = rollover()
    assert [m for m in again["made"] if m.created] == []
    assert again["moved"] == [] and again["retired"] == []
    assert [c for c in again["closed"] if c.closed] == []


def test_two_premakes_at_once_make_each_partition_once_without_error(rolled):
    from tasks.rollover import premake_partitions

    far = add_months(THIS_MONTH, 30)  # months no run has made yet
    errors = []
    barrier = threading.Barrier(2)

    def run():
        try:
            barrier.wait()
            premake_partitions.fn(far)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with rolled["db"].session() as s:
        assert partition_name("stock_movement", far) in partitions.existing(s, "stock_movement")


def test_reopen_is_audited_takes_changes_and_the_next_rollover_closes_it_after_a_rebuild(rolled):
    db, world, sku, closed = rolled["db"], rolled["world"], rolled["sku"], closed_month()
    with pytest.raises(InvalidArgument, match="reason"), db.session() as s:
        history.reopen_month(s, closed, reason=" ")
    with rolled["owner"].session() as s:  # `cangflow history reopen` runs as the owner
        history.reopen_month(s, closed, reason="ERP correction ticket 4711")
    with db.session() as s:
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=7,
            location=world.locations[0],
            occurred_at=mid(closed),
        )
        audit = s.execute(
            text("SELECT action, reason FROM history_audit WHERE month = :m ORDER BY at"),
            {"m": closed},
        ).all()
    assert ("reopened", "ERP correction ticket 4711") in [tuple(row) for row in audit]
    with rolled["owner"].session() as s:
        with pytest.raises(history.NotClosable, match=r"dirty|recorded after"):
            history.close_month(s, closed)
    run_snapshots(db)  # what the rollover flow runs first when a month is reopened
    outcome = {c.label: c for c in rollover()["closed"]}
    assert outcome[month_label(closed)].closed, outcome
    with db.session() as s:
        assert closed in history.closed_months(s)
        assert (
            stock.on_hand(
                s, warehouse=world.warehouse, sku=sku, as_of=mid(closed) + timedelta(hours=1)
            )
            == (MONTHS - 3 + 1) * PER_MONTH + 7
        )
    with pytest.raises(HistoryClosed), db.session() as s:
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=1,
            location=world.locations[0],
            occurred_at=mid(closed),
        )


def test_history_status_shows_the_closed_months_and_the_audit_trail_as_the_reader(rolled, capsys):
    """After the reopening above: `cangflow history status` (run as the reader role) names the
    closed months and the reopening with its reason."""
    from flows.cli import main as cangflow

    assert cangflow(["history", "status"]) == 0
    shown = capsys.readouterr().out
    assert (
        shown.startswith("closed months: ") and month_label(closed_month()) in shown.splitlines()[0]
    )
    assert "reopened" in shown and "ERP correction ticket 4711" in shown


def test_a_ddl_step_gives_up_on_a_busy_table_instead_of_waiting_and_succeeds_once_it_is_free(
    rolled, monkeypatch
):
    from tasks.rollover import premake_partitions

    monkeypatch.setenv("CANGFLOW_DDL_LOCK_TIMEOUT_MS", "100")
    monkeypatch.setenv("CANGFLOW_DDL_ATTEMPTS", "2")
    get_settings.cache_clear()
    far = add_months(THIS_MONTH, 40)
    try:
        blocker = rolled["db"].engine.connect()
        blocker.execute(
            text("SELECT count(*) FROM stock_movement")
        )  # a long read holds ACCESS SHARE
        started = datetime.now(UTC)
        with pytest.raises(DBAPIError) as gave_up:
            premake_partitions.fn(far)
        assert gave_up.value.orig.sqlstate == "55P03"  # lock_not_available: lock_timeout fired
        assert datetime.now(UTC) - started < timedelta(seconds=30)
        blocker.rollback()
        blocker.close()
        made = premake_partitions.fn(far)
        assert partition_name("stock_movement", far) in [m.name for m in made if m.created]
    finally:
        get_settings.cache_clear()


def test_drop_mode_killed_after_the_detach_and_during_the_dump_is_finished_by_the_next_run(
    rolled, monkeypatch, tmp_path
):
    """Last in this module: it moves the retention floor. Each retention step of drop mode is
    resumable: a run killed after the detach, then one killed in the dump, then one that ends."""
    from tasks.rollover import retire_old_partitions
    from warehouse.errors import WarehouseError
    from warehouse.history import retention

    monkeypatch.setenv("CANGFLOW_RETENTION_MODE", "drop")
    monkeypatch.setenv("CANGFLOW_RETENTION_MONTHS", "23")
    monkeypatch.setenv("CANGFLOW_HOME", str(tmp_path))
    get_settings.cache_clear()
    ledger = partition_name("stock_movement", month(-24))
    db = rolled["db"]
    try:
        retention.detach(
            rolled["owner"],
            partitions.Partition("stock_movement", ledger, month(-24)),
            lock_timeout_ms=2000,
        )
        with db.session() as s:  # killed here: the month is detached, nothing else happened
            assert ledger in {p.name for p in retention.leftovers(s)}
        real_dump = retention.dump

        def dump_killed(*args, **kwargs):
            raise WarehouseError("pg_dump killed")

        monkeypatch.setattr(retention, "dump", dump_killed)
        with pytest.raises(WarehouseError, match="killed"):
            retire_old_partitions.fn(TODAY)
        with db.session() as s:  # killed in the dump: still a leftover, not recorded as dropped
            assert ledger in {p.name for p in retention.leftovers(s)}
            assert (
                s.execute(
                    text("SELECT state FROM history_month WHERE month = :m"), {"m": month(-24)}
                ).scalar()
                != "dropped"
            )
        monkeypatch.setattr(retention, "dump", real_dump)
        retired = retire_old_partitions.fn(TODAY)
    finally:
        get_settings.cache_clear()
    done = {r.name: r for r in retired}
    assert done[ledger].how == "dropped"
    dump = tmp_path / "archive" / f"{ledger}.dump"
    assert done[ledger].dump == str(dump) and dump.stat().st_size > 0
    listing = __import__("subprocess").run(
        ["pg_restore", "--list", str(dump)], capture_output=True, text=True
    )
    assert f"TABLE public {ledger}" in listing.stdout
    with db.session() as s:
        assert s.execute(text("SELECT to_regclass(:name)"), {"name": ledger}).scalar() is None
        assert (
            s.execute(text("SELECT to_regclass(:name)"), {"name": f"archive.{ledger}"}).scalar()
            is None
        )
        assert (
            s.execute(
                text("SELECT state FROM history_month WHERE month = :m"), {"m": month(-24)}
            ).scalar()
            == "dropped"
        )
        assert retention.leftovers(s) == []
