"""The cache's outbox consumer: every stock change message invalidates the (warehouse, sku)
pairs it touched, in Redis and in this process. Invalidation is idempotent, so a batch handled
again after a failure does no harm; a Redis failure raises, and the batch comes back."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from warehouse import Database
from warehouse.cache.remote import RemoteCache
from warehouse.cache.stock_cache import StockCache
from warehouse.outbox.consume import Message
from warehouse.outbox.relay import consume_due
from warehouse.stock.statements import STOCK_TOPIC


class CacheInvalidator:
    name = "cache-invalidator"
    topics: tuple[str, ...] = (STOCK_TOPIC,)  # the `Consumer` protocol's type

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


@dataclass(frozen=True)
class Invalidated:
    handled: int  # stock change messages handled
    redelivered: int
    pairs_invalidated: int


def invalidate_due(db: Database, cache: StockCache, *, count: int, max_batches: int) -> Invalidated:
    """One round of the cache's consumer over what the relay published (`consume_due`)."""
    remote = cache.required_remote("invalidating")
    consumer = CacheInvalidator(remote, cache)
    done = consume_due(
        db, remote.client, cache.keys, consumer, count=count, max_batches=max_batches
    )
    return Invalidated(done.handled, done.redelivered, consumer.invalidated)
