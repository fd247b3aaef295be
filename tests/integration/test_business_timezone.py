"""The business time zone (CANGFLOW_BUSINESS_TIMEZONE) sets every day and month boundary of the
stock history: a snapshot is the closing stock at local midnight, `on_hand(as_of=)` agrees with a
hand tally at local midnights, a ledger partition holds a local month, the retired-history
trigger and the scan for backdated movements use local days, and a DST change day is 23 or 25
hours long. Each zone gets a database of its own (migrated, and so adopting the zone, with the
setting in force), Asia/Shanghai east of UTC, America/Los_Angeles west of it with DST, and a UTC
database as the control: the same instants land on other days or months there.

Changing the zone is adopted by a database without history and refused, with the reason, by
one with history."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy import text

import warehouse
from tests.builders import World
from tests.conftest import _database, _migrated
from tests.roles import owner_session
from warehouse import snapshots, stock
from warehouse.db import schema
from warehouse.errors import BusinessZoneChanged, InvalidArgument
from warehouse.history import calendar, partitions
from warehouse.history import zone as business_zone
from warehouse.settings import get_settings

pytestmark = pytest.mark.integration

EAST, WEST = "Asia/Shanghai", "America/Los_Angeles"
ZONES = (EAST, WEST)
MICROSECOND = timedelta(microseconds=1)


@contextmanager
def in_zone(zone: str):
    """CANGFLOW_BUSINESS_TIMEZONE=zone for the block."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CANGFLOW_BUSINESS_TIMEZONE", zone)
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()


def local(zone: str, day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone))


def new_database_url(database_url: str) -> str:
    return (
        f"{database_url.rsplit('/', 1)[0]}/{database_url.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:6]}"
    )


# Months whose ledger partitions every zone's database has (the migration premakes only the
# months around today): the partition tests look at their boundary.
JUNE, JULY = date(2026, 6, 1), date(2026, 7, 1)


@pytest.fixture(scope="module")
def zone_db(database_url):
    """zone_db(zone): a database migrated with CANGFLOW_BUSINESS_TIMEZONE=zone, one per zone."""
    made = {}
    with ExitStack() as stack:

        def get(zone: str):
            if zone not in made:
                url = new_database_url(database_url)
                stack.enter_context(_database(url.rsplit("/", 1)[1]))
                with in_zone(zone):
                    db = _migrated(url)
                    stack.callback(db.dispose)
                    with owner_session(db) as s:
                        partitions.ensure_month(s, "stock_movement", JUNE)
                        partitions.ensure_month(s, "stock_movement", JULY)
                made[zone] = db
            return made[zone]

        yield get


@pytest.fixture
def zoned(zone_db):
    """zoned(zone): the zone's database and World, with the setting in force for the test."""
    with ExitStack() as stack:

        def enter(zone: str):
            stack.enter_context(in_zone(zone))
            db = zone_db(zone)
            return db, World.create(db, bins=1)

        yield enter


def receive_at(world: World, sku: str, at: datetime, qty: int) -> None:
    with world.db.session() as s:
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=qty,
            location=world.locations[0],
            occurred_at=at,
        )


def build(db, *days: date) -> None:
    for day in days:
        with db.session() as s:
            snapshots.build_checked_day(s, day)


_SNAPSHOT_OF = text("""
SELECT (SELECT count(*) FROM snapshot_day WHERE snapshot_date = :day),
       (SELECT coalesce(sum(s.on_hand), 0) FROM stock_snapshot s
        WHERE s.snapshot_date = :day AND s.sku_id = (SELECT id FROM sku WHERE code = :sku))
""")


def snapshot_of(db, sku: str, day: date) -> int:
    with db.session() as s:
        built, on_hand = s.execute(_SNAPSHOT_OF, {"day": day, "sku": sku}).one()
    assert built == 1, f"no snapshot of {day}"
    return int(on_hand)


def on_hand_as_of(world: World, sku: str, at: datetime) -> int:
    with world.db.session() as s:
        return stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=at)


def partitions_of(db, sku: str) -> list[str]:
    """The partition each of the SKU's movements is stored in, in occurred_at order."""
    with db.session() as s:
        return list(
            s.execute(
                text(
                    "SELECT m.tableoid::regclass::text FROM stock_movement m "
                    "WHERE m.sku_id = (SELECT id FROM sku WHERE code = :sku) ORDER BY m.occurred_at"
                ),
                {"sku": sku},
            ).scalars()
        )


# --- one definition of a day's first instant, in Python and in SQL ------------------------

