"""Monthly partitions of the ledger. Names and bounds go through psycopg's SQL composition."""

from __future__ import annotations

from datetime import date, datetime, timezone

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

PARTITIONED_TABLES = ("stock_movement",)


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + (month.month - 1) + count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month:%Y_%m}"


def existing(session: Session, table: str) -> set[str]:
    rows = session.execute(
        text(
            """
            SELECT c.relname FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_class p ON p.oid = i.inhparent
            WHERE p.relname = :table AND p.relnamespace = 'public'::regnamespace
            """
        ),
        {"table": table},
    )
    return {name for (name,) in rows}


def ensure_month(session: Session, table: str, month: date) -> bool:
    """Create the partition of `table` for `month` unless it exists. True when created.

    Rows of that month already sitting in the default partition would make the CREATE fail;
    the partition-rollover job moves them first (issue 3), here we refuse with a clear error.
    """
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"{table!r} is not a partitioned table of cangflow")
    month = month_start(month)
    name = partition_name(table, month)
    if name in existing(session, table):
        return False
    lower = datetime(month.year, month.month, 1, tzinfo=timezone.utc)
    upper_month = add_months(month, 1)
    upper = datetime(upper_month.year, upper_month.month, 1, tzinfo=timezone.utc)
    statement = sql.SQL("CREATE TABLE {name} PARTITION OF {parent} FOR VALUES FROM ({lower}) TO ({upper})").format(
        name=sql.Identifier(name),
        parent=sql.Identifier(table),
        lower=sql.Literal(lower),
        upper=sql.Literal(upper),
    )
    raw = session.connection().connection.dbapi_connection
    session.connection().exec_driver_sql(statement.as_string(raw))
    return True


def premake(session: Session, *, months_back: int = 1, months_ahead: int = 3, today: date | None = None) -> list[str]:
    """Make sure monthly partitions exist from `months_back` before to `months_ahead` after today."""
    current = month_start(today or datetime.now(timezone.utc).date())
    created = []
    for table in PARTITIONED_TABLES:
        for offset in range(-months_back, months_ahead + 1):
            month = add_months(current, offset)
            if ensure_month(session, table, month):
                created.append(partition_name(table, month))
    return created


def ensure_range(session: Session, start: date, end: date) -> list[str]:
    """Partitions for every month from `start` to `end` inclusive (used by bulk loads)."""
    created = []
    month = month_start(start)
    while month <= end:
        for table in PARTITIONED_TABLES:
            if ensure_month(session, table, month):
                created.append(partition_name(table, month))
        month = add_months(month, 1)
    return created
