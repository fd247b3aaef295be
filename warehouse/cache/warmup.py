"""Warming the cache: the hot set (the most read pairs of the last hour, or, with no
statistics yet, the most moved pairs of the ledger's last day), loaded from PostgreSQL in one
statement and written to Redis in pipelines with jittered TTLs and version-guarded writes."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text

from warehouse.cache.load import load_many
from warehouse.cache.remote import STALE, WRITTEN, now_ms, pack
from warehouse.cache.stock_cache import StockCache
from warehouse.history import calendar

CHUNK = 1000
LOAD_SLICE = 10_000

_MOST_MOVED = text("""
SELECT w.code AS warehouse, s.code AS sku
FROM (SELECT warehouse_id, sku_id, count(*) AS moves FROM stock_movement
      WHERE occurred_at >= :since GROUP BY 1, 2 ORDER BY 3 DESC LIMIT :top) AS hot
JOIN warehouse w ON w.id = hot.warehouse_id JOIN sku s ON s.id = hot.sku_id
ORDER BY hot.moves DESC
""")


@dataclass(frozen=True)
class Warmed:
    source: str  # "reads" (last hour's statistics) or "ledger" (most moved, last day)
    keys: int
    written: int
    refused_stale: int
    seconds: float


def hot_set(cache: StockCache, top: int) -> tuple[list[tuple[str, str]], str]:
    pairs = cache.stats.top(top) if cache.remote is not None else []
    if pairs:
        return pairs, "reads"
    with cache.db.session() as session:
        # The last day by the jobs' clock (CANGFLOW_CLOCK in a replay), not the server's.
        since = calendar.now() - timedelta(days=1)
        return [
            (r.warehouse, r.sku) for r in session.execute(_MOST_MOVED, {"top": top, "since": since})
        ], "ledger"


def warm(cache: StockCache, pairs: list[tuple[str, str]], *, source: str = "given") -> Warmed:
    """In slices of LOAD_SLICE pairs: a loader thread reads the namespace's generation counter,
    then the slice's stock (one statement), and packs the slice's writes, while this thread
    writes the slice before it (one guarded Lua call per CHUNK keys). Packing in the loader
    keeps Redis busy: in this thread it put about 0.17 s of Python (profiled, 100k keys)
    between the Lua calls, while Redis waited. Reading the counter before the stock is what
    makes a write refuse when a change committed in between: its invalidation drew a higher
    generation (see `remote`)."""
    cache.required_remote("warming")
    started = time.perf_counter()
    slices = [pairs[i : i + LOAD_SLICE] for i in range(0, len(pairs), LOAD_SLICE)]
    written = refused = keys_warmed = 0
    if not slices:
        return Warmed(source, 0, 0, 0, 0.0)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cangflow-warmup") as loader:
        pending = loader.submit(_prepare, cache, slices[0])
        for following in [*slices[1:], None]:
            prepared = pending.result()
            if following is not None:
                pending = loader.submit(_prepare, cache, following)
            done, stale, count = _write(cache, prepared)
            written, refused, keys_warmed = written + done, refused + stale, keys_warmed + count
    return Warmed(source, keys_warmed, written, refused, time.perf_counter() - started)


def _prepare(
    cache: StockCache, part: list[tuple[str, str]]
) -> list[tuple[list[str], int, list[str]]]:
    """One slice, ready to write: its chunks of (keys, generation, packed arguments). Runs in
    the loader thread, so packing a slice overlaps the writes of the slice before."""
    assert cache.remote is not None  # `warm` refused a local-only cache
    generation = cache.remote.generation_now()
    loading = time.perf_counter()
    with cache.db.session() as session:
        loaded = load_many(session, part)
    # XFetch weighs early refresh by how long one load of the key takes: a single load, not
    # this batch's per-key share, is what a refresh would cost.
    load_ms = max((time.perf_counter() - loading) * 1000 / max(len(part) / CHUNK, 1), 1.0)
    chosen = [pair for pair in part if pair in loaded]
    base_s, jitter = cache.settings.cache_redis_ttl_s, cache.settings.cache_ttl_jitter
    # The entries' expiry counts from here, up to one slice's writes (a fraction of a second)
    # before Redis's PEXPIRE starts: an entry is refreshed that much early, never kept late.
    now = now_ms()
    chunks = []
    for start in range(0, len(chosen), CHUNK):
        keys, packed = [], []
        for pair in chosen[start : start + CHUNK]:  # the entry StockCache.entry_for builds
            value = loaded[pair]
            ttl_ms = max(1, int(base_s * (1 + random.uniform(-jitter, jitter)) * 1000))
            keys.append(cache.keys.available(*pair))
            packed.append(pack(value.version, value.available, load_ms, now + ttl_ms, ttl_ms))
        chunks.append((keys, generation, packed))
    return chunks


def _write(
    cache: StockCache, chunks: list[tuple[list[str], int, list[str]]]
) -> tuple[int, int, int]:
    assert cache.remote is not None  # `warm` refused a local-only cache
    written = refused = 0
    for outcomes in cache.remote.write_many(chunks):
        written += outcomes.count(WRITTEN)
        refused += outcomes.count(STALE)
    return written, refused, sum(len(keys) for keys, _, _ in chunks)
