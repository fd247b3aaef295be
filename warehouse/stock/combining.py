"""Deductions of a hot item combined: concurrent callers in one process share one statement.

A hot SKU is capped by its row lock: every deduction holds the balance row from its UPDATE to
its COMMIT, so deductions of one row run one after another however many callers there are.
`CombiningDeductions` gathers the deductions of one item (warehouse, sku, location, lot) that
callers of this process (the threads of a WMS service) start while one of them is already at
the database, and applies them together as one statement (statements.py
`_COMBINED_DEDUCTION`): the row is locked and changed once, and each request, in arrival order,
still gets its own operation, ledger line, outbox message, idempotency record and result.

Below the contention threshold nothing is combined: a deduction that finds no other one of its
item running goes to the database alone, at once (`DirectStock`), so combining adds no latency
where there is no queue. Requests queue only behind statements of their own item already at
the database (`in_flight` of them: one running, the next waiting there for the row lock), and
the next batch is whatever queued meanwhile, up to `max_batch`: the gathering window is the
time the statement ahead took, never a fixed wait.

A request the combined statement does not apply (the first FEFO row no longer covers it, its
key is held already) runs alone afterwards, through `DirectStock`, which spreads it over rows,
refuses it truthfully or replays it; so does every request of a batch whose statement failed
(a closed month, a key committed meanwhile by another process, a deadlock). All or nothing per
request; the batch is only a way to share a lock and a commit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from sqlalchemy.exc import DBAPIError

from warehouse.db import raw_sql
from warehouse.db.retry import conflicts_are_retryable
from warehouse.metrics import sinks as metrics
from warehouse.stock import idempotency, taking
from warehouse.stock.direct import DirectStock
from warehouse.stock.resolve import Item
from warehouse.stock.result import MovementLine, StockChange
from warehouse.stock.statements import COMBINED_DEDUCTION, RENDERED
from warehouse.stock.taking import Take

DEFAULT_THRESHOLD = 2
DEFAULT_MAX_BATCH = 64
# Batches of one item at the database at once: one runs while the next waits for the row lock
# there, so the lock passes from one batch to the next inside PostgreSQL, not through a wake-up
# of this process's next leader thread.
DEFAULT_IN_FLIGHT = 2


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Request:
    """One caller's deduction while it waits: served by a batch, told to run alone, or handed
    the lead of the next batch."""

    planned: Take
    # Held from creation; released once to wake the caller (a bare lock: an Event's Condition
    # costs measurably more per request on the hot path).
    wake: threading.Lock = field(default_factory=_held_lock)
    change: StockChange | None = None
    # The batch's statement failed in a way that leaves its outcome unknown (the connection
    # dropped): every request of the batch raises it rather than run again.
    error: BaseException | None = None
    batch: list[_Request] | None = None


@dataclass(eq=False)
class _Line:
    """One item's batches at the database and the requests queued behind them."""

    in_flight: int = 0
    queue: list[_Request] = field(default_factory=list)


