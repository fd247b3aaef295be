"""The books check: the first is full, later ones incremental from the last passing check (what
was recorded before it is not read again), a full one still finds an old fault, and a full check
is due again after CANGFLOW_FULL_CHECK_DAYS by the jobs' clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import text

from tests.builders import World
from warehouse import snapshots, stock
from warehouse.history.calendar import today
from warehouse.stock import books

pytestmark = pytest.mark.integration

_DROP_LAST_MESSAGE = text(
    "DELETE FROM outbox_message WHERE id = (SELECT max(id) FROM outbox_message) RETURNING operation_id"
)


def _check(db, full=None) -> books.BooksCheck:
    with db.session() as s:
        return books.check_books(s, full=full)


def _operation_without_message(world, sku) -> str:
    world.receive(sku, 1)
    with world.db.session() as s:
        return str(s.execute(_DROP_LAST_MESSAGE).scalar_one())


def test_incremental_checks_read_only_what_came_after_the_last_passing_one(own_db):
    world = World.create(own_db, bins=2)
    sku = world.add_sku()
    yesterday = datetime.combine(today() - timedelta(days=1), time(9), tzinfo=UTC)
    with own_db.session() as s:
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=5,
            location=world.locations[0],
            occurred_at=yesterday,
        )
    with own_db.session() as s:
        for day in snapshots.plan_run(s).days:
            snapshots.build_checked_day(s, day)
    first = _check(own_db)
    assert first.kind == "full" and first.ok and first.chain.days_checked >= 1, first.summary()
    old_fault = _operation_without_message(world, sku)
    found = _check(own_db)  # incremental: the fault was recorded after the last passing check
    assert found.kind == "incremental" and not found.ok
    assert any(old_fault in line for line in found.lines()), found.lines()
    # The failed check is not a start: the next incremental one still reads from the last pass.
    again = _check(own_db)
    assert again.since == found.since and not again.ok
    # A full check that passes after the fault was repaired becomes the new start...
    with own_db.session() as s:
        s.execute(
            text(
                "INSERT INTO outbox_message (topic, operation_id, payload) "
                "SELECT topic, CAST(:op AS bigint), payload FROM outbox_message LIMIT 1"
            ),
            {"op": old_fault},
        )
    assert _check(own_db, full=True).ok
    # ...so a fault recorded before it is not read by incremental checks, but a full one finds it.
    with own_db.session() as s:
        s.execute(
            text("DELETE FROM outbox_message WHERE operation_id = CAST(:op AS bigint)"),
            {"op": old_fault},
        )
    assert _check(own_db).ok  # incremental: nothing was recorded since the last pass
    full = _check(own_db, full=True)
    assert not full.ok and any(old_fault in line for line in full.lines())


def test_a_full_check_is_due_again_after_its_interval_by_the_jobs_clock(own_db, monkeypatch):
    from warehouse.settings import get_settings

    with own_db.session() as s:
        s.execute(
            text(
                "INSERT INTO books_check (kind, business_time, covered_upto, ok, summary) "
                "VALUES ('full', now(), now(), true, 'test')"
            )
        )
    with own_db.session() as s:
        assert not books.full_check_due(s)
        later = datetime.now(UTC) + timedelta(days=get_settings().full_check_days, minutes=1)
        assert books.full_check_due(s, now=later)
    monkeypatch.setenv("CANGFLOW_CLOCK", later.isoformat())
    get_settings.cache_clear()
    try:
        with own_db.session() as s:
            assert books.full_check_due(s)
    finally:
        monkeypatch.delenv("CANGFLOW_CLOCK")
        get_settings.cache_clear()
