"""Snapshots against the ledger: the chain holds, reads as of any moment equal a direct sum over
the ledger (before and after backdated movements are rebuilt), only dirty days are rebuilt,
a tampered snapshot is caught by key, and concurrent builds of one date leave one set of rows.

These tests run on a database of their own: snapshots cover every warehouse in a database."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from tests.builders import World
from tests.integration.helpers import SNAPSHOTS_AGAINST_LEDGER
from warehouse import snapshots, stock
from warehouse.errors import InsufficientStock
from warehouse.history.calendar import day_end, today

pytestmark = pytest.mark.integration

TODAY = today()
FIRST_DAY = TODAY - timedelta(days=60)

_LEDGER_AS_OF = text("""
SELECT coalesce(sum(m.qty), 0) FROM stock_movement m
JOIN warehouse w ON w.id = m.warehouse_id JOIN sku s ON s.id = m.sku_id
WHERE w.code = :warehouse AND s.code = :sku AND m.occurred_at <= :as_of
""")


def moment(day, rng: random.Random) -> datetime:
    return datetime.combine(day, time(rng.randrange(24), rng.randrange(60)), tzinfo=UTC)


def run_snapshots(db) -> snapshots.SnapshotPlan:
    """What the snapshot flow does, without Prefect: plan, then build and check day by day."""
    with db.session() as session:
        plan = snapshots.plan_run(session)
    for day in plan.days:
        with db.session() as session:
            snapshots.build_checked_day(session, day, force=day in plan.dirty)
    with db.session() as session:
        latest = snapshots.verify_latest(session)
    assert latest is None or latest.ok, str(latest)
    return plan


def ledger_as_of(db, world, sku, as_of) -> int:
    with db.session() as session:
        return session.execute(
            _LEDGER_AS_OF, {"warehouse": world.warehouse, "sku": sku, "as_of": as_of}
        ).scalar_one()


def random_operations(
    world: World, rng: random.Random, skus: list[str], days: list, count: int
) -> None:
    """Receipts, deductions, reservations, releases, transfers and adjustments dated on `days`."""
    for _ in range(count):
        sku, when = rng.choice(skus), moment(rng.choice(days), rng)
        where = {"warehouse": world.warehouse, "sku": sku, "occurred_at": when}
        kind = rng.choice(
            ["receive", "receive", "deduct", "reserve", "release", "transfer", "adjust"]
        )
        try:
            with world.db.session() as s:
                if kind == "receive":
                    stock.receive(
                        s, **where, qty=rng.randint(1, 20), location=rng.choice(world.locations)
                    )
                elif kind == "deduct":
                    stock.deduct(s, **where, qty=rng.randint(1, 5))
                elif kind == "reserve":
                    stock.reserve(s, **where, qty=rng.randint(1, 3))
                elif kind == "release":
                    stock.release(s, **where, qty=1)
                elif kind == "transfer":
                    source, target = rng.sample(world.locations, 2)
                    stock.transfer(s, **where, qty=1, location=source, to_location=target)
                else:
                    stock.adjust(
                        s,
                        **where,
                        qty=rng.choice([-1, 1]),
                        location=rng.choice(world.locations),
                        reason="test",
                    )
        except InsufficientStock:
            pass  # refused as it should be; nothing written


@pytest.fixture(scope="module")
def history(own_db):
    """60 days of operations on 6 SKUs, snapshots built, then more operations including
    backdated ones into the snapshotted past (not yet rebuilt)."""
    rng = random.Random(20261127)
    world = World.create(own_db, bins=3)
    skus = [world.add_sku() for _ in range(6)]
    early = [FIRST_DAY + timedelta(days=i) for i in range(30)]
    late = [FIRST_DAY + timedelta(days=i) for i in range(30, 60)]
    random_operations(world, rng, skus, early, 150)
    first_plan = run_snapshots(own_db)
    random_operations(world, rng, skus, late, 100)
    random_operations(world, rng, skus, early, 40)  # backdated: dated in the snapshotted past
    return world, skus, rng, first_plan


def test_first_run_builds_from_the_first_movement_up_to_yesterday(history):
    _, _, _, plan = history
    assert plan.days[0] >= FIRST_DAY and plan.days[-1] == TODAY - timedelta(days=1)
    assert plan.dirty == () and len(plan.catch_up) == len(plan.days)


def test_as_of_reads_are_exact_even_before_backdated_movements_are_rebuilt(own_db, history):
    world, skus, rng, _ = history
    for _ in range(60):
        sku, at = rng.choice(skus), moment(FIRST_DAY + timedelta(days=rng.randrange(61)), rng)
        with own_db.session() as s:
            assert stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=at) == ledger_as_of(
                own_db, world, sku, at
            )


def test_naive_snapshot_read_misses_backdated_movements_the_real_read_counts(own_db, history):
    """Negative control: the latest snapshot plus later-dated movements alone, without the
    movements recorded after the snapshot was built, is wrong for some key."""
    world, skus, _, _ = history
    naive = text("""
        SELECT (SELECT coalesce(sum(s.on_hand), 0) FROM stock_snapshot s JOIN sku ON sku.id = s.sku_id
                WHERE s.snapshot_date = :day AND sku.code = :sku)
             + (SELECT coalesce(sum(m.qty), 0) FROM stock_movement m JOIN sku ON sku.id = m.sku_id
                WHERE sku.code = :sku AND m.occurred_at >= :day_end)
    """)
    with own_db.session() as s:
        latest = s.execute(text("SELECT max(snapshot_date) FROM snapshot_day")).scalar()
        wrong = [
            sku
            for sku in skus
            if s.execute(naive, {"day": latest, "day_end": day_end(latest), "sku": sku}).scalar()
            != stock.on_hand(s, warehouse=world.warehouse, sku=sku)
        ]
    assert wrong, "the backdated movements should make the naive read wrong"


def test_rerun_rebuilds_only_dirty_days_and_the_chain_then_matches_the_ledger(own_db, history):
    world, skus, rng, _ = history
    with own_db.session() as s:
        built_before = dict(
            s.execute(text("SELECT snapshot_date, built_at FROM snapshot_day")).all()
        )
    plan = run_snapshots(own_db)
    assert plan.dirty and plan.catch_up == ()
    first_dirty = plan.dirty[0]
    assert list(plan.dirty) == [d for d in sorted(built_before) if d >= first_dirty]
    with own_db.session() as s:
        built_after = dict(
            s.execute(text("SELECT snapshot_date, built_at FROM snapshot_day")).all()
        )
        assert s.execute(SNAPSHOTS_AGAINST_LEDGER).scalar() == 0
        assert s.execute(text("SELECT count(*) FROM snapshot_dirty")).scalar() == 0
    assert all(built_after[d] == built_before[d] for d in built_before if d < first_dirty)
    assert all(built_after[d] > built_before[d] for d in plan.dirty)
    for _ in range(40):
        sku, at = rng.choice(skus), moment(FIRST_DAY + timedelta(days=rng.randrange(61)), rng)
        with own_db.session() as s:
            assert stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=at) == ledger_as_of(
                own_db, world, sku, at
            )


def test_one_backdated_movement_marks_its_day_and_every_later_built_day_dirty(own_db, history):
    world, skus, _, _ = history
    run_snapshots(own_db)
    day = TODAY - timedelta(days=5)
    with own_db.session() as s:
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=skus[0],
            qty=3,
            location=world.locations[0],
            occurred_at=moment(day, random.Random(1)),
        )
    plan = run_snapshots(own_db)
    assert list(plan.newly_marked) == [day + timedelta(days=i) for i in range(5)]
    assert list(plan.dirty) == list(plan.newly_marked)


def test_a_tampered_snapshot_fails_its_chain_check_naming_the_key(own_db, own_admin_db, history):
    world, skus, _, _ = history
    run_snapshots(own_db)
    day = TODAY - timedelta(days=3)
    tamper = text(
        "UPDATE stock_snapshot SET on_hand = on_hand + 1 WHERE snapshot_date = :day AND sku_id = "
        "(SELECT id FROM sku WHERE code = :sku)"
    )
    with pytest.raises(ProgrammingError, match="permission denied"):  # the app role may not
        with own_db.session() as s:
            s.execute(tamper, {"day": day, "sku": skus[1]})
    with own_admin_db.session() as s:  # someone who may: the chain check is what catches it
        s.execute(tamper, {"day": day, "sku": skus[1]})
    with own_db.session() as s:
        result = snapshots.verify_day(s, day)
    assert not result.ok and result.total >= 1
    assert skus[1] in str(result) and world.warehouse in str(result)
    with own_db.session() as s:
        latest = snapshots.verify_latest(s)
    assert latest.ok  # the latest day was not touched
    with own_db.session() as s:
        snapshots.mark_dirty(s, day, "test: tampered")
    run_snapshots(own_db)
    with own_db.session() as s:
        assert snapshots.verify_day(s, day).ok


def test_a_build_that_fails_its_check_is_not_committed(own_db, history, monkeypatch):
    from warehouse.snapshots import checked, verify

    run_snapshots(own_db)
    day = TODAY - timedelta(days=2)
    with own_db.session() as s:
        before = s.execute(
            text("SELECT built_at FROM snapshot_day WHERE snapshot_date = :d"), {"d": day}
        ).scalar()
    failing = verify.CheckResult("chain check", day, (), 1)
    monkeypatch.setattr(checked, "verify_day", lambda session, d: failing)
    with pytest.raises(snapshots.SnapshotCheckFailed), own_db.session() as s:
        snapshots.build_checked_day(s, day)
    with own_db.session() as s:
        after = s.execute(
            text("SELECT built_at FROM snapshot_day WHERE snapshot_date = :d"), {"d": day}
        ).scalar()
    assert after == before


def test_rebuilding_a_day_gives_the_same_rows(own_db, history):
    run_snapshots(own_db)
    day = TODAY - timedelta(days=4)
    rows = text(
        "SELECT balance_id, on_hand, reserved FROM stock_snapshot WHERE snapshot_date = :d ORDER BY 1"
    )
    with own_db.session() as s:
        first = s.execute(rows, {"d": day}).all()
    with own_db.session() as s:
        snapshots.build_checked_day(s, day)
    with own_db.session() as s:
        assert s.execute(rows, {"d": day}).all() == first and first


def test_two_concurrent_builds_of_one_date_leave_one_set_of_rows(own_db, history):
    run_snapshots(own_db)
    day = TODAY - timedelta(days=6)
    errors, barrier = [], threading.Barrier(4)

    def build():
        try:
            barrier.wait()
            with own_db.session() as s:
                snapshots.build_checked_day(s, day)
        except Exception as error:  # any error surfaced to a user fails the test
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with own_db.session() as s:
        assert s.execute(SNAPSHOTS_AGAINST_LEDGER).scalar() == 0
        keys = s.execute(
            text(
                "SELECT count(*), count(DISTINCT balance_id) FROM stock_snapshot WHERE snapshot_date = :d"
            ),
            {"d": day},
        ).one()
    assert keys[0] == keys[1] > 0


def test_a_day_that_has_not_ended_is_refused(own_db):
    from warehouse.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="has not ended"), own_db.session() as s:
        snapshots.build_day(s, TODAY)


def test_one_day_as_of_query_reads_one_ledger_partition(own_db, history):
    world, _skus, _, _ = history
    day = TODAY - timedelta(days=1)
    with own_db.session() as s:
        plan = (
            s.execute(
                text(
                    "EXPLAIN SELECT sum(qty) FROM stock_movement m JOIN warehouse w ON w.id = m.warehouse_id "
                    "WHERE w.code = :w AND m.occurred_at >= :start AND m.occurred_at < :end"
                ),
                {
                    "w": world.warehouse,
                    "start": day_end(day) - timedelta(days=1),
                    "end": day_end(day),
                },
            )
            .scalars()
            .all()
        )
    scanned = {line.split(" on ")[1].split()[0] for line in plan if " on stock_movement" in line}
    assert len(scanned) == 1 and scanned.pop().startswith("stock_movement_p"), plan
