"""ERP-versus-WMS reconciliation: feed checks and load, the in-database diff, adjustment orders."""

from warehouse.reconcile.feed import FeedRejected, Problem
from warehouse.reconcile.runs import RunSettings

__all__ = ["FeedRejected", "Problem", "RunSettings"]
