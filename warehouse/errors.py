"""Errors a caller can act on. Each message says what was asked and why it was refused."""

from __future__ import annotations


class WarehouseError(Exception):
    """Base of every domain error; a rejected operation has written nothing."""


class SchemaNotCurrent(WarehouseError):
    """The database is not migrated to the schema this code expects."""


class InvalidArgument(WarehouseError, ValueError):
    pass


class InvalidQuantity(InvalidArgument):
    def __init__(
        self, value: object, *, field: str = "qty", why: str = "must be a whole number > 0"
    ):
        self.value = value
        self.field = field
        super().__init__(f"{field}={value!r} is not a valid quantity: {why}")


class UnknownItem(WarehouseError, LookupError):
    def __init__(self, kind: str, code: object, *, context: str = ""):
        self.kind = kind
        self.code = code
        where = f" {context}" if context else ""
        super().__init__(f"unknown {kind} {code!r}{where}")


class InsufficientStock(WarehouseError):
    def __init__(self, *, sku: str, asked: int, available: int, warehouse: str, where: str = ""):
        self.sku = sku
        self.asked = asked
        self.available = available
        self.warehouse = warehouse
        scope = f" ({where})" if where else ""
        super().__init__(
            f"insufficient stock of sku {sku!r} in warehouse {warehouse!r}{scope}: "
            f"asked {asked}, available {available}"
        )


class IdempotencyConflict(WarehouseError):
    def __init__(self, key: str, *, first_operation: str, operation: str):
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was first used for a different request "
            f"({first_operation} with other arguments); this {operation} was not applied. "
            "Use a new key for a new request."
        )


class HistoryClosed(WarehouseError):
    def __init__(self, month: str, *, floor: str | None = None, closed_after: str | None = None):
        self.month = month
        self.floor = floor
        if closed_after is not None:
            super().__init__(
                f"stock history for {month} is closed: it is older than {closed_after}, a closed month, and "
                "history closes in order; a change dated there is refused"
            )
            return
        if floor is not None:
            super().__init__(
                f"stock history for {month} is before the history floor {floor} (the oldest month the "
                "ledger keeps, CANGFLOW_RETENTION_MONTHS back); a change dated there is refused"
            )
            return
        super().__init__(
            f"stock history for {month} is closed; a change dated in that month is refused "
            f"(reopen it with `cangflow history reopen {month} --reason ...`)"
        )


class ConcurrentConflict(WarehouseError):
    """The transaction lost a race PostgreSQL resolves by aborting one side (a deadlock between
    operations the caller composed in one transaction, or a serialization failure). Nothing of
    the transaction applied and it must be rolled back; running it again is safe (a key makes a
    retried request apply once). `warehouse.db.retry.in_transaction` does that, bounded, with jitter."""

    retryable = True

    def __init__(self, operation: str, sqlstate: str, detail: str):
        self.operation = operation
        self.sqlstate = sqlstate
        super().__init__(
            f"{operation} lost a race with a concurrent transaction (SQLSTATE {sqlstate}: {detail}); "
            "nothing was applied: roll back and run the transaction again"
        )


class BusinessZoneChanged(WarehouseError):
    """CANGFLOW_BUSINESS_TIMEZONE differs from the zone the database's history is kept in."""

    def __init__(self, *, stored: str, configured: str):
        self.stored = stored
        self.configured = configured
        super().__init__(
            f"CANGFLOW_BUSINESS_TIMEZONE is {configured!r} but this database's history is in {stored!r}: its "
            f"snapshots are closing stock at {stored} midnight and its ledger partitions, closed and retired "
            f"months are {stored} months, so days in {configured} would not match them. Changing the business "
            f"time zone of a database with history is refused, and cangflow has no migration of history to "
            f"another zone. Set CANGFLOW_BUSINESS_TIMEZONE={stored} again (for every process, and the "
            f"deployments' schedule time zone), or use {configured} with a new, empty database (it adopts the setting)."
        )
