"""Random steps on two sessions that interleave: each session keeps a transaction open across
steps, so an operation of one can wait on a row the other holds, until the holder commits or
rolls back (or PostgreSQL breaks a deadlock between them). Whatever the order, nothing is lost
and nothing invented: every balance equals its starting stock plus the changes the committed
transactions reported, refusals and rolled-back work change nothing, and the books balance."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

import warehouse
from tests.builders import World
from tests.integration.helpers import violations
from warehouse import stock
from warehouse.errors import ConcurrentConflict, InsufficientStock

pytestmark = pytest.mark.integration

START = 20
QTY = st.integers(min_value=1, max_value=15)
INDEX = st.integers(min_value=0, max_value=1)
SLOT = st.sampled_from(["A", "B"])
STEP_WAIT_S = 0.2  # an operation not done by then is taken to wait on the other session's lock
SEEN = {"waited": 0, "committed": 0}  # over all examples: the test must really interleave


class Slot:
    """One session whose transaction stays open across steps, driven by a thread of its own
    (a Session belongs to one thread)."""

    def __init__(self, db):
        self.db = db
        self.executor = ThreadPoolExecutor(1)
        self.context = None
        self.session = None
        self.pending: Future | None = None
        self.changes: list = []  # StockChange of this transaction's applied operations
        self.doomed = False  # PostgreSQL aborted the transaction: it can only roll back

    def busy(self) -> bool:
        return self.pending is not None and not self.pending.done()

    def _open(self):
        if self.session is None:
            self.context = self.db.session()
            self.session = self.context.__enter__()
        return self.session

    def submit(self, operation, **arguments) -> None:
        self.pending = self.executor.submit(lambda: operation(self._open(), **arguments))

    def collect(self, timeout: float) -> None:
        """Take the pending operation's outcome if it finished within `timeout`."""
        if self.pending is None:
            return
        try:
            change = self.pending.result(timeout=timeout)
        except FutureTimeout:
            return
        except InsufficientStock:
            change = None
        except ConcurrentConflict:
            change, self.doomed = None, True
        self.pending = None
        if change is not None:
            self.changes.append(change)

    def finish(self, commit: bool) -> list:
        """End the transaction; returns the changes it committed."""
        commit = commit and not self.doomed

        def end():
            if self.context is None:
                return
            if commit:
                self.context.__exit__(None, None, None)
            else:
                self.session.rollback()
                self.context.__exit__(None, None, None)

        self.executor.submit(end).result(timeout=30)
        committed = self.changes if commit else []
        self.context = self.session = None
        self.changes, self.doomed = [], False
        return committed


