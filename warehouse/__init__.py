"""cangflow's domain: the stock database and every rule about stock."""

from warehouse.db.engine import Database, connect

__all__ = ["Database", "connect"]
