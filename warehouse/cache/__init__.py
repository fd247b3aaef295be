"""The two-level stock cache (in-process + Redis) in front of PostgreSQL."""

from .keys import Keys
from .remote import Entry, RemoteCache, Unavailable
from .stock_cache import StockCache

__all__ = ["Entry", "Keys", "RemoteCache", "StockCache", "Unavailable"]
