"""Every stock operation and every error, on the real PostgreSQL."""

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.integration.helpers import ledger_counts, movements_of, outbox_of, violations
from warehouse import catalog, stock
from warehouse.errors import (
    IdempotencyConflict,
    InsufficientStock,
    InvalidArgument,
    InvalidQuantity,
    UnknownItem,
)

pytestmark = pytest.mark.integration


def test_receive_writes_balance_movement_and_outbox_message_together(world):
    sku = world.add_sku()
    with world.db.session() as s:
        change = stock.receive(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=12,
            location=world.locations[0],
            reference="PO-1",
        )
    assert world.on_hand(sku) == 12
    assert movements_of(world.db, change.operation_id) == [("receipt", 12, 0)]
    [(topic, payload)] = outbox_of(world.db, change.operation_id)
    assert topic == "stock.changed"
    assert payload["operation"] == "receive" and payload["reference"] == "PO-1"
    assert payload["items"][0]["sku"] == sku and payload["items"][0]["qty"] == 12


def test_deduct_without_location_takes_earliest_expiry_first_then_oldest_receipt(world):
    sku = world.add_sku(lots={"LATE": date(2027, 6, 1), "SOON": date(2027, 1, 1)})
    world.receive(sku, 5, location=world.locations[0], lot="LATE")
    world.receive(sku, 5, location=world.locations[1], lot="SOON")
    world.receive(sku, 5, location=world.locations[2])  # no lot: no expiry, taken last
    with world.db.session() as s:
        change = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=8)
    taken = {(line.location, line.lot): -line.qty for line in change.lines}
    assert taken == {(world.locations[1], "SOON"): 5, (world.locations[0], "LATE"): 3}
    assert world.on_hand(sku) == 7


def test_deduct_from_named_bin_takes_only_from_that_bin(world):
    sku = world.stocked_sku(5, location=world.locations[0])
    world.receive(sku, 5, location=world.locations[1])
    with world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=5, location=world.locations[1])
    assert world.on_hand(sku, location=world.locations[0]) == 5
    assert world.on_hand(sku, location=world.locations[1]) == 0
    with pytest.raises(InsufficientStock, match=r"asked 1, available 0"):
        with world.db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1, location=world.locations[1])


def test_insufficient_stock_names_sku_asked_and_available_and_writes_nothing(world):
    sku = world.stocked_sku(4)
    before = ledger_counts(world.db)
    with pytest.raises(InsufficientStock) as caught, world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=5, key="insufficient-" + sku)
    assert (caught.value.sku, caught.value.asked, caught.value.available) == (sku, 5, 4)
    assert sku in str(caught.value) and "asked 5, available 4" in str(caught.value)
    assert ledger_counts(world.db) == before
    assert world.on_hand(sku) == 4


def test_a_refused_keyed_call_leaves_no_claim_even_if_the_caller_commits(world):
    sku = world.stocked_sku(1)
    key = "refused-then-ok-" + sku
    with world.db.session() as s:  # the caller swallows the error and commits
        with pytest.raises(InsufficientStock):
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2, key=key)
    world.receive(sku, 1)
    with world.db.session() as s:
        change = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2, key=key)
    assert not change.replayed and world.on_hand(sku) == 0


def test_reserved_stock_cannot_be_deducted_until_released(world):
    sku = world.stocked_sku(10)
    with world.db.session() as s:
        stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=7)
    assert world.available(sku) == 3 and world.on_hand(sku) == 10
    with pytest.raises(InsufficientStock, match="asked 4, available 3"):
        with world.db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=4)
    with world.db.session() as s:
        change = stock.release(s, warehouse=world.warehouse, sku=sku, qty=2)
        assert change.reserved_change == -2
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=5)
    assert world.available(sku) == 0 and world.on_hand(sku) == 5
    with pytest.raises(InsufficientStock), world.db.session() as s:
        stock.release(s, warehouse=world.warehouse, sku=sku, qty=6)