class CombiningDeductions:
    """`deduct` like `DirectStock.deduct`, combining concurrent deductions of one item.

    `threshold`: the fewest requests worth one combined statement (below it they run alone);
    `max_batch`: the most requests one statement applies. Thread-safe; keep one per process."""

    def __init__(
        self,
        direct: DirectStock,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        max_batch: int = DEFAULT_MAX_BATCH,
        in_flight: int = DEFAULT_IN_FLIGHT,
    ):
        if threshold < 2 or max_batch < threshold or in_flight < 1:
            raise ValueError(
                "need 2 <= threshold <= max_batch and in_flight >= 1, got "
                f"{threshold}, {max_batch}, {in_flight}"
            )
        self.direct = direct
        self.threshold = threshold
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._lock = threading.Lock()
        # An item is in the map exactly while one of its batches is at the database.
        self._lines: dict[tuple[str, Item], _Line] = {}

    @conflicts_are_retryable
    def deduct(
        self,
        *,
        warehouse: str,
        sku: str,
        qty: int,
        location: str | None = None,
        lot: str | None = None,
        key: str | None = None,
        occurred_at: datetime | None = None,
        reference: str | None = None,
    ) -> StockChange:
        """`stock.deduct`, committed on return; combined with concurrent ones of its item."""
        return taking.deduct_with(
            self._submit,
            warehouse=warehouse,
            sku=sku,
            qty=qty,
            location=location,
            lot=lot,
            key=key,
            occurred_at=occurred_at,
            reference=reference,
        )

    def _submit(self, planned: Take) -> StockChange:
        request = _Request(planned)
        [item] = planned.demand
        line = (planned.request.warehouse, item)
        with self._lock:
            state = self._lines.setdefault(line, _Line())
            if state.in_flight < self.in_flight and not state.queue:
                state.in_flight += 1
                batch: list[_Request] | None = [request]
            else:
                state.queue.append(request)
                batch = None
        if batch is None:
            request.wake.acquire()
            batch = request.batch  # None unless this request leads the next batch
        if batch is not None:
            self._lead(line, batch)
        if request.error is not None:
            raise request.error
        if request.change is not None:
            return request.change
        return self.direct.take(planned)  # not applied by its batch: alone

    def _lead(self, line: tuple[str, Item], batch: list[_Request]) -> None:
        """Run `batch` (this thread's request first), then hand the queue to its next leader."""
        try:
            if len(batch) >= self.threshold:
                self._combine(batch)
            else:  # too few to combine: this thread's own request alone, still holding the turn
                metrics.current().combined_deductions("alone", len(batch))
                batch[0].change = self.direct.take(batch[0].planned)
        finally:
            with self._lock:
                state = self._lines[line]
                following = state.queue[: self.max_batch]
                del state.queue[: self.max_batch]
                if not following:  # this batch's place at the database is free again
                    state.in_flight -= 1
                    if not state.in_flight:
                        del self._lines[line]
            for request in batch[1:]:  # served, or (no change) to run alone
                request.wake.release()
            if following:
                following[0].batch = following
                following[0].wake.release()

    def _combine(self, batch: list[_Request]) -> None:
        """Apply what fits of `batch` in one statement, setting each applied request's change
        (or, when the statement's outcome is unknown, each request's error)."""
        # A key twice in one batch (a client's retry while its first try waits) would fail the
        # key INSERT and the whole statement: the repeat stays out and replays afterwards.
        seen: set[str] = set()
        included = []
        for request in batch:
            key = request.planned.request.key
            if key is None or key not in seen:
                included.append(request)
                if key is not None:
                    seen.add(key)
        first = included[0].planned.request
        [item] = included[0].planned.demand
        requests = [request.planned.request for request in included]
        params = {
            "warehouse": first.warehouse,
            "operation": "deduct",
            "sku": item.sku,
            "location": item.location,
            "lot": item.lot,
            "qtys": [request.planned.demand[item] for request in included],
            "keys": [r.key for r in requests],
            "digests": [
                None if r.key is None else idempotency.request_hash(r.operation, r.arguments)
                for r in requests
            ],
            "references": [r.reference for r in requests],
            "occurred": [r.occurred_at for r in requests],
        }
        sink = metrics.current()
        try:
            with self.direct.db.direct_connection() as connection:
                rows = raw_sql.fetchall_on(connection, RENDERED[COMBINED_DEDUCTION], params)
        except DBAPIError as error:
            sink.combined_deductions("failed", len(batch))
            if not rolled_back(error):
                # The statement may have committed before the connection dropped: running
                # these requests again could apply them twice. Each caller gets the error
                # (one with a key then replays it; see `DirectStock`).
                for request in batch:
                    request.error = error
            # Otherwise the server refused the statement and nothing of it happened (a closed
            # month, a key committed meanwhile, a deadlock): each request runs alone.
            return
        for ordinal, operation_id, items in rows:
            request = included[ordinal - 1]
            request.change = StockChange(
                "deduct",
                first.warehouse,
                operation_id,
                tuple(MovementLine.from_json(entry) for entry in items),
                request.planned.request.key,
            )
        if rows:
            self.direct.db.stock_committed({(first.warehouse, item.sku)})
        sink.combined_deductions("applied", len(rows))
        sink.combined_deductions("declined", len(batch) - len(rows))


def rolled_back(error: DBAPIError) -> bool:
    """Whether an autocommit statement that raised `error` certainly changed nothing: the server
    answered with an error of its own. A lost connection (SQLSTATE class 08, a server shutting
    down, or no answer at all) leaves it unknown whether the commit happened."""
    orig = error.orig
    sqlstate = orig.sqlstate if isinstance(orig, psycopg.Error) else None
    if sqlstate is None:
        return False
    return not (sqlstate.startswith("08") or sqlstate in UNKNOWN_OUTCOME_SQLSTATES)


# admin_shutdown, crash_shutdown, cannot_connect_now: the session ended around the statement.
UNKNOWN_OUTCOME_SQLSTATES = {"57P01", "57P02", "57P03"}
