"""cangflow's domain: the stock database and every rule about stock."""

from .db import Database, connect

__all__ = ["Database", "connect"]
