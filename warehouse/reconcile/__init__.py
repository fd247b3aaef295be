"""ERP-versus-WMS reconciliation: feed checks and load, the in-database diff, adjustment orders."""

from .feed import FeedRejected, Problem
from .runs import RunSettings

__all__ = ["FeedRejected", "Problem", "RunSettings"]