DAY_START_ZONES = (
    "UTC",
    EAST,
    WEST,
    "Asia/Kolkata",
    "America/St_Johns",
    "Europe/London",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "America/Havana",
)


def test_the_sql_day_start_is_the_calendar_day_start_in_every_zone_and_every_day(db):
    """cangflow_day_start (the end of an as-of read's base day) against calendar.day_start, on
    every day of 2017-2027, in zones with DST at 02:00, at midnight (Sao Paulo skipped midnight
    until 2019; Havana has midnight twice each autumn) and with a 30-minute shift (Lord Howe)."""
    query = text(
        "SELECT CAST(d AS date), cangflow_day_start(CAST(d AS date), :zone), "
        "CAST(d AS timestamp) AT TIME ZONE :zone "
        "FROM generate_series(date '2017-01-01', date '2027-12-31', interval '1 day') AS d"
    )
    plain_differs = {}
    for zone in DAY_START_ZONES:
        with in_zone(zone):
            with db.engine.connect() as connection:
                rows = connection.execute(query, {"zone": zone}).all()
            assert len(rows) == 4017
            wrong = [(day, start) for day, start, _ in rows if start != calendar.day_start(day)]
            assert wrong == [], zone
            plain_differs[zone] = [
                day for day, _, plain in rows if plain != calendar.day_start(day)
            ]
    # The control: PostgreSQL's own reading of local midnight is the later of the two in
    # Havana's autumn, an hour after the day began; elsewhere it is right.
    assert date(2026, 11, 1) in plain_differs["America/Havana"]
    assert all(not days for zone, days in plain_differs.items() if zone != "America/Havana")


def test_the_sql_day_start_is_inlined_by_the_planner_and_null_in_gives_null_out(db):
    """Migration 0015: not inlined, the function's body was planned again on every as-of read."""
    with db.engine.connect() as connection:
        plan = connection.execute(
            text(
                "EXPLAIN VERBOSE SELECT cangflow_day_start(CAST(d AS date) + 1, 'America/New_York') "
                "FROM generate_series(date '2026-01-01', date '2026-01-02', interval '1 day') AS d"
            )
        ).scalars()
        assert "cangflow_day_start" not in "\n".join(plan)
        assert connection.execute(
            text("SELECT cangflow_day_start(NULL, 'UTC'), cangflow_day_start(current_date, NULL)")
        ).one() == (None, None)


# --- snapshots: the closing stock at local midnight ---------------------------------------


@pytest.mark.parametrize("zone", ZONES)
def test_a_snapshot_holds_the_movements_of_the_local_day(zoned, zone_db, zone):
    day = date(2026, 6, 10)
    db, world = zoned(zone)
    sku = world.add_sku()
    late, early_next = local(zone, day, 23, 30), local(zone, day + timedelta(days=1), 0, 30)
    receive_at(world, sku, late, 1)
    receive_at(world, sku, early_next, 10)
    build(db, day, day + timedelta(days=1))
    assert snapshot_of(db, sku, day) == 1  # 23:30 on the day is in, 00:30 the day after is not
    assert snapshot_of(db, sku, day + timedelta(days=1)) == 11

    with ExitStack() as control:  # the same instants in a UTC warehouse
        control.enter_context(in_zone("UTC"))
        utc_db = zone_db("UTC")
        utc_world = World.create(utc_db, bins=1)
        utc_sku = utc_world.add_sku()
        receive_at(utc_world, utc_sku, late, 1)
        receive_at(utc_world, utc_sku, early_next, 10)
        build(utc_db, day)
        # East of UTC both are still the 10th in UTC; west of it both are the 11th already.
        assert snapshot_of(utc_db, utc_sku, day) == (11 if zone == EAST else 0)