def test_transfer_moves_available_stock_between_bins_atomically(world):
    sku = world.stocked_sku(6, location=world.locations[0])
    with world.db.session() as s:
        change = stock.transfer(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=4,
            location=world.locations[0],
            to_location=world.locations[2],
        )
    assert [line.movement_type for line in change.lines] == ["transfer_out", "transfer_in"]
    assert world.on_hand(sku, location=world.locations[0]) == 2
    assert world.on_hand(sku, location=world.locations[2]) == 4
    before = ledger_counts(world.db)
    with pytest.raises(InsufficientStock), world.db.session() as s:
        stock.transfer(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=3,
            location=world.locations[0],
            to_location=world.locations[1],
        )
    assert ledger_counts(world.db) == before
    with pytest.raises(InvalidArgument, match="to itself"), world.db.session() as s:
        stock.transfer(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=1,
            location=world.locations[0],
            to_location=world.locations[0],
        )


def test_adjust_is_signed_needs_a_reason_and_never_goes_negative(world):
    sku = world.stocked_sku(3)
    with world.db.session() as s:
        stock.adjust(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=2,
            location=world.locations[0],
            reason="found behind rack",
        )
        stock.adjust(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=-4,
            location=world.locations[0],
            reason="water damage",
        )
    assert world.on_hand(sku) == 1
    with pytest.raises(InsufficientStock, match="asked 2, available 1"):
        with world.db.session() as s:
            stock.adjust(
                s,
                warehouse=world.warehouse,
                sku=sku,
                qty=-2,
                location=world.locations[0],
                reason="damage",
            )
    with pytest.raises(InvalidArgument, match="reason"), world.db.session() as s:
        stock.adjust(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=1,
            location=world.locations[0],
            reason=" ",
        )
    with pytest.raises(InvalidQuantity), world.db.session() as s:
        stock.adjust(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=0,
            location=world.locations[0],
            reason="x",
        )


def test_count_sets_counted_rows_and_writes_the_differences(world):
    first = world.stocked_sku(10)
    second = world.stocked_sku(4)
    third = world.add_sku()
    with world.db.session() as s:
        change = stock.count(
            s,
            warehouse=world.warehouse,
            location=world.locations[0],
            lines=[(first, 7), (second, 4), (third, 2)],
        )
    assert sorted((line.sku, line.qty) for line in change.lines) == sorted(
        [(first, -3), (third, 2)]
    )
    assert all(line.movement_type == "count" for line in change.lines)
    assert (world.on_hand(first), world.on_hand(second), world.on_hand(third)) == (7, 4, 2)


def test_count_below_reserved_cuts_the_reservation(world):
    sku = world.stocked_sku(10)
    with world.db.session() as s:
        stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=8, location=world.locations[0])
        change = stock.count(
            s, warehouse=world.warehouse, location=world.locations[0], sku=sku, qty=5
        )
    [line] = change.lines
    assert (line.qty, line.reserved_qty, line.on_hand, line.reserved) == (-5, -3, 5, 5)
    assert violations(world.db) == []


def test_complete_count_zeroes_rows_that_were_not_found(world):
    found = world.stocked_sku(3)
    missing = world.stocked_sku(9)
    with world.db.session() as s:
        stock.count(
            s,
            warehouse=world.warehouse,
            location=world.locations[0],
            sku=found,
            qty=3,
            complete=True,
        )
    assert world.on_hand(found) == 3 and world.on_hand(missing) == 0


def test_deduct_order_is_all_or_nothing(world):
    plenty = world.stocked_sku(50)
    scarce = world.stocked_sku(2)
    before = ledger_counts(world.db)
    with pytest.raises(InsufficientStock) as caught, world.db.session() as s:
        stock.deduct_order(
            s, warehouse=world.warehouse, lines=[(plenty, 10), {"sku": scarce, "qty": 3}]
        )
    assert caught.value.sku == scarce and caught.value.asked == 3 and caught.value.available == 2
    assert ledger_counts(world.db) == before
    assert world.on_hand(plenty) == 50
    with world.db.session() as s:
        change = stock.deduct_order(
            s, warehouse=world.warehouse, lines=[(plenty, 10), (scarce, 2), (plenty, 5)]
        )
    assert change.on_hand_change == -17
    assert len(outbox_of(world.db, change.operation_id)) == 1
    assert (world.on_hand(plenty), world.on_hand(scarce)) == (35, 0)


