"""Random sequences of stock operations keep every invariant, and the database agrees with a
simple in-memory model of what each operation should have done."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.builders import World
from tests.integration.helpers import violations
from warehouse import stock
from warehouse.errors import InsufficientStock

pytestmark = pytest.mark.integration

BINS = 3
LOTS = {"L-EARLY": date(2027, 1, 1), "L-LATE": date(2027, 9, 1)}
LOT_CHOICES = st.sampled_from([None, *LOTS])
QTY = st.integers(min_value=1, max_value=30)
SKU_INDEX = st.integers(min_value=0, max_value=1)
BIN_INDEX = st.integers(min_value=0, max_value=BINS - 1)


def make_machine(db):
    class StockMachine(RuleBasedStateMachine):
        @initialize()
        def setup(self):
            self.world = World.create(db, bins=BINS)
            self.skus = [self.world.add_sku(lots=LOTS) for _ in range(2)]
            # model: (sku, bin, lot) -> [on_hand, reserved]
            self.model = defaultdict(lambda: [0, 0])
            self.keys: dict[str, tuple] = {}

        def _apply(self, change):
            for line in change.lines:
                row = self.model[(line.sku, line.location, line.lot)]
                row[0] += line.qty
                row[1] += line.reserved_qty
                assert (row[0], row[1]) == (line.on_hand, line.reserved)

        def _available(self, sku):
            return sum(on - res for (s, _, _), (on, res) in self.model.items() if s == sku)

        def _run(self, operation, **arguments):
            try:
                with db.session() as s:
                    change = operation(s, warehouse=self.world.warehouse, **arguments)
            except InsufficientStock:
                return None
            self._apply(change)
            return change

        @rule(sku=SKU_INDEX, where=BIN_INDEX, lot=LOT_CHOICES, qty=QTY)
        def receive(self, sku, where, lot, qty):
            self._run(
                stock.receive,
                sku=self.skus[sku],
                location=self.world.locations[where],
                lot=lot,
                qty=qty,
            )

        @rule(sku=SKU_INDEX, qty=QTY)
        def deduct_fefo(self, sku, qty):
            available = self._available(self.skus[sku])
            change = self._run(stock.deduct, sku=self.skus[sku], qty=qty)
            assert (change is not None) == (qty <= available)

        @rule(sku=SKU_INDEX, where=BIN_INDEX, qty=QTY)
        def deduct_from_bin(self, sku, where, qty):
            self._run(
                stock.deduct, sku=self.skus[sku], qty=qty, location=self.world.locations[where]
            )

        @rule(sku=SKU_INDEX, qty=QTY)
        def reserve(self, sku, qty):
            self._run(stock.reserve, sku=self.skus[sku], qty=qty)

        @rule(sku=SKU_INDEX, qty=QTY)
        def release(self, sku, qty):
            self._run(stock.release, sku=self.skus[sku], qty=qty)

        @rule(sku=SKU_INDEX, source=BIN_INDEX, destination=BIN_INDEX, lot=LOT_CHOICES, qty=QTY)
        def transfer(self, sku, source, destination, lot, qty):
            if source != destination:
                self._run(
                    stock.transfer,
                    sku=self.skus[sku],
                    qty=qty,
                    lot=lot,
                    location=self.world.locations[source],
                    to_location=self.world.locations[destination],
                )

        @rule(
            sku=SKU_INDEX,
            where=BIN_INDEX,
            qty=st.integers(min_value=-30, max_value=30).filter(bool),
        )
        def adjust(self, sku, where, qty):
            self._run(
                stock.adjust,
                sku=self.skus[sku],
                qty=qty,
                location=self.world.locations[where],
                reason="stateful test",
            )

        @rule(
            where=BIN_INDEX,
            sku=SKU_INDEX,
            lot=LOT_CHOICES,
            qty=st.integers(min_value=0, max_value=40),
        )
        def count(self, where, sku, lot, qty):
            self._run(
                stock.count,
                location=self.world.locations[where],
                sku=self.skus[sku],
                lot=lot,
                qty=qty,
            )

        @rule(first=QTY, second=QTY)
        def order(self, first, second):
            self._run(stock.deduct_order, lines=[(self.skus[0], first), (self.skus[1], second)])

        @rule(sku=SKU_INDEX, qty=QTY, suffix=st.integers(min_value=0, max_value=3))
        def keyed_deduct(self, sku, qty, suffix):
            key = f"{self.world.warehouse}-key-{suffix}"
            if key in self.keys:  # a repeat: same arguments replay, nothing moves
                sku, qty = self.keys[key]
                before = {k: list(v) for k, v in self.model.items()}
                with db.session() as s:
                    change = stock.deduct(
                        s, warehouse=self.world.warehouse, sku=self.skus[sku], qty=qty, key=key
                    )
                assert change.replayed and {k: list(v) for k, v in self.model.items()} == before
            elif self._run(stock.deduct, sku=self.skus[sku], qty=qty, key=key) is not None:
                self.keys[key] = (sku, qty)

        @invariant()
        def database_matches_model(self):
            if not hasattr(self, "world"):
                return
            for sku in self.skus:
                expected = sum(on for (s, _, _), (on, _) in self.model.items() if s == sku)
                assert self.world.on_hand(sku) == expected
                assert self.world.available(sku) == self._available(sku)
            assert all(on >= 0 and 0 <= res <= on for on, res in self.model.values())

        def teardown(self):
            if hasattr(self, "world"):
                assert violations(db) == []

    return StockMachine


def test_random_operation_sequences_keep_the_invariants(db):
    machine = make_machine(db)
    machine.TestCase.settings = settings(
        max_examples=25,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    machine.TestCase().runTest()