@pytest.mark.parametrize("zone", ZONES)
def test_on_hand_as_of_local_midnights_agrees_with_a_hand_tally(zoned, zone):
    """Movements around the local midnights of a month end, the snapshots of the two days
    before it built; reads at and around each local midnight, with the base snapshot found, a
    day behind, and a month behind (the read starts again from the base's month)."""
    db, world = zoned(zone)
    sku = world.add_sku()
    days = [date(2026, 6, 28) + timedelta(days=i) for i in range(5)]  # 06-28 .. 07-02
    moves = []
    for index, day in enumerate(days):
        for hour, minute in ((0, 30), (3, 0), (12, 0), (23, 30)):
            at, qty = local(zone, day, hour, minute), (index + 1) * 100 + hour
            receive_at(world, sku, at, qty)
            moves.append((at, qty))
    build(db, date(2026, 6, 28), date(2026, 6, 29))  # 06-30 and later are not built

    def tally(at: datetime) -> int:
        return sum(qty for when, qty in moves if when <= at)

    checked = 0
    for day in [*days, days[-1] + timedelta(days=1)]:
        midnight = calendar.day_start(day)
        assert midnight == local(zone, day, 0, 0)
        for at in (
            midnight - MICROSECOND,
            midnight,
            midnight + timedelta(minutes=30),
            midnight + timedelta(hours=8),
            midnight + timedelta(hours=16, minutes=30),
        ):
            assert on_hand_as_of(world, sku, at) == tally(at), (zone, at.astimezone(ZoneInfo(zone)))
            checked += 1
    assert checked == 30
    # Not vacuous: a UTC midnight is no business midnight here, and the tally changes across it.
    utc_midnight = datetime(2026, 6, 30, tzinfo=UTC)
    assert calendar.day_start(date(2026, 6, 30)) != utc_midnight
    assert tally(utc_midnight) != tally(calendar.day_start(date(2026, 6, 30)))
    assert on_hand_as_of(world, sku, utc_midnight) == tally(utc_midnight)


# --- months: the ledger partitions, the default partition, the retired-history trigger -----


@pytest.mark.parametrize("zone", ZONES)
def test_a_ledger_partition_holds_exactly_the_local_month(zoned, zone_db, zone):
    db, world = zoned(zone)
    sku = world.add_sku()
    last_of_june, first_of_july = local(zone, date(2026, 6, 30), 23, 30), local(zone, JULY, 0, 30)
    receive_at(world, sku, last_of_june, 1)
    receive_at(world, sku, first_of_july, 1)
    assert partitions_of(db, sku) == ["stock_movement_p2026_06", "stock_movement_p2026_07"]
    assert partitions.bounds("stock_movement", JULY) == (
        local(zone, JULY, 0),
        local(zone, date(2026, 8, 1), 0),
    )

    with in_zone("UTC"):  # the control: the same instants in a UTC warehouse
        utc_world = World.create(zone_db("UTC"), bins=1)
        utc_sku = utc_world.add_sku()
        receive_at(utc_world, utc_sku, last_of_june, 1)
        receive_at(utc_world, utc_sku, first_of_july, 1)
        both = "stock_movement_p2026_06" if zone == EAST else "stock_movement_p2026_07"
        assert partitions_of(utc_world.db, utc_sku) == [both, both]


@pytest.mark.parametrize("zone", ZONES)
def test_rows_in_the_default_partition_belong_to_their_local_month(zoned, zone_db, zone):
    """April and May 2026 have no partitions: the rows wait in the default partition, are
    counted in their local month, and move into it when its partition is made."""
    db, world = zoned(zone)
    sku = world.add_sku()
    april, may = date(2026, 4, 1), date(2026, 5, 1)
    receive_at(world, sku, local(zone, date(2026, 4, 30), 23, 30), 1)  # UTC: May 1 in Los Angeles
    receive_at(world, sku, local(zone, may, 0, 30), 1)  # UTC: April 30 in Shanghai
    with db.session() as s:
        in_default = partitions.rows_in_default(s, "stock_movement")
    assert (in_default.get(april), in_default.get(may)) == (1, 1)
    for month in (april, may):
        with owner_session(db) as s:
            assert partitions.ensure_month(s, "stock_movement", month).rows_moved == 1
    assert partitions_of(db, sku) == ["stock_movement_p2026_04", "stock_movement_p2026_05"]

    with in_zone("UTC"):  # the control: in a UTC warehouse both fall in one month
        utc_db = zone_db("UTC")
        utc_world = World.create(utc_db, bins=1)
        utc_sku = utc_world.add_sku()
        receive_at(utc_world, utc_sku, local(zone, date(2026, 4, 30), 23, 30), 1)
        receive_at(utc_world, utc_sku, local(zone, may, 0, 30), 1)
        with utc_db.session() as s:
            counted = partitions.rows_in_default(s, "stock_movement")
        assert counted.get(may if zone == WEST else april) == 2


_INSERT_INTO_DEFAULT = """
INSERT INTO stock_movement_default (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, sku_id, qty)
SELECT %(at)s, 'adjustment', 0, b.id, b.warehouse_id, b.location_id, b.sku_id, 1
FROM stock_balance b WHERE b.sku_id = (SELECT id FROM sku WHERE code = %(sku)s)
"""


