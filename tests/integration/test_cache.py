"""The stock cache against real PostgreSQL and Redis: correct after every kind of operation once
the relay has run, never stale beyond the bound, one load per stampede, no stale write over a
newer value, and reads that survive Redis dying (on a Redis server of the test's own)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

import warehouse
from tests.conftest import TEST_REDIS_URL as REDIS_URL
from tests.services import free_port
from warehouse import outbox, stock
from warehouse.cache import StockCache
from warehouse.cache.invalidator import CacheInvalidator
from warehouse.cache.load import load_one
from warehouse.cache.remote import STALE, SUPERSEDED, WRITTEN, Unavailable
from warehouse.cache.warmup import warm

pytestmark = pytest.mark.integration

LOCAL_TTL_S = 0.2  # the in-process level's TTL in these tests: the staleness bound


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cache(db, namespace):
    made = StockCache(db, REDIS_URL, namespace=namespace, local_ttl_s=LOCAL_TTL_S)
    yield made
    made.close()


@pytest.fixture
def other_db(database_url):
    """A second engine: its commits run no hook of `cache` (another process, in effect)."""
    other = warehouse.connect(database_url, pool_size=2)
    yield other
    other.dispose()


def relay(db, cache: StockCache) -> None:
    with db.session() as session:
        while outbox.publish_batch(
            session, cache.remote.client, cache.keys, limit=5000, max_length=100_000
        ).claimed:
            pass
    while outbox.consume_batch(
        db, cache.remote.client, cache.keys, CacheInvalidator(cache.remote, None)
    ).entries:
        pass


def truth(db, world, sku) -> int:
    with db.session() as session:
        return load_one(session, world.warehouse, sku).available


OPERATIONS = {
    "receive": lambda s, w, sku: stock.receive(
        s, warehouse=w.warehouse, sku=sku, qty=4, location=w.locations[1]
    ),
    "deduct": lambda s, w, sku: stock.deduct(s, warehouse=w.warehouse, sku=sku, qty=3),
    "reserve": lambda s, w, sku: stock.reserve(s, warehouse=w.warehouse, sku=sku, qty=2),
    "release": lambda s, w, sku: stock.release(s, warehouse=w.warehouse, sku=sku, qty=1),
    "transfer": lambda s, w, sku: stock.transfer(
        s,
        warehouse=w.warehouse,
        sku=sku,
        qty=1,
        location=w.locations[0],
        to_location=w.locations[2],
    ),
    "adjust": lambda s, w, sku: stock.adjust(
        s, warehouse=w.warehouse, sku=sku, qty=-1, location=w.locations[0], reason="damaged"
    ),
    "count": lambda s, w, sku: stock.count(
        s, warehouse=w.warehouse, location=w.locations[0], lines=[(sku, 5)]
    ),
}


def test_reads_are_right_after_every_operation_once_the_relay_has_run(cache, other_db, db, world):
    sku = world.stocked_sku(20, location=world.locations[0])
    assert cache.available(warehouse=world.warehouse, sku=sku) == 20
    for name, operation in OPERATIONS.items():
        cache.available(warehouse=world.warehouse, sku=sku)  # cached before the change
        with other_db.session() as s:
            operation(s, world, sku)
        relay(db, cache)
        time.sleep(LOCAL_TTL_S * 1.5)
        assert cache.available(warehouse=world.warehouse, sku=sku) == truth(db, world, sku), name


def test_a_read_in_the_writing_process_sees_the_commit_at_once(cache, db, world):
    sku = world.stocked_sku(10)
    assert cache.available(warehouse=world.warehouse, sku=sku) == 10
    for expected in (9, 8, 7):
        with db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1)
        assert cache.available(warehouse=world.warehouse, sku=sku) == expected


def test_another_process_sees_a_commit_within_the_bound_after_the_relay(
    cache, db, other_db, world, namespace
):
    sku = world.stocked_sku(10)
    reader = StockCache(db, REDIS_URL, namespace=namespace, local_ttl_s=LOCAL_TTL_S)
    try:
        assert reader.available(warehouse=world.warehouse, sku=sku) == 10
        with other_db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=4)
        relay(db, cache)
        relayed = time.monotonic()
        while reader.available(warehouse=world.warehouse, sku=sku) != 6:
            assert time.monotonic() - relayed <= LOCAL_TTL_S + 0.5, (
                "stale past the documented bound"
            )
            time.sleep(0.02)
    finally:
        reader.close()


def test_an_unknown_pair_is_refused_and_cached_briefly(cache, world, recorded_metrics):
    from warehouse.errors import UnknownItem

    for _ in range(5):
        with pytest.raises(UnknownItem):
            cache.available(warehouse=world.warehouse, sku="NO-SUCH-SKU")
    assert recorded_metrics.value("cangflow_cache_loads_total", reason="miss") == 1


def test_stampede_on_an_expired_hot_key_loads_at_most_twice(
    db, world, namespace, recorded_metrics, monkeypatch
):
    from warehouse.cache import stock_cache
    from warehouse.settings import get_settings

    # Waiters give the loader 1 s before loading themselves ("peer too slow"); on a loaded
    # 2-core machine 200 threads can starve the loader that long. The rule under test is the
    # single flight, not that timing: give the peer time enough.
    monkeypatch.setattr(stock_cache, "WAIT_FOR_PEER_S", 10.0)
    # Likewise Redis's 0.25 s timeout: a call that waits longer behind 200 threads counts as
    # Redis down, the breaker opens, and each cache loads on its own (4 loads, seen in CI).
    monkeypatch.setenv("CANGFLOW_REDIS_TIMEOUT_S", "2")
    get_settings.cache_clear()
    sku = world.stocked_sku(50)
    # Four "processes" (caches with their own memory), 50 threads each: 200 readers at once.
    caches = [
        StockCache(db, REDIS_URL, namespace=namespace, local_ttl_s=LOCAL_TTL_S) for _ in range(4)
    ]
    barrier = threading.Barrier(200)

    def read(index: int) -> int:
        barrier.wait()
        return caches[index % 4].available(warehouse=world.warehouse, sku=sku)

    try:
        with ThreadPoolExecutor(max_workers=200) as pool:
            answers = list(pool.map(read, range(200)))
    finally:
        for made in caches:
            made.close()
        get_settings.cache_clear()  # the next test reads the restored timeout
    assert answers == [50] * 200
    loads = sum(
        recorded_metrics.value("cangflow_cache_loads_total", reason=r)
        for r in ("miss", "peer too slow")
    )
    assert 1 <= loads <= 2


def test_a_loader_that_gets_the_lock_after_a_peer_finished_uses_the_peers_value(
    db, world, namespace, recorded_metrics
):
    """The window the stampede test hit by chance (3 loads on a loaded machine): B misses, A
    loads, writes and unlocks, then B takes the free lock. B must read again, not load again."""
    sku = world.stocked_sku(30)
    first, second = (
        StockCache(db, REDIS_URL, namespace=namespace, local_ttl_s=LOCAL_TTL_S) for _ in range(2)
    )
    real_try_lock = second.remote.try_lock

    def peer_finishes_first(*args, **kwargs):
        assert (
            first.available(warehouse=world.warehouse, sku=sku) == 30
        )  # A's whole load, in B's window
        return real_try_lock(*args, **kwargs)

    second.remote.try_lock = peer_finishes_first
    try:
        assert second.available(warehouse=world.warehouse, sku=sku) == 30
    finally:
        first.close()
        second.close()
    assert recorded_metrics.value("cangflow_cache_loads_total", reason="miss") == 1


def test_a_slow_loader_cannot_put_an_old_number_over_a_newer_one(cache, db, world):
    sku = world.stocked_sku(10)
    pair = (world.warehouse, sku)
    seen = cache.remote.read(*pair)  # a loader starts: notes the generation, then reads stock
    with db.session() as s:
        old = load_one(s, *pair)
    with db.session() as s:  # meanwhile a change commits; its invalidation bumps the generation
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=3)
    entry, ttl = cache.entry_for(old, 1.0)
    assert cache.remote.write(*pair, seen.generation, entry, ttl) == SUPERSEDED
    assert cache.available(warehouse=world.warehouse, sku=sku) == 7
    # Two loaders under one generation: the older version loses whatever the order.
    now = cache.remote.read(*pair)
    with db.session() as s:
        newest = load_one(s, *pair)
    stale = type(newest)(True, newest.available + 3, newest.version - 1)
    assert cache.remote.write(*pair, now.generation, cache.entry_for(newest, 1.0)[0], 60) == WRITTEN
    assert cache.remote.write(*pair, now.generation, cache.entry_for(stale, 1.0)[0], 60) == STALE
    assert cache.remote.read(*pair).entry.available == 7


def test_warmup_writes_the_hot_set_and_reads_then_hit_redis(cache, db, world, recorded_metrics):
    skus = [world.stocked_sku(i + 1) for i in range(5)]
    done = warm(cache, [(world.warehouse, sku) for sku in skus] + [(world.warehouse, "UNKNOWN")])
    assert done.keys == 5 and done.written == 5
    assert [cache.available(warehouse=world.warehouse, sku=sku) for sku in skus] == [1, 2, 3, 4, 5]
    assert recorded_metrics.value("cangflow_cache_hits_total", level="l2") == 5
    assert recorded_metrics.value("cangflow_cache_misses_total") == 0


def test_a_warmup_whose_load_overlaps_a_commit_does_not_write_its_old_number(
    cache, other_db, world, monkeypatch
):
    """Warmup loads a slice, and before it writes, a deduction commits in another process and
    the relay invalidates the pair. The warmup's old number must be refused (its generation
    counter read predates the invalidation); the other pair of the slice is written."""
    from warehouse.cache import warmup

    changed, untouched = world.stocked_sku(10), world.stocked_sku(4)
    with other_db.session() as s:  # an earlier change: the pair's hash carries a generation
        stock.deduct(s, warehouse=world.warehouse, sku=changed, qty=1)
    cache.remote.invalidate({(world.warehouse, changed)})
    original = warmup.load_many

    def load_then_a_change_commits(session, pairs):
        loaded = original(session, pairs)
        with other_db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=changed, qty=2)
        cache.remote.invalidate({(world.warehouse, changed)})
        return loaded

    monkeypatch.setattr(warmup, "load_many", load_then_a_change_commits)
    done = warm(cache, [(world.warehouse, changed), (world.warehouse, untouched)])
    assert done.keys == 2 and done.written == 1
    assert cache.remote.read(world.warehouse, changed).entry is None  # the loaded 9 refused
    assert cache.remote.read(world.warehouse, untouched).entry.available == 4
    assert cache.available(warehouse=world.warehouse, sku=changed) == 7


def test_a_warmup_write_that_fails_mid_slice_leaves_no_reply_behind_for_the_next_command(
    cache, world, monkeypatch
):
    """The warmup sends a chunk before reading the reply to the one before. When a reply is an
    error (here a key holding a plain string, which the script cannot read as a hash), the
    replies still queued must go with their connection, not to the next command on it."""
    from warehouse.cache import warmup

    monkeypatch.setattr(warmup, "CHUNK", 2)
    skus = [world.stocked_sku(i + 1) for i in range(5)]
    cache.remote.client.set(cache.keys.available(world.warehouse, skus[0]), "not a hash")
    with pytest.raises(Unavailable, match="WRONGTYPE"):
        warm(cache, [(world.warehouse, sku) for sku in skus])
    for _ in range(3):  # every pooled connection answers its own commands
        assert cache.remote.client.ping() is True
        assert cache.remote.generation_now() >= 0
    cache.remote.client.delete(cache.keys.available(world.warehouse, skus[0]))
    done = warm(cache, [(world.warehouse, sku) for sku in skus])
    assert done.written == 5
    assert [cache.available(warehouse=world.warehouse, sku=sku) for sku in skus] == [1, 2, 3, 4, 5]


def test_hot_set_is_the_most_read_pairs_of_the_last_hour(cache, world):
    from warehouse.cache.warmup import hot_set

    skus = [world.stocked_sku(5) for _ in range(3)]
    for sku, reads in zip(skus, (1, 7, 3), strict=True):
        for _ in range(reads):
            cache.available(warehouse=world.warehouse, sku=sku)
    cache.stats.flush()
    pairs, source = hot_set(cache, 2)
    assert source == "reads" and pairs == [(world.warehouse, skus[1]), (world.warehouse, skus[2])]


# -- outbox relay -------------------------------------------------------------------------------


class Recorder:
    """A consumer that remembers what it was given (an ERP-side consumer would write rows)."""

    name = "test-recorder"
    topics = ("stock.changed",)

    def __init__(self):
        self.seen: list[int] = []

    def handle(self, session, messages):
        self.seen.extend(m.id for m in messages)


def _operation_message(db, operation_id: int):
    with db.session() as s:
        return s.execute(
            text("SELECT id, published_at FROM outbox_message WHERE operation_id = :op"),
            {"op": operation_id},
        ).one_or_none()


def test_relay_killed_between_publish_and_mark_delivers_again_and_applies_once(cache, db, world):
    sku = world.stocked_sku(5)
    with db.session() as s:
        change = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1)
    message_id = _operation_message(db, change.operation_id).id
    recorder = Recorder()
    recorder.name = f"test-recorder-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RuntimeError), db.session() as s:
        outbox.publish_batch(
            s, cache.remote.client, cache.keys, limit=100_000, max_length=1_000_000
        )
        raise RuntimeError("killed after XADD, before COMMIT")
    assert _operation_message(db, change.operation_id).published_at is None
    relay(db, cache)  # publishes again: the stream now holds the message twice
    assert _operation_message(db, change.operation_id).published_at is not None
    first = outbox.consume_batch(db, cache.remote.client, cache.keys, recorder, count=100_000)
    while outbox.consume_batch(
        db, cache.remote.client, cache.keys, recorder, count=100_000
    ).entries:
        pass
    assert recorder.seen.count(message_id) == 1
    assert first.entries > first.handled  # the duplicate entry was read and ignored
    with db.session() as s:
        assert (
            s.execute(
                text(
                    "SELECT count(*) FROM consumed_message WHERE consumer = :c AND message_id = :m"
                ),
                {"c": recorder.name, "m": message_id},
            ).scalar()
            == 1
        )


def test_a_rolled_back_operation_publishes_nothing(cache, db, world):
    sku = world.stocked_sku(5)
    with pytest.raises(RuntimeError), db.session() as s:
        change = stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1)
        raise RuntimeError("the caller fails after the deduction")
    assert _operation_message(db, change.operation_id) is None
    relay(db, cache)
    entries = cache.remote.client.xrange(cache.keys.stream("stock.changed"))
    assert not [e for _, e in entries if e.get("operation_id") == str(change.operation_id)]


def test_two_relays_at_once_publish_each_message_once(cache, db, world):
    for _ in range(30):
        world.stocked_sku(1)
    counts = []
    # Each relay waits after its first batch until the other has one too: both really publish
    # (one must not drain all 30 before the other starts), then they race for the rest.
    both_started = threading.Barrier(2)

    def run():
        total, batches = 0, 0
        while True:
            with db.session() as s:
                batch = outbox.publish_batch(
                    s, cache.remote.client, cache.keys, limit=7, max_length=1_000_000
                )
            batches += 1
            if batches == 1:
                both_started.wait(timeout=30)
            if not batch.claimed:
                break
            total += batch.published
        counts.append(total)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [e["id"] for _, e in cache.remote.client.xrange(cache.keys.stream("stock.changed"))]
    assert len(ids) == len(set(ids)) == sum(counts) and all(counts)


def test_a_failed_publish_is_recorded_and_backed_off(db, world, namespace):
    from warehouse.redis.client import connect_redis
    from warehouse.redis.keys import Keys

    sku = world.stocked_sku(5)
    dead = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    with db.session() as s:
        batch = outbox.publish_batch(s, dead, Keys(namespace), limit=100_000, max_length=1000)
    assert batch.published == 0 and batch.error
    with db.session() as s:
        row = s.execute(
            text(
                "SELECT attempts, last_error, next_attempt_at > now() AS later FROM outbox_message m "
                "JOIN stock_movement mv ON mv.operation_id = m.operation_id "
                "WHERE mv.sku_id = (SELECT id FROM sku WHERE code = :sku)"
            ),
            {"sku": sku},
        ).first()
    assert row.attempts >= 1 and "Connection" in row.last_error and row.later


# -- Redis dying ---------------------------------------------------------------------------------


@pytest.fixture
def own_redis():
    """A Redis server of this test's own, which the test may kill and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        process = None

        def start(self):
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        return
                time.sleep(0.05)
            raise RuntimeError("redis-server did not start")

        def kill(self):
            self.process.kill()
            self.process.wait()

    server = Server()
    server.start()
    yield server
    if server.process.poll() is None:
        server.kill()


