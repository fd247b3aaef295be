"""Codes to ids in one round trip, before any lock is taken; unknown codes are named.

Ids of master data never change and rows are never deleted, so a Database keeps the ids it has
seen in an `IdCache` (see `warehouse.db.id_cache`) and skips the round trip next time.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.db.id_cache import IdCache
from warehouse.errors import UnknownItem


@dataclass(frozen=True)
class Item:
    sku: str
    location: str | None = None
    lot: str | None = None


@dataclass(frozen=True)
class Resolved:
    warehouse_id: int
    skus: dict[str, int]
    locations: dict[str, int]
    lots: dict[tuple[str, str], int]

    def ids(self, item: Item) -> tuple[int, int | None, int | None]:
        return (
            self.skus[item.sku],
            None if item.location is None else self.locations[item.location],
            None if item.lot is None else self.lots[(item.sku, item.lot)],
        )


def flush_pending(session: Session) -> None:
    """Stock SQL is text, which the ORM does not autoflush for: a caller's pending ORM changes,
    such as a bin just added, must reach the database before codes are looked up or stock moves."""
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()


def _keys(warehouse: str, skus, locations, lot_pairs) -> dict[tuple, tuple]:
    """Cache key -> (kind, lookup key in Resolved) for everything a request names."""
    keys: dict[tuple, tuple] = {("warehouse", warehouse): ("warehouse", warehouse)}
    keys.update({("sku", sku): ("sku", sku) for sku in skus})
    keys.update({("location", warehouse, code): ("location", code) for code in locations})
    keys.update({("lot", sku, code): ("lot", (sku, code)) for sku, code in lot_pairs})
    return keys


_RESOLVE = text(
    """
    SELECT 'warehouse' AS kind, w.code AS code, NULL AS sku, w.id FROM warehouse w WHERE w.code = :warehouse
    UNION ALL
    SELECT 'sku', s.code, NULL, s.id FROM sku s WHERE s.code = ANY (CAST(:skus AS text[]))
    UNION ALL
    SELECT 'location', l.code, NULL, l.id FROM location l JOIN warehouse w ON w.id = l.warehouse_id
    WHERE w.code = :warehouse AND l.code = ANY (CAST(:locations AS text[]))
    UNION ALL
    SELECT 'lot', lot.code, s.code, lot.id FROM lot JOIN sku s ON s.id = lot.sku_id
    JOIN unnest(CAST(:lot_skus AS text[]), CAST(:lot_codes AS text[])) AS want(sku, code)
      ON want.sku = s.code AND want.code = lot.code
    """
)
# psycopg's placeholders, rendered once: both paths run the lookup on the driver, prepared.
_RESOLVE_RENDERED = str(_RESOLVE.compile(dialect=PGDialect_psycopg()))


def resolve(
    session: Session, warehouse: str, items: list[Item], locations: tuple[str, ...] = ()
) -> Resolved:
    """Ids of `warehouse` and of every SKU, location and lot that `items` name, plus the extra
    `locations` (a count of an empty bin names a bin but no item). UnknownItem names the first
    code not found."""
    flush_pending(session)
    skus, wanted_locations, lot_pairs = _wanted(items, locations)
    cache: IdCache | None = session.info.get("id_cache")
    if cache is not None:
        hit = cached(cache, warehouse, items, locations)
        if hit is not None:
            return hit
    found = _from_database(raw_sql.driver(session), warehouse, skus, wanted_locations, lot_pairs)
    _refuse_unknown(found, warehouse, skus, wanted_locations, lot_pairs)
    if cache is not None:  # promoted to the cache when this transaction commits
        keys = _keys(warehouse, skus, wanted_locations, lot_pairs)
        session.info.setdefault("pending_ids", {}).update(_ids(found, keys))
    return _resolved(found, warehouse)


def cached(
    cache: IdCache, warehouse: str, items: list[Item], locations: tuple[str, ...] = ()
) -> Resolved | None:
    """What `resolve` answers, from `cache` alone; None when one id is missing (the direct
    stock path then looks them up itself, `looked_up`)."""
    keys = _keys(warehouse, *_wanted(items, locations))
    found = _from_cache(cache, keys)
    return None if found is None else _resolved(found, warehouse)


def _wanted(
    items: list[Item], locations: tuple[str, ...] = ()
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The SKU codes, bin codes (the items' and the extra `locations`) and (sku, lot) pairs
    that `items` name, each once and sorted."""
    return (
        sorted({item.sku for item in items}),
        sorted({item.location for item in items if item.location is not None} | set(locations)),
        sorted({(item.sku, item.lot) for item in items if item.lot is not None}),
    )


