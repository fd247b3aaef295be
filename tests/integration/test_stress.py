"""Every operation kind at once on a few rows, from threads and from processes, with shared
idempotency keys and demand above supply: no caller sees an error it cannot act on, the books
balance, and every key applied at most once.

Expected outcomes per call: applied, replayed (a shared key), or a truthful `InsufficientStock`.
`ConcurrentConflict` (a deadlock between composed operations) is retried by
`retry.in_transaction`, as the README tells callers to do; anything else is a failure."""

from __future__ import annotations

import random
import threading
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

import pytest
from sqlalchemy import text

import warehouse
from tests.builders import World
from tests.integration.helpers import violations
from warehouse import stock
from warehouse.db import retry
from warehouse.errors import InsufficientStock

pytestmark = pytest.mark.integration

KINDS = ("deduct", "reserve", "release", "transfer", "deduct_order", "count", "receive", "adjust")
SHARED_KEYS = 40  # keys several workers send, each always with the same request


def plan_call(rng: random.Random, skus: list[str], bins: list[str]) -> tuple[str, dict]:
    kind = rng.choice(KINDS)
    sku, where = rng.choice(skus), rng.choice(bins)
    qty = rng.randint(1, 6)
    if kind in ("deduct", "reserve", "release"):
        return kind, {"sku": sku, "qty": qty, "location": where if rng.random() < 0.5 else None}
    if kind == "transfer":
        return kind, {
            "sku": sku,
            "qty": qty,
            "location": where,
            "to_location": rng.choice([b for b in bins if b != where]),
        }
    if kind == "deduct_order":
        return kind, {
            "lines": [(s, rng.randint(1, 3)) for s in rng.sample(skus, rng.randint(1, len(skus)))]
        }
    if kind == "count":
        return kind, {"location": where, "sku": sku, "qty": rng.randint(0, 12)}
    if kind == "receive":
        return kind, {"sku": sku, "qty": qty, "location": where}
    return kind, {
        "sku": sku,
        "qty": rng.choice([-1, 1]) * qty,
        "location": where,
        "reason": "stress",
    }


def apply(db, warehouse_code: str, kind: str, arguments: dict, key: str | None) -> str:
    def work(session):
        return getattr(stock, kind)(session, warehouse=warehouse_code, key=key, **arguments)

    try:
        change = retry.in_transaction(db, work, attempts=10, label=kind)
    except InsufficientStock:
        return "refused"
    return "replayed" if change.replayed else "applied"


def run_worker(
    url: str,
    warehouse_code: str,
    skus: list[str],
    bins: list[str],
    seed: int,
    threads: int,
    calls: int,
) -> tuple[Counter, list[str], list[str]]:
    """`threads` threads of `calls` calls each; returns outcomes, unexpected errors, keys used."""
    db = warehouse.connect(url, pool_size=threads)
    outcomes: Counter = Counter()
    unexpected: list[str] = []
    keys: set[str] = set()
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def thread(number: int) -> None:
        rng = random.Random(f"{seed}-{number}")
        start.wait()
        for _ in range(calls):
            key = None
            if rng.random() < 0.3:  # a shared key: its request is a function of the key alone
                index = rng.randrange(SHARED_KEYS)
                key = f"{warehouse_code}-shared-{index}"
                kind, arguments = plan_call(random.Random(key), skus, bins)
            else:
                kind, arguments = plan_call(rng, skus, bins)
            try:
                outcome = apply(db, warehouse_code, kind, arguments, key)
            except Exception:
                outcome = "unexpected"
                with lock:
                    unexpected.append(f"{kind} {arguments}: {traceback.format_exc(limit=3)}")
            with lock:
                outcomes[(kind, outcome)] += 1
                if key:
                    keys.add(key)

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(thread, range(threads)))
    finally:
        db.dispose()
    return outcomes, unexpected, sorted(keys)


@pytest.fixture
def scene(db):
    world = World.create(db, bins=3)
    skus = [world.add_sku() for _ in range(3)]
    for sku in skus:
        for where in world.locations:
            world.receive(sku, 8, location=where)
    return world, skus


def keys_applied_more_than_once(db, keys: list[str]) -> list:
    with db.session() as s:
        return s.execute(
            text("""
            SELECT idempotency_key, count(DISTINCT operation_id) FROM stock_movement
            WHERE idempotency_key = ANY (CAST(:keys AS text[]))
            GROUP BY idempotency_key HAVING count(DISTINCT operation_id) > 1"""),
            {"keys": keys},
        ).all()


def assert_sound(db, outcomes: Counter, unexpected: list[str], keys: list[str], calls: int) -> None:
    assert unexpected == [], "\n".join(unexpected[:5])
    assert sum(outcomes.values()) == calls
    assert {kind for kind, outcome in outcomes if outcome == "applied"} == set(KINDS), outcomes
    assert any(outcome == "refused" for _, outcome in outcomes), "demand never exceeded supply"
    assert any(outcome == "replayed" for _, outcome in outcomes), "no shared key was repeated"
    assert violations(db) == []
    assert keys_applied_more_than_once(db, keys) == []
    with db.session() as s:
        negative = s.execute(
            text(
                "SELECT count(*) FROM stock_balance WHERE on_hand < 0 OR reserved < 0 "
                "OR reserved > on_hand"
            )
        ).scalar_one()
    assert negative == 0


def test_every_operation_kind_at_once_from_8_threads_keeps_the_books(scene, database_url):
    world, skus = scene
    outcomes, unexpected, keys = run_worker(
        database_url, world.warehouse, skus, world.locations, seed=11, threads=8, calls=80
    )
    assert_sound(world.db, outcomes, unexpected, keys, 8 * 80)


def test_every_operation_kind_at_once_from_2_processes_of_4_threads_keeps_the_books(
    scene, database_url
):
    world, skus = scene
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as processes:
        results = list(
            processes.map(
                run_worker,
                [database_url] * 2,
                [world.warehouse] * 2,
                [skus] * 2,
                [world.locations] * 2,
                [21, 22],
                [4, 4],
                [60, 60],
            )
        )
    outcomes = sum((result[0] for result in results), Counter())
    unexpected = [line for result in results for line in result[1]]
    keys = sorted({key for result in results for key in result[2]})
    assert_sound(world.db, outcomes, unexpected, keys, 2 * 4 * 60)