def test_reads_survive_redis_dying_and_the_breaker_opens_then_closes(
    db, world, own_redis, recorded_metrics
):
    from warehouse.redis.breaker import CLOSED, OPEN

    skus = [world.stocked_sku(i + 10) for i in range(20)]
    cache = StockCache(db, own_redis.url, namespace="t", local_ttl_s=0.05)
    try:
        warm(cache, [(world.warehouse, sku) for sku in skus])
        own_redis.kill()  # mid-read: the loop below keeps reading
        slowest = 0.0
        for _round in range(3):
            for index, sku in enumerate(skus):
                started = time.monotonic()
                assert cache.available(warehouse=world.warehouse, sku=sku) == index + 10
                slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.06)
        assert slowest < 2.0
        assert cache.breaker.state == OPEN
        assert recorded_metrics.value("cangflow_cache_breaker_open") == 1
        with pytest.raises(Unavailable):
            warm(
                cache, [(world.warehouse, sku) for sku in skus]
            )  # mid-warmup: refused fast, not hung
        own_redis.start()
        cache.breaker.open_seconds = 0.1
        time.sleep(0.2)
        for sku in skus:
            cache.available(warehouse=world.warehouse, sku=sku)
        assert cache.breaker.state == CLOSED
        assert recorded_metrics.value("cangflow_cache_breaker_open") == 0
    finally:
        cache.close()


