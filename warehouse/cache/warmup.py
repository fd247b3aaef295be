"""Warming the cache: the hot set (the most read pairs of the last hour, or, with no
statistics yet, the most moved pairs of the ledger's last day), loaded from PostgreSQL in one
statement and written to Redis in pipelines with jittered TTLs and version-guarded writes."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text

from .load import load_many
from .remote import STALE, WRITTEN
from .stock_cache import StockCache

CHUNK = 1000

_MOST_MOVED = text("""
SELECT w.code AS warehouse, s.code AS sku
FROM (SELECT warehouse_id, sku_id, count(*) AS moves FROM stock_movement
      WHERE occurred_at >= now() - interval '1 day' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT :top) AS hot
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
        return [(r.warehouse, r.sku) for r in session.execute(_MOST_MOVED, {"top": top})], "ledger"


def warm(cache: StockCache, pairs: list[tuple[str, str]], *, source: str = "given") -> Warmed:
    if cache.remote is None:
        raise RuntimeError("warming needs Redis; this cache is local-only")
    started = time.perf_counter()
    generations = {}
    for start in range(0, len(pairs), CHUNK):
        generations.update(cache.remote.generations(pairs[start:start + CHUNK]))
    with cache.db.session() as session:
        loaded = load_many(session, pairs)
    load_ms = (time.perf_counter() - started) * 1000 / max(len(loaded), 1)
    rows = []
    for (warehouse, sku), value in loaded.items():
        entry, ttl_s = cache.entry_for(value, load_ms)
        rows.append((warehouse, sku, generations[(warehouse, sku)], entry, ttl_s))
    written = refused = 0
    for start in range(0, len(rows), CHUNK):
        outcomes = cache.remote.write_many(rows[start:start + CHUNK])
        written += sum(1 for o in outcomes if o == WRITTEN)
        refused += sum(1 for o in outcomes if o == STALE)
    return Warmed(source, len(rows), written, refused, time.perf_counter() - started)