def test_deduct_order_line_errors_name_the_line(world):
    sku = world.stocked_sku(5)
    with pytest.raises(InvalidQuantity, match="line 2: qty=0"), world.db.session() as s:
        stock.deduct_order(s, warehouse=world.warehouse, lines=[(sku, 1), (sku, 0)])
    with pytest.raises(InvalidArgument, match="at least one line"), world.db.session() as s:
        stock.deduct_order(s, warehouse=world.warehouse, lines=[])


def test_a_repeated_key_returns_the_first_result_and_applies_nothing(world):
    sku = world.stocked_sku(10)
    key = "order-" + sku
    with world.db.session() as s:
        first = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=3, key=key)
    before = ledger_counts(world.db)
    with world.db.session() as s:
        again = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=3, key=key)
    assert again.replayed and not first.replayed
    assert again.operation_id == first.operation_id and again.lines == first.lines
    assert ledger_counts(world.db) == before
    assert world.on_hand(sku) == 7


def test_the_same_key_with_other_arguments_is_a_conflict(world):
    sku = world.stocked_sku(10)
    key = "conflict-" + sku
    with world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=3, key=key)
    with pytest.raises(IdempotencyConflict, match=key), world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=4, key=key)
    with pytest.raises(IdempotencyConflict), world.db.session() as s:
        stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=3, key=key)
    assert world.on_hand(sku) == 7


@pytest.mark.parametrize("kind", ["warehouse", "sku", "location", "lot"])
def test_unknown_items_are_named(world, kind):
    sku = world.stocked_sku(5)
    arguments = {"warehouse": world.warehouse, "sku": sku, "qty": 1, "location": world.locations[0]}
    arguments[kind] = "NOPE-" + kind
    with pytest.raises(UnknownItem, match=f"unknown {kind} 'NOPE-{kind}'"):
        with world.db.session() as s:
            stock.deduct(s, **arguments)


def test_padded_or_case_changed_codes_are_refused_not_fixed(world):
    sku = world.stocked_sku(5)
    with pytest.raises(UnknownItem), world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku.lower(), qty=1)
    with pytest.raises(InvalidArgument), world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku + " ", qty=1)


@pytest.mark.parametrize("qty", [0, -1, 1.5, "2", True, None, 2**63])
def test_invalid_quantities_are_refused_before_any_write(world, qty):
    sku = world.stocked_sku(5)
    before = ledger_counts(world.db)
    with pytest.raises(InvalidQuantity), world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=qty)
    assert ledger_counts(world.db) == before


def test_on_hand_as_of_a_past_moment_excludes_later_movements(world):
    sku = world.add_sku()
    now = datetime.now(UTC)
    with world.db.session() as s:
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=10,
            location=world.locations[0],
            occurred_at=now - timedelta(days=3),
        )
        stock.deduct(
            s, warehouse=world.warehouse, sku=sku, qty=4, occurred_at=now - timedelta(days=1)
        )
    with world.db.session() as s:
        assert (
            stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=now - timedelta(days=2))
            == 10
        )
        assert stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=now) == 6
        assert (
            stock.on_hand(s, warehouse=world.warehouse, sku=sku, as_of=now - timedelta(days=4)) == 0
        )