def make_machine(db):
    class TwoSessions(RuleBasedStateMachine):
        @initialize()
        def setup(self):
            self.world = World.create(db, bins=2)
            self.skus = [self.world.add_sku() for _ in range(2)]
            for sku in self.skus:
                for where in self.world.locations:
                    self.world.receive(sku, START, location=where)
            self.pool = warehouse.connect(db.url.render_as_string(hide_password=False), pool_size=3)
            self.slots = {"A": Slot(self.pool), "B": Slot(self.pool)}
            self.committed: list = []

        def _submit(self, slot, operation, **arguments):
            current = self.slots[slot]
            if current.busy() or current.doomed:
                return
            current.submit(operation, warehouse=self.world.warehouse, **arguments)
            current.collect(STEP_WAIT_S)
            SEEN["waited"] += current.busy()

        @rule(slot=SLOT, sku=INDEX, where=INDEX, qty=QTY)
        def receive(self, slot, sku, where, qty):
            self._submit(
                slot,
                stock.receive,
                sku=self.skus[sku],
                qty=qty,
                location=self.world.locations[where],
            )

        @rule(slot=SLOT, sku=INDEX, qty=QTY, in_bin=st.booleans(), where=INDEX)
        def deduct(self, slot, sku, qty, in_bin, where):
            self._submit(
                slot,
                stock.deduct,
                sku=self.skus[sku],
                qty=qty,
                location=self.world.locations[where] if in_bin else None,
            )

        @rule(slot=SLOT, sku=INDEX, qty=QTY)
        def reserve(self, slot, sku, qty):
            self._submit(slot, stock.reserve, sku=self.skus[sku], qty=qty)

        @rule(slot=SLOT, sku=INDEX, qty=QTY)
        def release(self, slot, sku, qty):
            self._submit(slot, stock.release, sku=self.skus[sku], qty=qty)

        @rule(slot=SLOT, sku=INDEX, where=INDEX, qty=QTY)
        def transfer(self, slot, sku, where, qty):
            self._submit(
                slot,
                stock.transfer,
                sku=self.skus[sku],
                qty=qty,
                location=self.world.locations[where],
                to_location=self.world.locations[1 - where],
            )

        @rule(slot=SLOT, sku=INDEX, where=INDEX, qty=st.integers(min_value=0, max_value=30))
        def count(self, slot, sku, where, qty):
            self._submit(
                slot, stock.count, location=self.world.locations[where], sku=self.skus[sku], qty=qty
            )

        @rule(slot=SLOT, first=QTY, second=QTY)
        def order(self, slot, first, second):
            self._submit(
                slot, stock.deduct_order, lines=[(self.skus[1], second), (self.skus[0], first)]
            )

        @rule(
            slot=SLOT,
            sku=INDEX,
            where=INDEX,
            qty=st.integers(min_value=-10, max_value=10).filter(bool),
        )
        def adjust(self, slot, sku, where, qty):
            self._submit(
                slot,
                stock.adjust,
                sku=self.skus[sku],
                qty=qty,
                location=self.world.locations[where],
                reason="interleaved",
            )

        @precondition(lambda self: hasattr(self, "slots"))
        @rule(slot=SLOT, commit=st.booleans())
        def finish(self, slot, commit):
            current = self.slots[slot]
            if current.busy():
                return  # waiting on the other session: it must finish first
            current.collect(0)
            self.committed += current.finish(commit)
            other = self.slots["B" if slot == "A" else "A"]
            other.collect(STEP_WAIT_S)  # it may have waited on this one

        @precondition(
            lambda self: hasattr(self, "slots") and all(s.busy() for s in self.slots.values())
        )
        @rule()
        def wait_for_a_deadlock_to_be_broken(self):
            for current in self.slots.values():
                current.collect(3.0)  # PostgreSQL's deadlock_timeout is 1 s

        def teardown(self):
            if not hasattr(self, "slots"):
                return
            try:
                for _ in range(3):  # finish both, letting a waiter go once the other committed
                    for current in self.slots.values():
                        current.collect(5.0)
                        if not current.busy():
                            self.committed += current.finish(True)
                assert not any(current.busy() for current in self.slots.values())
                self.check_books()
            finally:
                for current in self.slots.values():
                    current.executor.shutdown(wait=True)
                self.pool.dispose()

        def check_books(self):
            expected = defaultdict(lambda: [0, 0])
            for sku in self.skus:
                for where in self.world.locations:
                    expected[(sku, where)][0] = START
            SEEN["committed"] += len(self.committed)
            for change in self.committed:
                for line in change.lines:
                    expected[(line.sku, line.location)][0] += line.qty
                    expected[(line.sku, line.location)][1] += line.reserved_qty
            with db.session() as s:
                for (sku, where), (on_hand, reserved) in expected.items():
                    found = stock.on_hand(
                        s, warehouse=self.world.warehouse, sku=sku, location=where
                    )
                    held = found - stock.available(
                        s, warehouse=self.world.warehouse, sku=sku, location=where
                    )
                    assert (found, held) == (on_hand, reserved), (sku, where)
            assert violations(db) == []

    return TwoSessions


def test_random_steps_on_two_interleaving_sessions_lose_nothing(db):
    machine = make_machine(db)
    machine.TestCase.settings = settings(
        max_examples=8,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    machine.TestCase().runTest()
    assert SEEN["waited"] > 0 and SEEN["committed"] > 0, SEEN
