"""The cache's outbox consumer: every stock change message invalidates the (warehouse, sku)
pairs it touched, in Redis and in this process. Invalidation is idempotent, so a batch handled
again after a failure does no harm; a Redis failure raises, and the batch comes back."""

from __future__ import annotations

from sqlalchemy.orm import Session

from warehouse.cache.remote import RemoteCache
from warehouse.cache.stock_cache import StockCache
from warehouse.outbox.consume import Message
from warehouse.stock.statements import STOCK_TOPIC


class CacheInvalidator:
    name = "cache-invalidator"
    topics = (STOCK_TOPIC,)

    def __init__(self, remote: RemoteCache, local: StockCache | None = None):
        self.remote = remote
        self.local = local
        self.invalidated = 0

    def handle(self, session: Session, messages: list[Message]) -> None:
        pairs = {
            (m.payload["warehouse"], item["sku"])
            for m in messages
            for item in m.payload.get("items") or []
        }
        if self.local is not None:
            self.local.forget_local(pairs)
        self.remote.invalidate(pairs)  # raises Unavailable: not recorded, retried next batch
        self.invalidated += len(pairs)
