"""Every rule about stock. Functions take a Session and never commit: the caller owns the
transaction, and each call writes balance, ledger movement and outbox message in it."""

from warehouse.stock.combining import CombiningDeductions
from warehouse.stock.counting import count
from warehouse.stock.direct import DirectStock
from warehouse.stock.placing import adjust, receive, transfer
from warehouse.stock.queries import available, on_hand
from warehouse.stock.result import MovementLine, StockChange
from warehouse.stock.taking import OrderLine, deduct, deduct_order, release, reserve

__all__ = [
    "CombiningDeductions",
    "DirectStock",
    "MovementLine",
    "OrderLine",
    "StockChange",
    "adjust",
    "available",
    "count",
    "deduct",
    "deduct_order",
    "on_hand",
    "receive",
    "release",
    "reserve",
    "transfer",
]