def test_local_only_cache_needs_no_redis(db, world):
    sku = world.stocked_sku(3)
    cache = StockCache(db, use_redis=False, local_ttl_s=LOCAL_TTL_S)
    try:
        assert cache.available(warehouse=world.warehouse, sku=sku) == 3
        with db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1)
        assert cache.available(warehouse=world.warehouse, sku=sku) == 2
    finally:
        cache.close()


class PausedLoad:
    """Makes the cache's next database load of `pair` stop right after it read, until released:
    the window in which a change commits and is invalidated."""

    def __init__(self, monkeypatch, pair):
        from warehouse.cache import stock_cache

        self.read_done, self.release = threading.Event(), threading.Event()
        original = stock_cache.load_one

        def paused(session, warehouse_code, sku):
            loaded = original(session, warehouse_code, sku)
            if (warehouse_code, sku) == pair and not self.read_done.is_set():
                self.read_done.set()
                assert self.release.wait(30)
            return loaded

        monkeypatch.setattr(stock_cache, "load_one", paused)


def read_across_a_commit(reader: StockCache, db, world, sku: str, qty: int, monkeypatch) -> int:
    """A miss starts loading, pauses after its database read; a deduction of `qty` commits
    through `db` (whose hook invalidates `reader`); the load then finishes. Returns its answer."""
    paused = PausedLoad(monkeypatch, (world.warehouse, sku))
    with ThreadPoolExecutor(1) as executor:
        reading = executor.submit(reader.available, warehouse=world.warehouse, sku=sku)
        assert paused.read_done.wait(30)
        with db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=qty)
        paused.release.set()
        return reading.result(timeout=30)


