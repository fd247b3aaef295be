"""Where history begins and in which order it closes (found by the lifecycle simulation):

- a receipt dated before the first snapshot day, in a month still open, moves the snapshots'
  first day back to its own day, so its month has the snapshot of its last day that closing
  and retention need;
- a month without a partition of its own that is older than a closed month is closed too: a
  row dated there is refused by the API and by the database (CGH03), because every later
  snapshot, the closed ones included, would have to change;
- on_hand(as_of=) before the retained ledger is refused rather than answered without the
  movements of that day.

On a database of its own, with the jobs' clock pinned (the dates are the test's own)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.builders import World
from tests.conftest import _migrated
from tests.integration.test_history import rollover
from tests.integration.test_snapshots import run_snapshots
from tests.simulation import set_clock
from warehouse import invariants, stock
from warehouse.errors import HistoryClosed, InvalidArgument
from warehouse.history.partitions import month_label
from warehouse.settings import get_settings

pytestmark = pytest.mark.integration


def at(year: int, month: int, day: int, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


@pytest.fixture(scope="module")
def pinned_db(own_database_url):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CANGFLOW_DATABASE_URL", own_database_url)
        patch.setenv("CANGFLOW_CLOCK", at(2025, 3, 5).isoformat())
        patch.setenv("CANGFLOW_RETENTION_MONTHS", "2")
        get_settings.cache_clear()
        database = _migrated(own_database_url)  # partitions from 2025-02 (last month) onward
        yield database
        database.dispose()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def early(pinned_db):
    world = World.create(pinned_db, bins=1)
    sku = world.add_sku()
    bin_ = world.locations[0]
    with pinned_db.session() as s:
        stock.receive(
            s, warehouse=world.warehouse, sku=sku, qty=5, location=bin_, occurred_at=at(2025, 3, 2)
        )
    first = run_snapshots(pinned_db)  # the snapshots begin on 2025-03-02
    with pinned_db.session() as s:  # booked late, dated before the first snapshot day
        stock.receive(
            s, warehouse=world.warehouse, sku=sku, qty=7, location=bin_, occurred_at=at(2025, 2, 20)
        )
    set_clock(at(2025, 3, 6, 2))
    second = run_snapshots(pinned_db)
    return {"db": pinned_db, "world": world, "sku": sku, "first": first, "second": second}


def _closing(db, day: date, sku: str) -> int | None:
    with db.session() as s:
        return s.execute(
            text(
                "SELECT sum(sn.on_hand) FROM stock_snapshot sn JOIN sku ON sku.id = sn.sku_id "
                "WHERE sn.snapshot_date = :day AND sku.code = :sku"
            ),
            {"day": day, "sku": sku},
        ).scalar()


def test_a_movement_before_the_first_snapshot_day_moves_the_first_day_back(early):
    assert early["first"].days[0] == date(2025, 3, 2)
    assert early["second"].days[0] == date(2025, 2, 20)
    assert _closing(early["db"], date(2025, 2, 19), early["sku"]) is None
    assert _closing(early["db"], date(2025, 2, 28), early["sku"]) == 7
    assert _closing(early["db"], date(2025, 3, 5), early["sku"]) == 12


def test_its_month_closes_and_an_unmade_older_month_then_refuses_changes(early):
    db, world, sku = early["db"], early["world"], early["sku"]
    set_clock(at(2025, 3, 9, 2))
    closed = {c.label: c for c in rollover(date(2025, 3, 9))["closed"]}
    assert closed["2025-02"].closed, closed
    # January is inside the floor (2025-01) but has no partition: it is older than a closed month.
    with pytest.raises(HistoryClosed, match="2025-01 is closed: it is older than 2025-02"):
        with db.session() as s:
            stock.receive(
                s,
                warehouse=world.warehouse,
                sku=sku,
                qty=1,
                location=world.locations[0],
                occurred_at=at(2025, 1, 20),
            )
    with pytest.raises(DBAPIError) as refused:
        with db.session() as s:
            s.execute(
                text(
                    "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, "
                    "location_id, sku_id, qty) SELECT :at, 'receipt', 0, id, warehouse_id, location_id, sku_id, 1 "
                    "FROM stock_balance WHERE sku_id = (SELECT id FROM sku WHERE code = :sku)"
                ),
                {"at": at(2025, 1, 20), "sku": sku},
            )
    assert refused.value.orig.sqlstate == "CGH03"


def test_it_retires_with_the_books_still_adding_up_and_as_of_before_the_ledger_is_refused(early):
    db, world, sku = early["db"], early["world"], early["sku"]
    set_clock(at(2025, 5, 1, 2))  # the floor is 2025-03 now: February retires
    run_snapshots(db)
    result = rollover(date(2025, 5, 1))
    assert [month_label(r.month) for r in result["retired"] if r.table == "stock_movement"] == [
        "2025-02"
    ]
    with db.session() as s:
        assert invariants.check(s) == []
        assert stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=at(2025, 3, 3)) == 12
        # The snapshot of 2025-02-24 is still kept (a month longer than the ledger), but the
        # movements of the 25th up to noon are not: no exact answer exists.
        with pytest.raises(InvalidArgument, match=r"before the retained history.*2025-03-01"):
            stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=at(2025, 2, 25))
