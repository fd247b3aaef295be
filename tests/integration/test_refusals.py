"""A refused call writes nothing, not even its idempotency key: whatever refused it and whether
or not the caller commits afterwards, the same request with the same key applies once the cause
is fixed. Hostile values are refused before the database, naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.builders import unique
from warehouse import catalog, stock
from warehouse.errors import (
    InsufficientStock,
    InvalidArgument,
    InvalidQuantity,
    UnknownItem,
    WarehouseError,
)

pytestmark = pytest.mark.integration


def key_rows(db, key: str) -> int:
    with db.session() as s:
        return s.execute(
            text("SELECT count(*) FROM idempotency_key WHERE key = :key"), {"key": key}
        ).scalar_one()


def refused_then_committed(db, call, error: type[Exception]) -> None:
    """Call inside a transaction that catches the refusal and commits anyway, as a careless caller would."""
    with db.session() as s, pytest.raises(error):
        call(s)


def test_a_receipt_into_an_unknown_bin_leaves_its_key_free_for_the_retry(world):
    sku, key, new_bin = world.add_sku(), unique("key"), unique("BIN")

    def receive(s):
        return stock.receive(
            s, warehouse=world.warehouse, sku=sku, qty=4, location=new_bin, key=key
        )

    refused_then_committed(world.db, receive, UnknownItem)
    with world.db.session() as s:
        catalog.ensure_location(s, world.warehouse, new_bin)
    with world.db.session() as s:
        change = receive(s)
    assert not change.replayed and world.on_hand(sku) == 4
    with world.db.session() as s:
        assert receive(s).replayed  # and from now on it replays
    assert world.on_hand(sku) == 4 and key_rows(world.db, key) == 1


def test_a_pick_refused_for_stock_applies_with_the_same_key_after_a_receipt(world):
    sku, key = world.stocked_sku(3), unique("key")

    def pick(s):
        return stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=5, key=key)

    refused_then_committed(world.db, pick, InsufficientStock)
    assert key_rows(world.db, key) == 0
    world.receive(sku, 10)
    with world.db.session() as s:
        assert not pick(s).replayed
    assert world.on_hand(sku) == 8


def test_an_order_with_an_unknown_sku_leaves_its_key_free(world):
    sku, key, missing = world.stocked_sku(10), unique("key"), unique("SKU")

    def order(s):
        return stock.deduct_order(
            s, warehouse=world.warehouse, lines=[(sku, 2), (missing, 1)], key=key
        )

    refused_then_committed(world.db, order, UnknownItem)
    with world.db.session() as s:
        catalog.ensure_sku(s, missing)
    world.receive(missing, 1)
    with world.db.session() as s:
        assert not order(s).replayed
    assert (world.on_hand(sku), world.on_hand(missing)) == (8, 0)


def test_a_key_left_without_a_result_is_never_replayed(world):
    """A claim committed by a caller that swallowed a driver error (written by hand here)."""
    sku, key = world.stocked_sku(5), unique("key")
    with world.db.session() as s:
        s.execute(
            text(
                "INSERT INTO idempotency_key (key, operation, request_hash) VALUES (:k, 'deduct', 'x')"
            ),
            {"k": key},
        )
    with world.db.session() as s:
        change = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2, key=key)
    assert not change.replayed and world.on_hand(sku) == 3


HOSTILE = {
    "NUL in reason": {"reason": "broken\x00pallet"},
    "NUL in reference": {"reference": "po\x00-1"},
    "NUL in key": {"key": "k\x00ey"},
    "lone surrogate in key": {"key": "k\udc80"},
    "lone surrogate in location": {"location": "B\ud800"},
    "key too long": {"key": "k" * 201},
    "reason too long": {"reason": "r" * 501},
    "year 9999": {"occurred_at": datetime(9999, 12, 31, 23, 0, tzinfo=UTC)},
    "a week ahead": {"occurred_at": datetime.now(UTC) + timedelta(days=7)},
    "quantity past bigint": {"qty": 2**63},
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_value_is_refused_before_the_database_naming_its_field(world, case):
    sku = world.stocked_sku(5)
    arguments = {
        "warehouse": world.warehouse,
        "sku": sku,
        "qty": 1,
        "location": world.locations[0],
        "reason": "count fix",
        "key": unique("key"),
    }
    arguments.update(HOSTILE[case])
    field = next(iter(HOSTILE[case]))
    with world.db.session() as s, pytest.raises(WarehouseError) as refused:
        stock.adjust(s, **arguments)
    assert isinstance(refused.value, (InvalidArgument, InvalidQuantity))
    assert f"{field}=" in str(refused.value)
    assert world.on_hand(sku) == 5
    if field != "key":
        assert key_rows(world.db, arguments["key"]) == 0


def test_expired_keys_are_pruned_in_batches_and_a_repeat_after_expiry_applies_again(world):
    from warehouse.stock import idempotency

    sku = world.stocked_sku(10)
    keys = [unique("old-key") for _ in range(5)]
    for key in keys:
        with world.db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1, key=key)
    now = datetime.now(UTC)
    with world.db.session() as s:
        s.execute(
            text(
                "UPDATE idempotency_key SET created_at = :at WHERE key = ANY (CAST(:keys AS text[]))"
            ),
            {"at": now - timedelta(days=31), "keys": keys},
        )
    batches = []
    while True:
        with world.db.session() as s:
            batches.append(
                idempotency.prune_expired(s, older_than=now - timedelta(days=30), batch=2)
            )
        if batches[-1] < 2:
            break
    assert sum(batches) >= 5 and all(size <= 2 for size in batches)
    assert sum(key_rows(world.db, key) for key in keys) == 0
    with world.db.session() as s:  # the README's warning: past its retention a key is new again
        assert not stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1, key=keys[0]).replayed
    assert world.on_hand(sku) == 4


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5))),
    ],
    ids=["year 1", "last century"],
)
def test_a_date_before_the_history_floor_is_refused_naming_the_month_and_the_floor(world, when):
    from warehouse.errors import HistoryClosed
    from warehouse.settings import get_settings
    from warehouse.stock.validation import history_floor

    sku, key = world.stocked_sku(5), unique("key")
    floor = history_floor(datetime.now(UTC).date(), get_settings().retention_months)
    with world.db.session() as s, pytest.raises(HistoryClosed) as refused:
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=1,
            location=world.locations[0],
            occurred_at=when,
            key=key,
        )
    business = when.astimezone(UTC)  # the month is the business zone's (UTC here), not the offset's
    assert refused.value.floor == f"{floor:%Y-%m}"
    assert f"stock history for {business.year:04d}-{business.month:02d} " in str(refused.value)
    assert key_rows(world.db, key) == 0 and world.on_hand(sku) == 5


def test_a_receipt_that_would_take_a_bin_past_the_maximum_is_refused_and_nothing_overflows(world):
    from warehouse.stock.validation import MAX_BALANCE, MAX_QUANTITY

    sku, key = world.add_sku(), unique("key")
    with world.db.session() as s:  # fill one bin to the maximum, in whole calls
        for _ in range(MAX_BALANCE // MAX_QUANTITY):
            stock.receive(
                s, warehouse=world.warehouse, sku=sku, qty=MAX_QUANTITY, location=world.locations[0]
            )
    with world.db.session() as s:
        with pytest.raises(InvalidQuantity, match=f"would hold more than {MAX_BALANCE:,} units"):
            stock.receive(
                s, warehouse=world.warehouse, sku=sku, qty=1, location=world.locations[0], key=key
            )
    assert world.on_hand(sku) == MAX_BALANCE and key_rows(world.db, key) == 0
    with world.db.session() as s:  # another bin is another balance
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=MAX_QUANTITY,
            location=world.locations[1],
            key=key,
        )
    assert world.on_hand(sku) == MAX_BALANCE + MAX_QUANTITY


def test_eight_requests_taking_over_one_resultless_key_at_once_apply_once(world, database_url):
    """The takeover locks the key row: one request applies, the others wait and replay it."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import warehouse

    sku, key = world.stocked_sku(20), unique("key")
    with world.db.session() as s:
        s.execute(
            text(
                "INSERT INTO idempotency_key (key, operation, request_hash) VALUES (:k, 'deduct', 'x')"
            ),
            {"k": key},
        )
    pool = warehouse.connect(database_url, pool_size=8)
    start = threading.Barrier(8)

    def request(_):
        start.wait()
        with pool.session() as s:
            return stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=3, key=key).replayed

    try:
        with ThreadPoolExecutor(8) as threads:
            replayed = list(threads.map(request, range(8)))
    finally:
        pool.dispose()
    assert sorted(replayed) == [False] + [True] * 7
    assert world.on_hand(sku) == 17