def test_a_load_that_overlaps_a_commit_does_not_serve_the_old_number_afterwards(
    cache, db, world, monkeypatch
):
    """Read-your-writes in one process: the next read after the commit must say 7, not the
    loaded 10 kept in the in-process level."""
    sku = world.stocked_sku(10)
    assert (
        read_across_a_commit(cache, db, world, sku, 3, monkeypatch) == 10
    )  # it began before the commit
    assert cache.available(warehouse=world.warehouse, sku=sku) == 7


def test_a_local_only_cache_keeps_read_your_writes_across_an_overlapping_load(
    db, world, monkeypatch
):
    sku = world.stocked_sku(10)
    local = StockCache(db, use_redis=False, local_ttl_s=60)  # a long TTL: only invalidation helps
    try:
        assert read_across_a_commit(local, db, world, sku, 4, monkeypatch) == 10
        assert local.available(warehouse=world.warehouse, sku=sku) == 6
    finally:
        local.close()


def test_an_early_refresh_across_an_expiry_cannot_write_its_old_number(
    cache, db, other_db, world, monkeypatch
):
    """A refresh reads generation G from the value's hash and pauses after its database read;
    the hash expires (deleted here) and a change from another process is invalidated. Under a
    per-key counter the new generation would be G again and the refresh's old number would be
    written for the whole Redis TTL; generations from one growing counter refuse it."""
    sku = world.stocked_sku(10)
    pair = (world.warehouse, sku)
    with other_db.session() as s:  # a first change, so the pair's hash carries a generation
        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=1)
    cache.remote.client.delete(cache.keys.available(*pair))  # as after an expiry: a fresh hash
    cache.remote.invalidate({pair})
    assert cache.available(warehouse=world.warehouse, sku=sku) == 9  # loaded and written under G
    seen = cache.remote.read(*pair)
    paused = PausedLoad(monkeypatch, pair)
    with ThreadPoolExecutor(1) as executor:
        refreshing = executor.submit(cache._load, pair, seen.generation, reason="early refresh")
        assert paused.read_done.wait(30)
        cache.remote.client.delete(cache.keys.available(*pair))  # the hash expires
        with other_db.session() as s:
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2)
        cache.remote.invalidate({pair})  # the relay's invalidation of that change
        paused.release.set()
        refreshing.result(timeout=30)
    assert cache.remote.read(*pair).entry is None  # the old 9 was refused
    cache.forget_local({pair})
    assert cache.available(warehouse=world.warehouse, sku=sku) == 7


