"""Every rule about stock. Functions take a Session and never commit: the caller owns the
transaction, and each call writes balance, ledger movement and outbox message in it."""

from .counting import count
from .placing import adjust, receive, transfer
from .queries import available, on_hand
from .result import MovementLine, StockChange
from .taking import OrderLine, deduct, deduct_order, release, reserve

__all__ = [
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