def _ids(found: dict[str, dict], keys: dict[tuple, tuple]) -> dict[tuple, int]:
    """The cache's entries for `keys`, from what the database `found` (every key found)."""
    return {key: found[kind][name] for key, (kind, name) in keys.items()}


def _resolved(found: dict[str, dict], warehouse: str) -> Resolved:
    return Resolved(found["warehouse"][warehouse], found["sku"], found["location"], found["lot"])


def _empty() -> dict[str, dict]:
    return {"warehouse": {}, "sku": {}, "location": {}, "lot": {}}


def _from_cache(cache: IdCache, keys: dict[tuple, tuple]) -> dict[str, dict] | None:
    """Every id from the cache, or None when any is missing (then all come from the database)."""
    cached = {key: cache.get(key) for key in keys}
    if any(ident is None for ident in cached.values()):
        return None
    found = _empty()
    for key, (kind, name) in keys.items():
        found[kind][name] = cached[key]
    return found


def looked_up(
    connection: psycopg.Connection, cache: IdCache, warehouse: str, items: list[Item]
) -> Resolved | None:
    """What `resolve` answers, looked up on a direct connection before its transaction writes
    anything (so every row it finds was committed, and is never deleted: its id goes into
    `cache` at once); None when a code names nothing (the Session path then names it)."""
    wanted = _wanted(items)
    found = _from_database(connection, warehouse, *wanted)
    keys = _keys(warehouse, *wanted)
    if any(name not in found[kind] for kind, name in keys.values()):
        return None
    cache.update(_ids(found, keys))
    return _resolved(found, warehouse)


def _from_database(
    connection: psycopg.Connection,
    warehouse: str,
    skus: list[str],
    locations: list[str],
    lot_pairs: list[tuple[str, str]],
) -> dict[str, dict]:
    rows = raw_sql.fetchall_on(
        connection,
        _RESOLVE_RENDERED,
        {
            "warehouse": warehouse,
            "skus": skus,
            "locations": locations,
            "lot_skus": [sku for sku, _ in lot_pairs],
            "lot_codes": [lot for _, lot in lot_pairs],
        },
    )
    found = _empty()
    for kind, code, sku, ident in rows:
        found[kind][(sku, code) if kind == "lot" else code] = ident
    return found


def _refuse_unknown(
    found: dict[str, dict],
    warehouse: str,
    skus: list[str],
    locations: list[str],
    lot_pairs: list[tuple[str, str]],
) -> None:
    """UnknownItem for the first code the database does not hold, warehouse first."""
    if warehouse not in found["warehouse"]:
        raise UnknownItem("warehouse", warehouse)
    missing_sku = next((sku for sku in skus if sku not in found["sku"]), None)
    if missing_sku is not None:
        raise UnknownItem("sku", missing_sku)
    missing_location = next((code for code in locations if code not in found["location"]), None)
    if missing_location is not None:
        raise UnknownItem("location", missing_location, context=f"in warehouse {warehouse!r}")
    missing_lot = next((pair for pair in lot_pairs if pair not in found["lot"]), None)
    if missing_lot is not None:
        raise UnknownItem("lot", missing_lot[1], context=f"of sku {missing_lot[0]!r}")