def retired_history_verdicts(db, sku: str, instants: list[datetime]) -> list[str]:
    """With May 2025 retired (in a transaction rolled back after), what the trigger says to a
    row at each instant: 'accepted', or the SQLSTATE and month of its refusal."""
    dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    verdicts = []
    with psycopg.connect(dsn) as connection, connection.transaction():
        connection.execute(
            "INSERT INTO history_month (month, state) VALUES ('2025-05-01', 'archived')"
        )
        for at in instants:
            try:
                with connection.transaction():
                    connection.execute(_INSERT_INTO_DEFAULT, {"at": at, "sku": sku})
                verdicts.append("accepted")
            except psycopg.Error as error:
                verdicts.append(f"{error.sqlstate} {error.diag.message_detail}")
        raise psycopg.Rollback()  # leaves nothing retired, no row behind
    return verdicts


@pytest.mark.parametrize("zone", ZONES)
def test_the_retired_history_trigger_cuts_months_at_local_midnight(zoned, zone_db, zone):
    db, world = zoned(zone)
    sku = world.stocked_sku(5)
    instants = [local(zone, date(2025, 5, 31), 23, 30), local(zone, date(2025, 6, 1), 0, 30)]
    assert retired_history_verdicts(db, sku, instants) == ["CGH02 2025-05", "accepted"]
    with in_zone("UTC"):  # the control: a UTC warehouse cuts the same instants elsewhere
        utc_world = World.create(zone_db("UTC"), bins=1)
        utc_sku = utc_world.stocked_sku(5)
        expected = ["CGH02 2025-05"] * 2 if zone == EAST else ["accepted"] * 2
        assert retired_history_verdicts(utc_world.db, utc_sku, instants) == expected


# --- the scan for backdated movements ----------------------------------------------------


@pytest.mark.parametrize(
    "zone, hour, local_day",
    [
        (EAST, (0, 30), date(2026, 8, 11)),  # UTC: the 10th
        (WEST, (23, 30), date(2026, 8, 10)),  # UTC: the 11th
    ],
)
def test_a_backdated_movement_marks_its_local_day_dirty(zoned, zone_db, zone, hour, local_day):
    days = [date(2026, 8, 9), date(2026, 8, 10), date(2026, 8, 11), date(2026, 8, 12)]
    at = local(zone, local_day, *hour)

    def first_marked(db, world) -> date:
        sku = world.stocked_sku(1)
        with db.session() as s:
            snapshots.mark_backdated(s)  # what other tests left behind is marked first
        build(db, *days)
        receive_at(world, sku, at, 1)  # recorded after the days were built
        with db.session() as s:
            marked = snapshots.mark_backdated(s)
        assert marked, "the backdated movement marked nothing"
        return min(marked)

    db, world = zoned(zone)
    assert first_marked(db, world) == local_day
    with in_zone("UTC"):  # the control: in UTC the instant is on the other day
        utc_db = zone_db("UTC")
        assert (
            first_marked(utc_db, World.create(utc_db, bins=1))
            == at.astimezone(UTC).date()
            != local_day
        )


# --- DST change days --------------------------------------------------------------------


@pytest.mark.parametrize("day, hours", [(date(2026, 3, 8), 23), (date(2026, 11, 1), 25)])
def test_a_dst_change_day_holds_exactly_the_movements_of_the_local_day(zoned, day, hours):
    db, world = zoned(WEST)
    sku = world.add_sku()
    before, first, last, after = (
        local(WEST, day - timedelta(days=1), 23, 30),
        local(WEST, day, 0, 30),
        local(WEST, day, 23, 30),
        local(WEST, day + timedelta(days=1), 0, 30),
    )
    for at, qty in ((before, 1), (first, 10), (last, 100), (after, 1000)):
        receive_at(world, sku, at, qty)
    build(db, day - timedelta(days=1), day, day + timedelta(days=1))
    assert snapshot_of(db, sku, day - timedelta(days=1)) == 1
    assert snapshot_of(db, sku, day) == 111
    assert snapshot_of(db, sku, day + timedelta(days=1)) == 1111
    start, end = calendar.day_start(day), calendar.day_end(day)
    assert end - start == timedelta(hours=hours)
    for at, expected in (
        (start - MICROSECOND, 1),
        (start, 1),
        (first, 11),
        (last - MICROSECOND, 11),
        (last, 111),
        (end - MICROSECOND, 111),
        (end, 111),
        (after, 1111),
    ):
        assert on_hand_as_of(world, sku, at) == expected, at.astimezone(ZoneInfo(WEST))
    # The control: a day of 24 hours from local midnight would cut the day wrongly, taking in
    # 00:30 of the next day (23-hour day) or leaving out 23:30 of this one (25-hour day).
    wrong_end = start + timedelta(hours=24)
    assert (after < wrong_end) if hours == 23 else (last >= wrong_end)
    if day.month == 11:  # October 31 23:30 is October's, though November 1 in UTC
        assert partitions_of(db, sku)[:2] == ["stock_movement_default", "stock_movement_p2026_11"]


