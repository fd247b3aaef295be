"""Access statistics in Redis, cheaply: reads are counted in process and flushed in one
pipeline every second (or every `flush_every` reads) by a background thread, so no read waits
for it; per UTC hour:
- `reads:<hour>`, a sorted set of reads per (warehouse, sku), so "most read in the last hour"
  is one ZUNION;
- `hits:<hour>`, a hash of l1 / l2 / miss counts, the hit rate before and after a warmup."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from warehouse.cache.remote import RemoteCache, Unavailable
from warehouse.redis.keys import Keys

KEEP_S = 3 * 3600


@dataclass(frozen=True)
class HitRates:
    """Every process's cache reads, as they counted them in Redis, by UTC hour."""

    previous_hour: float | None  # None: no reads
    previous_hour_reads: int
    this_hour: float | None
    this_hour_reads: int

    @property
    def latest(self) -> float | None:
        """This hour's so far, else the last one's."""
        return self.this_hour if self.this_hour is not None else self.previous_hour


class AccessStats:
    def __init__(
        self,
        remote: RemoteCache | None,
        keys: Keys,
        *,
        flush_every: int = 1000,
        flush_s: float = 1.0,
    ):
        self.remote = remote
        self.keys = keys
        self.flush_every = flush_every
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self._reads: Counter = Counter()
        self._levels: Counter = Counter()
        self._pending = 0
        self._last = time.monotonic()
        self._wake = threading.Event()
        self._stopped = False
        self._flusher: threading.Thread | None = None

    def count(self, warehouse: str, sku: str, level: str) -> None:
        with self._lock:
            self._reads[(warehouse, sku)] += 1
            self._levels[level] += 1
            self._pending += 1
            if self._flusher is None and self.remote is not None and not self._stopped:
                self._flusher = threading.Thread(
                    target=self._run, name="cangflow-cache-stats", daemon=True
                )
                self._flusher.start()
            if self._pending >= self.flush_every:
                self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if not self._stopped:
                self.flush()

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            reads, levels = self._reads, self._levels
            self._reads, self._levels, self._pending, self._last = (
                Counter(),
                Counter(),
                0,
                time.monotonic(),
            )
        remote = self.remote
        if remote is None or not reads:
            return
        hour = datetime.now(UTC)
        reads_key, hits_key = self.keys.reads(hour), self.keys.hits(hour)

        def send() -> None:
            pipe = remote.client.pipeline(transaction=False)
            for (warehouse, sku), count in reads.items():
                pipe.zincrby(reads_key, count, self.keys.member(warehouse, sku))
            for level, count in levels.items():
                pipe.hincrby(hits_key, level, count)
            pipe.expire(reads_key, KEEP_S)
            pipe.expire(hits_key, KEEP_S)
            pipe.execute()

        # Statistics are best effort: losing a second of counts is fine.
        with contextlib.suppress(Unavailable):
            remote.call(send)

    def top(self, count: int, *, now: datetime | None = None) -> list[tuple[str, str]]:
        """The most read pairs over the last hour (this hour's and the previous hour's counts)."""
        remote = self.remote
        if remote is None:
            return []
        now = now or datetime.now(UTC)
        hours = [self.keys.reads(now), self.keys.reads(now - timedelta(hours=1))]
        scratch = f"{self.keys.namespace}:reads:top:{secrets.token_hex(4)}"

        def top_of_union() -> list[str]:
            pipe = remote.client.pipeline(transaction=False)
            pipe.zunionstore(scratch, hours)
            pipe.zrevrange(scratch, 0, count - 1)
            pipe.delete(scratch)
            return pipe.execute()[1]

        return [self.keys.parse_member(m) for m in remote.call(top_of_union)]

    def hit_rates(self, now: datetime) -> HitRates:
        """The hour before `now`'s and `now`'s own, after flushing this process's counts."""
        self.flush()
        before, before_reads = self.hit_rate(now - timedelta(hours=1))
        current, current_reads = self.hit_rate(now)
        return HitRates(before, before_reads, current, current_reads)

    def hit_rate(self, hour: datetime) -> tuple[float | None, int]:
        """(l1 + l2 hits) / reads in that UTC hour, and the number of reads."""
        if self.remote is None:
            return None, 0
        counts = self.remote.call(self.remote.client.hgetall, self.keys.hits(hour))
        l1, l2, miss = (int(counts.get(level, 0)) for level in ("l1", "l2", "miss"))
        total = l1 + l2 + miss
        return ((l1 + l2) / total if total else None), total