def test_the_relay_is_one_stable_member_and_idle_members_without_pending_entries_are_removed(
    cache, db, world
):
    """Each relay process used to join the group as host-pid: a run every minute left 1,440
    members a day. Now it is one member by name, and the prune step removes members idle with
    nothing pending (one holding entries keeps them until they are taken over)."""
    import socket

    stream, group = cache.keys.stream(CacheInvalidator.topics[0]), CacheInvalidator.name
    world.receive(world.stocked_sku(5), 1)
    relay(db, cache)
    relay(db, cache)  # a second run: the same member
    client = cache.remote.client
    names = {m["name"] for m in client.xinfo_consumers(stream, group)}
    assert names == {outbox.member()} == {socket.gethostname()}
    # Members left by the old naming: one idle with nothing pending, one holding an entry.
    client.xgroup_createconsumer(stream, group, "old-host-111")
    world.receive(world.skus[-1], 1)
    with db.session() as s:
        outbox.publish_batch(s, client, cache.keys, limit=100, max_length=10_000)
    client.xreadgroup(
        group, "old-host-222", {stream: ">"}, count=1
    )  # delivered, never acknowledged
    removed = outbox.prune_idle_members(
        client, cache.keys, CacheInvalidator(cache.remote), idle_ms=0
    )
    assert removed == ["old-host-111"]
    assert {m["name"] for m in client.xinfo_consumers(stream, group)} == {
        outbox.member(),
        "old-host-222",
    }