# --- changing the zone --------------------------------------------------------------------


def _stored(db) -> str:
    with db.engine.connect() as connection:
        return connection.execute(text("SELECT zone FROM business_calendar")).scalar_one()


def _bound_of(db, month: date) -> str:
    with db.engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = :name"
            ),
            {"name": partitions.partition_name("stock_movement", month)},
        ).scalar_one()


@pytest.fixture
def fresh_url(database_url):
    url = new_database_url(database_url)
    with _database(url.rsplit("/", 1)[1]):
        yield url


def test_an_empty_database_adopts_the_zone_and_remakes_its_ledger_partitions(fresh_url):
    with in_zone("UTC"):
        db = _migrated(fresh_url)
    try:
        month = partitions.month_start(calendar.today())
        assert _stored(db) == "UTC"
        assert "'2026-12-01 00:00:00+00'" in _bound_of(
            db, date(2026, 12, 1)
        )  # the control: UTC months
        with in_zone(EAST):
            with pytest.raises(InvalidArgument, match="only its owner role may"):
                with db.session():  # the app role: adopting remakes partitions, which it may not
                    pass
            assert _stored(db) == "UTC"
            with owner_session(
                db
            ) as s:  # the owner's first session adopts the setting: there is no history
                assert business_zone.stored_zone(s) == EAST
            assert _stored(db) == EAST
            assert "'2026-11-30 16:00:00+00'" in _bound_of(db, date(2026, 12, 1))
            lower, _upper = partitions.bounds("stock_movement", month)
            assert f"'{lower:%Y-%m-%d %H:%M:%S}+00'" in _bound_of(db, month)
        with in_zone(WEST):  # still empty: adopted again, by a new process this time
            other = warehouse.connect(fresh_url, pool_size=1, role="owner")
            try:
                assert other.check_business_zone() == WEST
            finally:
                other.dispose()
            assert _stored(db) == WEST
            assert "'2026-12-01 08:00:00+00'" in _bound_of(db, date(2026, 12, 1))
    finally:
        db.dispose()


@pytest.mark.parametrize("history", ["movement", "snapshot"])
def test_a_database_with_history_refuses_another_zone_with_the_reason(fresh_url, history):
    with in_zone(EAST):
        db = _migrated(fresh_url)
        world = World.create(db, bins=1)
        if history == "movement":
            world.stocked_sku(5)
        else:
            build(db, date(2026, 6, 1))  # a snapshot day (of an empty ledger) is history too
        bound = _bound_of(db, date(2026, 12, 1))
    try:
        with in_zone(WEST):
            other = warehouse.connect(fresh_url, pool_size=1)
            try:
                with pytest.raises(BusinessZoneChanged) as refused, other.session():
                    pass
                with pytest.raises(BusinessZoneChanged):
                    with other.session():  # every time, not only the first
                        pass
                with pytest.raises(BusinessZoneChanged):
                    schema.upgrade(other)
            finally:
                other.dispose()
            with pytest.raises(BusinessZoneChanged):  # a process that had agreed before
                with db.session():
                    pass
        message = str(refused.value)
        assert EAST in message and WEST in message
        assert (
            f"CANGFLOW_BUSINESS_TIMEZONE={EAST}" in message
            and "refused" in message
            and "new, empty database" in message
        )
        assert _stored(db) == EAST and _bound_of(db, date(2026, 12, 1)) == bound  # nothing changed
        with in_zone(EAST):  # the zone of its history is accepted again
            with db.session() as s:
                assert business_zone.has_history(s)

        # The command line says the same, on stderr, with a failing exit status.
        env = {**os.environ, "CANGFLOW_DATABASE_URL": fresh_url, "CANGFLOW_BUSINESS_TIMEZONE": WEST}
        result = subprocess.run(
            [sys.executable, "-m", "flows.cli", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert EAST in result.stderr and WEST in result.stderr and "refused" in result.stderr
    finally:
        db.dispose()
