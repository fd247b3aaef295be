"""StockCache: `available(warehouse=, sku=)` read through in-process memory, then Redis, then
PostgreSQL.

- In-process (L1): a size-bounded LRU with a short TTL (`cache_local_ttl_s`, default 1 s);
  other processes' changes reach it by expiry, so it bounds how stale a read can be.
- Redis (L2): values carry the pair's version; writes are version- and generation-guarded
  (see `remote`), TTLs jittered so keys loaded together do not expire together, and a hot key
  is refreshed early by one reader with the XFetch rule (Vattani et al., VLDB 2015).
- A miss is loaded once: threads of a process queue on a per-key lock, processes on a Redis
  lock that expires; the others wait briefly for the value, then load themselves.
- Unknown pairs are cached briefly (negative entries), so a bad code cannot hammer the database.
- Redis trouble never takes reads down: calls time out fast, a circuit breaker stops asking
  Redis after repeated failures, and reads go to PostgreSQL until a probe succeeds.
- Invalidation: after a commit through the same `Database`, the touched pairs are dropped from
  L1 and invalidated in Redis (best effort); the outbox relay's cache consumer does the same for
  every stock change, retrying until it succeeds (the guaranteed path).

Staleness bound: once a change is committed and the relay has run, every process reads it
within `cache_local_ttl_s` (1 s by default; never above 5 s). Within the process that committed
it, the next read returns it (read-your-writes): a read or load that began before a local
invalidation of its pair never puts its value into the in-process level afterwards (an
invalidation epoch per pair), nor does a load whose Redis write was refused as superseded.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections import OrderedDict

from cachetools import TTLCache

from warehouse.cache.load import Loaded, load_one
from warehouse.cache.remote import WRITTEN, Entry, RemoteCache, Unavailable, now_ms
from warehouse.cache.stats import AccessStats
from warehouse.db.engine import Database
from warehouse.errors import UnknownItem
from warehouse.metrics import sinks as metrics
from warehouse.redis.breaker import CircuitBreaker
from warehouse.redis.client import connect_redis
from warehouse.redis.keys import Keys
from warehouse.settings import get_settings

XFETCH_BETA = 1.0
LOCK_STRIPES = 256
WAIT_FOR_PEER_S = 1.0
WAIT_STEP_S = 0.01
INVALIDATIONS_KEPT = (
    100_000  # per-pair invalidation epochs remembered; older ones fold into one floor
)


class StockCache:
    def __init__(
        self,
        db: Database,
        redis_url: str | None = None,
        *,
        use_redis: bool = True,
        namespace: str | None = None,
        local_ttl_s: float | None = None,
    ):
        settings = get_settings()
        self.db = db
        self.settings = settings
        self.keys = Keys(namespace or settings.redis_namespace)
        self.local_ttl_s = local_ttl_s if local_ttl_s is not None else settings.cache_local_ttl_s
        self._local: TTLCache = TTLCache(maxsize=settings.cache_local_size, ttl=self.local_ttl_s)
        self._local_lock = threading.Lock()
        # Local invalidations: an epoch that grows with each, and the epoch of each pair's last
        # one (older records folded into `_forgotten_upto`, which then stands for all of them).
        self._epoch = 0
        self._invalidated: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._forgotten_upto = 0
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self.breaker = CircuitBreaker(
            failures_to_open=settings.breaker_failures,
            open_seconds=settings.breaker_open_s,
            on_change=_breaker_changed,
        )
        self.remote = (
            RemoteCache(connect_redis(redis_url), self.keys, self.breaker) if use_redis else None
        )
        self.stats = AccessStats(self.remote, self.keys)
        self._unhook = db.on_stock_committed(self.invalidate)

    def required_remote(self, purpose: str) -> RemoteCache:
        """The Redis level, for work that means nothing without it (warmup, relay)."""
        if self.remote is None:
            raise RuntimeError(
                f"{purpose} needs Redis (CANGFLOW_REDIS_URL); this cache is local-only"
            )
        return self.remote

    # -- reading -------------------------------------------------------------------------
    def available(self, *, warehouse: str, sku: str) -> int:
        """on_hand - reserved of `sku` in `warehouse`, summed over bins and lots."""
        pair = (warehouse, sku)
        entry = self._local_get(pair)
        if entry is not None:
            return self._answer(pair, entry, "l1")
        if self.remote is not None:
            try:
                since = self._local_epoch()
                read = self.remote.read(warehouse, sku)
                if read.entry is not None:
                    if _refresh_early(read.entry):
                        return self._answer(
                            pair, self._load(pair, read.generation, reason="early refresh"), "l2"
                        )
                    self._local_put(pair, read.entry, since)
                    return self._answer(pair, read.entry, "l2")
            except Unavailable:
                return self._answer(pair, self._load_without_redis(pair), "miss")
        return self._answer(pair, self._load_once(pair), "miss")

    def _answer(self, pair: tuple[str, str], entry: Entry, level: str) -> int:
        if level == "miss":
            metrics.current().inc("cangflow_cache_misses_total")
        else:
            metrics.current().inc("cangflow_cache_hits_total", level=level)
        self.stats.count(pair[0], pair[1], level)
        if entry.available is None:
            raise UnknownItem(
                "warehouse or sku",
                f"{pair[0]}/{pair[1]}",
                context="(no such warehouse and SKU pair)",
            )
        return entry.available

    def _load_once(self, pair: tuple[str, str]) -> Entry:
        """A miss: one loader per key in this process (stripe lock), one across processes
        (Redis lock); everyone else waits a moment for its value."""
        with self._stripes[hash(pair) % LOCK_STRIPES]:
            entry = self._local_get(pair)
            if entry is not None:
                return entry
            if self.remote is None:
                return self._load(pair, None, reason="miss")
            try:
                since = self._local_epoch()
                read = self.remote.read(*pair)
                if read.entry is not None:
                    self._local_put(pair, read.entry, since)
                    return read.entry
                token = self.remote.try_lock(*pair, ttl_ms=int(WAIT_FOR_PEER_S * 2000))
                if token is None:
                    waited = self._wait_for_peer(pair)
                    if waited is not None:
                        return waited
                    return self._load(pair, None, reason="peer too slow")
                try:
                    # Read again under the lock: a peer may have written and unlocked between
                    # our read and our lock, and loading again would be the stampede's second load.
                    since = self._local_epoch()
                    read = self.remote.read(*pair)
                    if read.entry is not None:
                        self._local_put(pair, read.entry, since)
                        return read.entry
                    return self._load(pair, read.generation, reason="miss")
                finally:
                    self.remote.unlock(*pair, token)
            except Unavailable:
                return self._load_without_redis(pair)

    def _wait_for_peer(self, pair: tuple[str, str]) -> Entry | None:
        assert self.remote is not None  # only `_load_once` calls this, on its Redis path
        deadline = time.monotonic() + WAIT_FOR_PEER_S
        while time.monotonic() < deadline:
            time.sleep(WAIT_STEP_S)
            since = self._local_epoch()
            read = self.remote.read(*pair)
            if read.entry is not None:
                self._local_put(pair, read.entry, since)
                return read.entry
        return None

    def _load(self, pair: tuple[str, str], generation: str | None, *, reason: str) -> Entry:
        """Read PostgreSQL; write Redis (under `generation`, when given) and L1. The caller gets
        what was read; the in-process level keeps it only if nothing newer was seen meanwhile."""
        since = self._local_epoch()
        started = time.perf_counter()
        with self.db.session() as session:
            loaded = load_one(session, *pair)
        metrics.current().inc("cangflow_cache_loads_total", reason=reason)
        load_ms = (time.perf_counter() - started) * 1000
        entry, ttl_s = self.entry_for(loaded, load_ms)
        if generation is not None and self.remote is not None:
            try:
                if self.remote.write(pair[0], pair[1], generation, entry, ttl_s) != WRITTEN:
                    return entry  # superseded (invalidated since) or stale (a newer value is there)
            except Unavailable:
                pass
        self._local_put(pair, entry, since)
        return entry

    def _load_without_redis(self, pair: tuple[str, str]) -> Entry:
        metrics.current().inc("cangflow_cache_fallbacks_total")
        with self._stripes[hash(pair) % LOCK_STRIPES]:
            entry = self._local_get(pair)
            return (
                entry if entry is not None else self._load(pair, None, reason="redis unavailable")
            )

    def entry_for(self, loaded: Loaded, load_ms: float) -> tuple[Entry, float]:
        """The cache entry for a loaded value, with its jittered TTL (shorter when unknown)."""
        base = (
            self.settings.cache_redis_ttl_s if loaded.known else self.settings.cache_negative_ttl_s
        )
        ttl_s = base * (
            1 + random.uniform(-self.settings.cache_ttl_jitter, self.settings.cache_ttl_jitter)
        )
        entry = Entry(
            loaded.available if loaded.known else None,
            loaded.version,
            load_ms,
            now_ms() + ttl_s * 1000,
        )
        return entry, ttl_s

    # -- in-process level ----------------------------------------------------------------------
    def _local_get(self, pair: tuple[str, str]) -> Entry | None:
        with self._local_lock:
            return self._local.get(pair)

    def _local_epoch(self) -> int:
        with self._local_lock:
            return self._epoch

    def _local_put(self, pair: tuple[str, str], entry: Entry, since: int) -> None:
        """Keep `entry`, read at local epoch `since`, unless the pair was invalidated after that."""
        with self._local_lock:
            if self._invalidated.get(pair, self._forgotten_upto) > since:
                return
            current = self._local.get(pair)
            if current is None or current.version <= entry.version:
                self._local[pair] = entry

    # -- invalidation ---------------------------------------------------------------------------
    def invalidate(self, pairs: set[tuple[str, str]]) -> None:
        """Forget `pairs` here and in Redis (best effort: a Redis failure is left to the relay)."""
        self.forget_local(pairs)
        if self.remote is not None and pairs:
            with contextlib.suppress(Unavailable):
                self.remote.invalidate(set(pairs))

    def forget_local(self, pairs: set[tuple[str, str]]) -> None:
        with self._local_lock:
            self._epoch += 1
            for pair in pairs:
                self._local.pop(pair, None)
                self._invalidated[pair] = self._epoch
                self._invalidated.move_to_end(pair)
            while len(self._invalidated) > INVALIDATIONS_KEPT:
                _, epoch = self._invalidated.popitem(last=False)
                self._forgotten_upto = max(self._forgotten_upto, epoch)

    def close(self) -> None:
        self.stats.close()
        self._unhook()
        if self.remote is not None:
            self.remote.client.close()


def _refresh_early(entry: Entry) -> bool:
    """XFetch: refresh before expiry with a probability that grows as expiry nears and with
    how long a load takes, so one reader refreshes a hot key while the rest keep reading."""
    return (
        now_ms() - entry.load_ms * XFETCH_BETA * math.log(random.random() or 1e-12)
        >= entry.expires_ms
    )


def _breaker_changed(state: str) -> None:
    metrics.current().inc("cangflow_cache_breaker_transitions_total", state=state)
    metrics.current().set("cangflow_cache_breaker_open", 0 if state == "closed" else 1)
