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
    """Per chunk: the generations (one call), then, for all chunks, one database load, then
    the guarded writes (one call per chunk)."""
    if cache.remote is None:
        raise RuntimeError("warming needs Redis; this cache is local-only")
    started = time.perf_counter()
    keys = [cache.keys.available(warehouse, sku) for warehouse, sku in pairs]
    generations: list[str] = []
    for start in range(0, len(keys), CHUNK):
        generations += cache.remote.generations(keys[start:start + CHUNK])
    loading = time.perf_counter()
    with cache.db.session() as session:
        loaded = load_many(session, pairs)
    # XFetch weighs early refresh by how long one load of the key takes: a single load, not
    # this batch's per-key share, is what a refresh would cost.
    load_ms = max((time.perf_counter() - loading) * 1000, 1.0)
    chosen = [i for i, pair in enumerate(pairs) if pair in loaded]
    written = refused = 0
    for start in range(0, len(chosen), CHUNK):
        part = chosen[start:start + CHUNK]
        built = [cache.entry_for(loaded[pairs[i]], load_ms) for i in part]
        outcomes = cache.remote.write_many([keys[i] for i in part], [generations[i] for i in part],
                                           [entry for entry, _ in built], [ttl for _, ttl in built])
        written += sum(1 for o in outcomes if o == WRITTEN)
        refused += sum(1 for o in outcomes if o == STALE)
    return Warmed(source, len(chosen), written, refused, time.perf_counter() - started)
