"""Combined deductions of one hot item: one statement for many requests, each still applied or
not on its own, with its own operation, ledger line, outbox message, key and result."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import warehouse
from tests.integration.helpers import movements_of, outbox_of, violations
from tests.integration.test_interleavings import interleave
from warehouse import stock
from warehouse.errors import InsufficientStock
from warehouse.stock import taking
from warehouse.stock.combining import _Line, _Request
from warehouse.stock.resolve import Item

pytestmark = pytest.mark.integration

THREADS = 16


@pytest.fixture
def pool(database_url):
    database = warehouse.connect(database_url, pool_size=THREADS)
    yield database
    database.dispose()


def batch_of(world, sku: str, quantities: list[int], keys: list[str | None] | None = None):
    keys = keys or [None] * len(quantities)
    return [
        _Request(
            taking.plan(
                "deduct",
                warehouse=world.warehouse,
                lines=[taking.one_line(sku, qty, None, None)],
                key=key,
                occurred_at=None,
                reference=None,
            )
        )
        for qty, key in zip(quantities, keys, strict=True)
    ]


def key_rows(db, keys) -> dict:
    with db.session() as s:
        rows = s.execute(
            text("SELECT key, operation_id FROM idempotency_key WHERE key = ANY(:keys)"),
            {"keys": list(keys)},
        )
        return dict(rows.all())


def test_a_batch_applies_requests_in_arrival_order_while_their_running_sum_fits(world):
    sku = world.stocked_sku(10)
    combining = stock.CombiningDeductions(stock.DirectStock(world.db))
    batch = batch_of(world, sku, [3, 4, 5, 2, 1], keys=[f"{sku}-k0", None, None, None, None])
    combining._combine(batch)
    applied = [request.change for request in batch]
    # 3 and 4 fit (7 of 10); 5 would make 12: it and everything after it run alone later.
    assert [change is not None for change in applied] == [True, True, False, False, False]
    first, second = applied[0], applied[1]
    assert first is not None and second is not None
    assert [(c.lines[0].qty, c.lines[0].on_hand) for c in (first, second)] == [(-3, 7), (-4, 3)]
    assert second.lines[0].version == first.lines[0].version + 1
    assert first.operation_id != second.operation_id
    for change in (first, second):
        assert movements_of(world.db, change.operation_id) == [
            ("deduction", change.lines[0].qty, 0)
        ]
        [(_, payload)] = outbox_of(world.db, change.operation_id)
        assert payload["items"][0]["on_hand"] == change.lines[0].on_hand
    assert key_rows(world.db, [f"{sku}-k0"]) == {f"{sku}-k0": first.operation_id}
    assert world.on_hand(sku) == 3
    assert violations(world.db) == []


def test_requests_the_batch_leaves_out_run_alone_and_end_truthfully(world):
    sku = world.stocked_sku(10)
    direct = stock.DirectStock(world.db)
    direct.deduct(warehouse=world.warehouse, sku=sku, qty=1, key=f"{sku}-old")  # a key held
    combining = stock.CombiningDeductions(direct)
    batch = batch_of(world, sku, [1, 2, 9], keys=[f"{sku}-old", None, None])
    combining._combine(batch)
    assert [request.change is not None for request in batch] == [False, True, False]
    assert direct.take(batch[0].planned).replayed  # what its caller then does: a replay
    with pytest.raises(InsufficientStock, match="asked 9, available 7"):
        direct.take(batch[2].planned)
    assert world.on_hand(sku) == 7


def test_a_key_twice_in_one_batch_applies_once_and_the_repeat_replays(world):
    """A client's retry queued beside its first try: the repeat stays out of the statement (its
    key INSERT would fail the whole batch) and replays once its caller runs it alone."""
    sku = world.stocked_sku(10)
    direct = stock.DirectStock(world.db)
    combining = stock.CombiningDeductions(direct)
    batch = batch_of(world, sku, [2, 2, 1], keys=[f"{sku}-twice", f"{sku}-twice", None])
    combining._combine(batch)
    first, repeat, other = (request.change for request in batch)
    assert first is not None and other is not None and repeat is None
    again = direct.take(batch[1].planned)
    assert again.replayed and again.operation_id == first.operation_id
    assert world.on_hand(sku) == 7


def _failing_after(monkeypatch, error: Exception, *, run_first: bool) -> None:
    """The combined statement raises `error`: before it ran, or after it committed (a reply lost
    with the connection)."""
    from warehouse.stock import combining as combining_module

    real = combining_module.raw_sql.fetchall_on

    def failing(connection, rendered, params):
        if run_first:
            real(connection, rendered, params)
        raise DBAPIError.instance(rendered, params, error, psycopg.Error)

    monkeypatch.setattr(combining_module.raw_sql, "fetchall_on", failing)


def test_a_batch_the_server_refused_leaves_every_request_to_run_alone(world, monkeypatch):
    sku = world.stocked_sku(10)
    direct = stock.DirectStock(world.db)
    combining = stock.CombiningDeductions(direct)
    batch = batch_of(world, sku, [2, 3])
    _failing_after(monkeypatch, psycopg.errors.DeadlockDetected("deadlock"), run_first=False)
    combining._combine(batch)
    assert [(r.change, r.error) for r in batch] == [(None, None), (None, None)]
    monkeypatch.undo()
    for request in batch:
        direct.take(request.planned)
    assert world.on_hand(sku) == 5


def test_a_batch_whose_connection_was_lost_raises_to_every_caller_and_runs_nothing_again(
    world, monkeypatch
):
    """The statement committed, the reply was lost: running its requests again would deduct
    them twice, so each caller gets the error, as a lone call would."""
    sku = world.stocked_sku(10)
    combining = stock.CombiningDeductions(stock.DirectStock(world.db))
    _failing_after(monkeypatch, psycopg.OperationalError("connection lost"), run_first=True)
    with ThreadPoolExecutor(2) as executor:
        line = (world.warehouse, Item(sku))
        combining._lines[line] = _Line(in_flight=combining.in_flight)  # full: both queue
        futures = [
            executor.submit(combining.deduct, warehouse=world.warehouse, sku=sku, qty=qty)
            for qty in (2, 3)
        ]
        deadline = time.monotonic() + 10
        while len(combining._lines[line].queue) < 2:
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.01)
        combining._lead(line, batch_of(world, sku, [1]))  # the batch ahead: one lone pick
        for future in futures:
            with pytest.raises(DBAPIError, match="connection lost"):
                future.result(timeout=10)
    assert world.on_hand(sku) == 10 - 1 - 2 - 3  # each once: the batch committed, nothing re-ran
    assert violations(world.db) == []


def test_a_batch_waiting_on_a_receipt_applies_on_the_received_stock(world, pool):
    """The batch decides on the row it locked: after the receipt commits, 5 + 10 covers 12."""
    sku = world.stocked_sku(5)
    combining = stock.CombiningDeductions(stock.DirectStock(pool))
    batch = batch_of(world, sku, [8, 4])

    def combine(_session):
        combining._combine(batch)
        return [request.change for request in batch]

    changes = interleave(
        pool,
        lambda s: stock.receive(
            s, warehouse=world.warehouse, sku=sku, qty=10, location=world.locations[0]
        ),
        combine,
    )
    assert [change.lines[0].on_hand for change in changes] == [7, 3]
    assert world.on_hand(sku) == 3
    assert violations(world.db) == []


def test_sixteen_threads_on_one_hot_item_combine_and_lose_nothing(world, pool, recorded_metrics):
    initial = 1_000
    sku = world.stocked_sku(initial)
    combining = stock.CombiningDeductions(stock.DirectStock(pool))
    start = threading.Barrier(THREADS)

    def work(number: int):
        rng = random.Random(number)
        sold, refused, replays, done = 0, 0, 0, []
        start.wait()
        for i in range(40):
            if done and i % 7 == 0:  # a client retrying a request that applied
                key, qty, operation_id = rng.choice(done)
                change = combining.deduct(warehouse=world.warehouse, sku=sku, qty=qty, key=key)
                assert change.replayed and change.operation_id == operation_id
                replays += 1
                continue
            qty, key = rng.randint(1, 5), f"{sku}-t{number}-{i}"
            try:
                change = combining.deduct(warehouse=world.warehouse, sku=sku, qty=qty, key=key)
            except InsufficientStock:
                refused += 1
                continue
            assert change.on_hand_change == -qty and not change.replayed
            sold += qty
            done.append((key, qty, change.operation_id))
        return sold, refused, replays, [operation_id for _, _, operation_id in done]

    with ThreadPoolExecutor(THREADS) as executor:
        results = list(executor.map(work, range(THREADS)))
    sold = sum(r[0] for r in results)
    operations = [operation_id for r in results for operation_id in r[3]]
    assert sum(r[1] for r in results) > 0, "demand must exceed supply"
    assert sum(r[2] for r in results) > 0, "the test must replay keys"
    assert world.on_hand(sku) == initial - sold >= 0
    assert initial - sold < 5, "refusals must come from real shortage"
    assert len(set(operations)) == len(operations)
    with world.db.session() as s:
        per_operation = Counter(
            dict(
                s.execute(
                    text(
                        "SELECT operation_id, count(*) FROM stock_movement "
                        "WHERE operation_id = ANY(:ops) GROUP BY operation_id"
                    ),
                    {"ops": operations},
                ).all()
            )
        )
    assert set(per_operation.values()) == {1} and len(per_operation) == len(operations)
    combined = recorded_metrics.value("cangflow_stock_combined_deductions_total", outcome="applied")
    assert combined > 0, "16 threads on one row never formed a batch"
    assert violations(world.db) == []


def test_a_leader_that_fails_unexpectedly_still_wakes_its_batch_to_run_alone(world, monkeypatch):
    """A fault in the middle of a batch: its leader's caller gets the error, the others are woken
    and run alone; nobody waits forever and nothing applies twice."""
    sku = world.stocked_sku(10)
    combining = stock.CombiningDeductions(stock.DirectStock(world.db))
    line = (world.warehouse, Item(sku))
    combining._lines[line] = _Line(in_flight=combining.in_flight)  # full: newcomers queue
    real, calls = combining._combine, []

    def failing_first(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("the leader's connection broke")
        real(batch)

    monkeypatch.setattr(combining, "_combine", failing_first)
    with ThreadPoolExecutor(3) as executor:
        futures = [
            executor.submit(combining.deduct, warehouse=world.warehouse, sku=sku, qty=1)
            for _ in range(3)
        ]
        deadline = time.monotonic() + 10
        while len(combining._lines[line].queue) < 3:
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.01)
        # The batch at the database ends: the three queued requests become the next batch.
        combining._lead(line, batch_of(world, sku, [1]))
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=10).on_hand_change)
            except RuntimeError as error:
                outcomes.append(str(error))
    assert calls[0] == 3
    assert sorted(outcomes, key=str) == [-1, -1, "the leader's connection broke"]
    assert world.on_hand(sku) == 10 - 1 - 2
    assert violations(world.db) == []
