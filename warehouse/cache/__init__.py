"""The two-level stock cache (in-process + Redis) in front of PostgreSQL."""

from warehouse.cache.remote import Entry, RemoteCache, Unavailable
from warehouse.cache.stock_cache import StockCache
from warehouse.redis.keys import Keys

__all__ = ["Entry", "Keys", "RemoteCache", "StockCache", "Unavailable"]