def test_deduction_metrics_count_attempts_successes_and_shortages(world, recorded_metrics):
    sku = world.stocked_sku(3)
    with world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2)
    with pytest.raises(InsufficientStock), world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2)
    value = recorded_metrics.value
    assert value("cangflow_deductions_attempted_total", operation="deduct") == 2
    assert value("cangflow_deductions_succeeded_total", operation="deduct") == 1
    assert (
        value("cangflow_deductions_refused_total", operation="deduct", kind="insufficient_stock")
        == 1
    )
    assert len(recorded_metrics.observations("cangflow_deduction_seconds", operation="deduct")) == 2


def test_every_operation_keeps_the_invariants(world):
    sku = world.stocked_sku(20)
    with world.db.session() as s:
        stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=5)
        stock.transfer(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=5,
            location=world.locations[0],
            to_location=world.locations[1],
        )
        stock.deduct_order(s, warehouse=world.warehouse, lines=[(sku, 3)])
        stock.count(s, warehouse=world.warehouse, location=world.locations[1], sku=sku, qty=4)
    assert violations(world.db) == []


def test_ids_read_in_a_rolled_back_transaction_are_not_remembered(world):
    code = "ROLLED-BACK-" + world.warehouse
    with pytest.raises(RuntimeError), world.db.session() as s:
        catalog.ensure_sku(s, code)
        assert stock.available(s, warehouse=world.warehouse, sku=code) == 0  # resolves the new id
        raise RuntimeError("roll back")
    with world.db.session() as s:
        catalog.ensure_sku(s, code)  # a new row, with a new id
    world.receive(code, 4)
    assert world.on_hand(code) == 4 and world.available(code) == 4


def test_order_lines_naming_the_same_stock_twice_cannot_oversell_it(world):
    sku = world.stocked_sku(6, location=world.locations[0])
    before = ledger_counts(world.db)
    # Both lines would be served from the one bin: 5 + 5 of 6 must be refused, not oversold.
    with pytest.raises(InsufficientStock, match="asked 10, available 6"):
        with world.db.session() as s:
            stock.deduct_order(
                s, warehouse=world.warehouse, lines=[(sku, 5, world.locations[0]), (sku, 5)]
            )
    assert ledger_counts(world.db) == before and world.on_hand(sku) == 6


def test_a_refused_release_says_it_was_reserved_stock_that_was_short(world):
    sku = world.stocked_sku(5)
    with world.db.session() as s:
        stock.reserve(s, warehouse=world.warehouse, sku=sku, qty=2)
    with pytest.raises(InsufficientStock, match=r"\(reserved stock\): asked 3, available 2"):
        with world.db.session() as s:
            stock.release(s, warehouse=world.warehouse, sku=sku, qty=3)


def test_complete_count_of_a_bin_naming_no_items_empties_it(world):
    sku = world.stocked_sku(4)
    with world.db.session() as s:
        change = stock.count(
            s, warehouse=world.warehouse, location=world.locations[0], complete=True
        )
    assert [(line.sku, line.qty) for line in change.lines] == [(sku, -4)]
    with pytest.raises(UnknownItem, match="unknown location 'NO-SUCH-BIN'"):
        with world.db.session() as s:
            stock.count(s, warehouse=world.warehouse, location="NO-SUCH-BIN", complete=True)
    with pytest.raises(InvalidArgument, match="count line 1: unknown field"):
        with world.db.session() as s:
            stock.count(
                s,
                warehouse=world.warehouse,
                location=world.locations[0],
                lines=[{"sku": sku, "qty": 1, "bin": "x"}],
            )


def test_pending_orm_changes_are_flushed_before_a_stock_statement(world):
    """A bin added through the ORM and not yet flushed is seen by the operation that uses it."""
    from warehouse.db.models import Location, Warehouse

    sku = world.add_sku()
    code = world.warehouse + "-ORM"
    with world.db.session() as s:
        owner = s.query(Warehouse).filter_by(code=world.warehouse).one()
        s.add(Location(warehouse_id=owner.id, code=code))
        stock.receive(s, warehouse=world.warehouse, sku=sku, qty=3, location=code)
    assert world.on_hand(sku, location=code) == 3
