"""Ids of master data already looked up, per Database.

Ids and codes of warehouses, locations, SKUs and lots never change and rows are never deleted,
so a resolved id can be reused by every later transaction, but only the id of a row that
certainly exists. So an id goes in either once the transaction that read it committed
(`warehouse.db.engine` promotes a Session's lookups after commit and drops them after rollback:
a rolled-back `ensure_sku` cannot leave behind the id of a row that does not exist), or at once
when it was read by the first statement of a transaction, which sees only rows other
transactions committed (`warehouse.stock.resolve.looked_up`, the direct stock path).
"""

from __future__ import annotations

import threading


class IdCache:
    def __init__(self, limit: int = 200_000):
        self._ids: dict[tuple, int] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def get(self, key: tuple) -> int | None:
        return self._ids.get(key)

    def update(self, found: dict[tuple, int]) -> None:
        with self._lock:
            if len(self._ids) + len(found) > self._limit:
                self._ids.clear()  # a crude bound: master data far larger than this is rare
            self._ids.update(found)
