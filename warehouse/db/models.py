"""Typed SQLAlchemy models of the schema. Alembic revisions in `migrations/` build it;
`tests/integration/test_schema.py` checks these models against the migrated database."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MOVEMENT_TYPES = (
    "receipt",
    "deduction",
    "reservation",
    "release",
    "transfer_out",
    "transfer_in",
    "adjustment",
    "count",
)


class Base(DeclarativeBase):
    pass


class Warehouse(Base):
    __tablename__ = "warehouse"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(Text)


class Location(Base):
    __tablename__ = "location"
    __table_args__ = (
        UniqueConstraint("warehouse_id", "code", name="uq_location_warehouse_code"),
        UniqueConstraint(
            "id", "warehouse_id", name="uq_location_id_warehouse"
        ),  # target of balance keys
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    code: Mapped[str] = mapped_column(String(64))


class Sku(Base):
    __tablename__ = "sku"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))


class Lot(Base):
    __tablename__ = "lot"
    __table_args__ = (
        UniqueConstraint("sku_id", "code", name="uq_lot_sku_code"),
        UniqueConstraint(
            "id", "sku_id", name="uq_lot_id_sku"
        ),  # target of the lot-belongs-to-SKU keys
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    code: Mapped[str] = mapped_column(String(64))
    expires: Mapped[date | None] = mapped_column(Date)


class StockBalance(Base):
    """One row per (warehouse, location, sku, lot); `lot_id` NULL is stock not tracked by lot."""

    __tablename__ = "stock_balance"
    __table_args__ = (
        CheckConstraint("on_hand >= 0", name="ck_stock_balance_on_hand_nonnegative"),
        CheckConstraint(
            "reserved >= 0 AND reserved <= on_hand", name="ck_stock_balance_reserved_range"
        ),
        Index(
            "uq_stock_balance_key",
            "warehouse_id",
            "location_id",
            "sku_id",
            "lot_id",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_stock_balance_warehouse_sku", "warehouse_id", "sku_id"),
        # The dimensions tie (migration 0006): a bin of this warehouse, a lot of this SKU, and
        # the keys a movement names its balance row's dimensions by.
        ForeignKeyConstraint(
            ["location_id", "warehouse_id"],
            ["location.id", "location.warehouse_id"],
            name="fk_stock_balance_location_in_warehouse",
        ),
        ForeignKeyConstraint(
            ["lot_id", "sku_id"], ["lot.id", "lot.sku_id"], name="fk_stock_balance_lot_of_sku"
        ),
        UniqueConstraint(
            "id", "warehouse_id", "location_id", "sku_id", name="uq_stock_balance_dimensions"
        ),
        UniqueConstraint("id", "lot_id", name="uq_stock_balance_id_lot"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    location_id: Mapped[int] = mapped_column(ForeignKey("location.id"))
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("lot.id"))
    on_hand: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reserved: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    first_received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class StockMovement(Base):
    """The append-only ledger, range-partitioned by month on `occurred_at` (business time).

    `qty` is the signed change of on_hand, `reserved_qty` the signed change of reserved; the
    balance equals the sum of both over its movements (invariant 2).
    """

    __tablename__ = "stock_movement"
    __table_args__ = (
        CheckConstraint(
            "movement_type IN ('" + "', '".join(MOVEMENT_TYPES) + "')",
            name="ck_stock_movement_type",
        ),
        Index("ix_stock_movement_balance_occurred", "balance_id", "occurred_at"),
        Index("ix_stock_movement_warehouse_sku_occurred", "warehouse_id", "sku_id", "occurred_at"),
        Index("ix_stock_movement_recorded", "recorded_at"),
        Index("ix_stock_movement_operation", "operation_id"),
        ForeignKeyConstraint(
            ["balance_id", "warehouse_id", "location_id", "sku_id"],
            [
                "stock_balance.id",
                "stock_balance.warehouse_id",
                "stock_balance.location_id",
                "stock_balance.sku_id",
            ],
            name="fk_stock_movement_balance_dimensions",
        ),
        ForeignKeyConstraint(
            ["balance_id", "lot_id"],
            ["stock_balance.id", "stock_balance.lot_id"],
            name="fk_stock_movement_balance_lot",
        ),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )
    id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, server_default=text("nextval('stock_movement_id_seq')")
    )
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    movement_type: Mapped[str] = mapped_column(String(16))
    operation_id: Mapped[int] = mapped_column(BigInteger)
    balance_id: Mapped[int] = mapped_column(BigInteger)
    warehouse_id: Mapped[int] = mapped_column(BigInteger)
    location_id: Mapped[int] = mapped_column(BigInteger)
    sku_id: Mapped[int] = mapped_column(BigInteger)
    lot_id: Mapped[int | None] = mapped_column(BigInteger)
    qty: Mapped[int] = mapped_column(BigInteger)
    reserved_qty: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reference: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)


class IdempotencyKey(Base):
    """Request keys: not partitioned, so the key alone can be unique."""

    __tablename__ = "idempotency_key"
    __table_args__ = (Index("ix_idempotency_key_created_at", "created_at"),)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    operation: Mapped[str] = mapped_column(String(32))
    request_hash: Mapped[str] = mapped_column(String(64))
    operation_id: Mapped[int | None] = mapped_column(BigInteger)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class OutboxMessage(Base):
    __tablename__ = "outbox_message"
    __table_args__ = (
        Index("ix_outbox_message_unpublished", "id", postgresql_where=text("published_at IS NULL")),
        Index("ix_outbox_message_operation", "operation_id"),
        Index(
            "ix_outbox_message_published_at",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    topic: Mapped[str] = mapped_column(String(100))
    message_key: Mapped[str | None] = mapped_column(Text)
    operation_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    # After a failed publish, not claimed again before this (backoff).
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StockSnapshot(Base):
    """Closing stock per balance row at the end of a business day (CANGFLOW_BUSINESS_TIMEZONE), range-partitioned by month.

    `balance_id` stands for (location, lot) in the key: unique per key, and never NULL.
    Rows at zero are left out, so a missing row means nothing held.
    """

    __tablename__ = "stock_snapshot"
    __table_args__ = ({"postgresql_partition_by": "RANGE (snapshot_date)"},)
    snapshot_date: Mapped[date] = mapped_column(Date, primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sku_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    balance_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    location_id: Mapped[int] = mapped_column(BigInteger)
    lot_id: Mapped[int | None] = mapped_column(BigInteger)
    on_hand: Mapped[int] = mapped_column(BigInteger)
    reserved: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class SnapshotDay(Base):
    """A built snapshot date. It holds the movements dated on or before the day that were
    recorded before `watermark`; readers add the ones recorded later (backdated)."""

    __tablename__ = "snapshot_day"
    __table_args__ = (
        CheckConstraint("build_mode IN ('full', 'incremental')", name="ck_snapshot_day_build_mode"),
    )
    snapshot_date: Mapped[date] = mapped_column(Date, primary_key=True)
    watermark: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Movements recorded before this were checked against this day by the backdate scan.
    checked_upto: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    build_mode: Mapped[str] = mapped_column(String(16))
    row_count: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Double)
    built_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # An order-independent hash of the rows as verified: a row altered later no longer matches.
    content_digest: Mapped[Decimal | None] = mapped_column(Numeric)


class SnapshotDirty(Base):
    """A date whose snapshot misses a backdated movement or failed its check."""

    __tablename__ = "snapshot_dirty"
    snapshot_date: Mapped[date] = mapped_column(Date, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    marked_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class HistoryMonth(Base):
    __tablename__ = "history_month"
    __table_args__ = (
        CheckConstraint("extract(day FROM month) = 1", name="ck_history_month_first_day"),
        CheckConstraint(
            "state IN ('closed', 'reopened', 'archived', 'dropped')", name="ck_history_month_state"
        ),
    )
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class BooksCheck(Base):
    """One check of the books: full (every retained snapshot, the whole ledger) or incremental
    (what was recorded since the last passing check, up to `covered_upto`)."""

    __tablename__ = "books_check"
    __table_args__ = (
        CheckConstraint("kind IN ('full', 'incremental')", name="ck_books_check_kind"),
        Index("ix_books_check_kind_ok", "kind", "ok", "id"),
    )
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    checked_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    business_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the jobs' clock then
    covered_upto: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[str] = mapped_column(Text)


class HistoryAudit(Base):
    __tablename__ = "history_audit"
    __table_args__ = (Index("ix_history_audit_month", "month", "at"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    month: Mapped[date] = mapped_column(Date)
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text, server_default=text("CURRENT_USER"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))


class ConsumedMessage(Base):
    """Outbox message ids a consumer has handled: a redelivered message is ignored."""

    __tablename__ = "consumed_message"
    __table_args__ = (Index("ix_consumed_message_consumed_at", "consumed_at"),)
    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    consumed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class ReconciliationRun(Base):
    """One reconciliation of one ERP feed; `run_key` (feed content, as_of, settings) is unique,
    so the same feed with the same settings is reconciled once."""

    __tablename__ = "reconciliation_run"
    __table_args__ = (
        CheckConstraint("truth IN ('wms', 'erp')", name="ck_reconciliation_run_truth"),
        CheckConstraint(
            "status IN ('loading', 'compared', 'done', 'rejected', 'stale')",
            name="ck_reconciliation_run_status",
        ),
        Index(
            "ix_reconciliation_run_scope",
            "warehouse_ids",
            postgresql_using="gin",
            postgresql_where=text("status = 'done'"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), unique=True)
    feed_name: Mapped[str] = mapped_column(Text)
    feed_sha256: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    truth: Mapped[str] = mapped_column(String(8))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    feed_rows: Mapped[int | None] = mapped_column(BigInteger)
    compared: Mapped[int | None] = mapped_column(BigInteger)
    differences: Mapped[int | None] = mapped_column(BigInteger)
    within_tolerance: Mapped[int | None] = mapped_column(BigInteger)
    adjusted: Mapped[int | None] = mapped_column(BigInteger)
    pending: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    # Which limit of the blast-radius brake the run went over, and by how much (its lines held).
    brake: Mapped[str | None] = mapped_column(Text)
    # The warehouses the feed covers, and its shape (rows, zero share, mean): the next feed of an
    # overlapping scope is measured against them (`warehouse.reconcile.profile`).
    warehouse_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReconciliationDifference(Base):
    __tablename__ = "reconciliation_difference"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('differs', 'not_in_feed', 'not_in_wms')",
            name="ck_reconciliation_difference_kind",
        ),
        Index(
            "uq_reconciliation_difference",
            "run_id",
            "warehouse_id",
            "sku_id",
            "lot_id",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_run.id"), primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sku_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    lot_id: Mapped[int | None] = mapped_column(BigInteger)
    wms_qty: Mapped[int] = mapped_column(BigInteger)
    erp_qty: Mapped[int | None] = mapped_column(BigInteger)
    delta: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    within_tolerance: Mapped[bool] = mapped_column(Boolean)


class ReconciliationTolerance(Base):
    __tablename__ = "reconciliation_tolerance"
    __table_args__ = (
        CheckConstraint(
            "(sku_id IS NULL) <> (category IS NULL)", name="ck_reconciliation_tolerance_target"
        ),
        CheckConstraint("abs_qty >= 0 AND pct >= 0", name="ck_reconciliation_tolerance_values"),
        Index(
            "uq_reconciliation_tolerance_sku",
            "sku_id",
            unique=True,
            postgresql_where=text("sku_id IS NOT NULL"),
        ),
        Index(
            "uq_reconciliation_tolerance_category",
            "category",
            unique=True,
            postgresql_where=text("category IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sku_id: Mapped[int | None] = mapped_column(ForeignKey("sku.id"))
    category: Mapped[str | None] = mapped_column(String(64))
    abs_qty: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pct: Mapped[Decimal] = mapped_column(Numeric(7, 3), server_default=text("0"))


class AdjustmentOrder(Base):
    __tablename__ = "adjustment_order"
    __table_args__ = (
        UniqueConstraint("run_id", "warehouse_id", name="uq_adjustment_order_run_warehouse"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_run.id"))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    truth: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class AdjustmentOrderLine(Base):
    __tablename__ = "adjustment_order_line"
    __table_args__ = (
        CheckConstraint(
            "status IN ('for_erp', 'acknowledged', 'pending_approval', 'held', 'approved', 'applied', 'rejected', "
            "'failed', 'superseded')",
            name="ck_adjustment_order_line_status",
        ),
        Index(
            "uq_adjustment_order_line_key",
            "order_id",
            "sku_id",
            "lot_id",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_adjustment_order_line_status", "status"),
        Index(
            "ix_adjustment_order_line_open",
            "warehouse_id",
            "sku_id",
            "lot_id",
            postgresql_where=text("status IN ('pending_approval', 'held', 'for_erp')"),
        ),
        ForeignKeyConstraint(
            ["lot_id", "sku_id"],
            ["lot.id", "lot.sku_id"],
            name="fk_adjustment_order_line_lot_of_sku",
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("adjustment_order.id"))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("lot.id"))
    wms_qty: Mapped[int] = mapped_column(BigInteger)
    erp_qty: Mapped[int | None] = mapped_column(BigInteger)
    delta: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    # The ledger movements that applied the line (ERP truth), one per bin it touched.
    movement_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    decided_by: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A newer run found the same difference (warehouse, sku, lot) while this line was open.
    superseded_by_run: Mapped[int | None] = mapped_column(ForeignKey("reconciliation_run.id"))
    # The ERP confirmed a line sent to it (WMS truth).
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BusinessCalendar(Base):
    """One row: the business time zone the database's days and months are in (migration 0009).
    The application adopts its setting on a database without history and refuses a different
    one afterwards (`warehouse.history.zone`)."""

    __tablename__ = "business_calendar"
    __table_args__ = (CheckConstraint("one_row", name="ck_business_calendar_one_row"),)
    one_row: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    zone: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
