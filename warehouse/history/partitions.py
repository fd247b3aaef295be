"""Monthly partitions of the ledger and of the snapshots: create, list, and rescue rows that
landed in the default partition. Months are those of the business time zone
(`warehouse.history.calendar`): a ledger partition holds the instants from local midnight of its month's
first day up to local midnight of the next month's, so closing and retention, which work by
partition, close and retire local months. Identifiers and bounds go through psycopg's SQL
composition; nothing here commits.

Each function is one DDL step meant to run in its own short transaction (the rollover commits
after each): `CREATE TABLE ... PARTITION OF` takes an ACCESS EXCLUSIVE lock on the parent, so a
step first sets `lock_timeout` and gives up instead of queueing every writer behind it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.history import calendar

# Each partitioned table and the column (and its type) it is partitioned on.
PARTITIONED_TABLES = {"stock_movement": "occurred_at", "stock_snapshot": "snapshot_date"}
_MONTHLY = re.compile(r"_p(\d{4})_(\d{2})$")


def month_start(day: date) -> date:
    return date(day.year, day.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + (month.month - 1) + count
    return date(index // 12, index % 12 + 1, 1)


def month_label(month: date) -> str:
    return f"{month:%Y-%m}"


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month:%Y_%m}"


def default_name(table: str) -> str:
    return f"{table}_default"


def _check_table(table: str) -> None:
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"{table!r} is not a partitioned table of cangflow")


def bounds(table: str, month: date) -> tuple[date | datetime, date | datetime]:
    """The partition bounds of `month`: for the ledger, the instants (aware, UTC) at which the
    month and the next one begin in the business time zone; for snapshots, dates."""
    _check_table(table)
    lower, upper = month_start(month), add_months(month_start(month), 1)
    if table == "stock_movement":
        return calendar.day_start(lower), calendar.day_start(upper)
    return lower, upper


def execute_ddl(session: Session, statement: sql.Composable) -> None:
    raw = raw_sql.driver(session)
    session.connection().exec_driver_sql(statement.as_string(raw))


ROLLOVER_LOCK = 0x726F6C6C  # "roll": DDL steps of concurrent rollovers take turns


def rollover_lock(session: Session) -> None:
    """Held to the end of the step's transaction; each step re-reads the state after it."""
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROLLOVER_LOCK})


def set_lock_timeout(session: Session, milliseconds: int | None) -> None:
    """For the rest of this transaction only."""
    if milliseconds is not None:
        session.execute(
            text("SELECT set_config('lock_timeout', :value, true)"),
            {"value": f"{int(milliseconds)}ms"},
        )


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    month: date | None  # None for the default partition


def attached(session: Session, table: str) -> list[Partition]:
    """The partitions attached to `table`, monthly ones in month order, the default last."""
    _check_table(table)
    names = session.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:table AS regclass)"
        ),
        {"table": table},
    ).scalars()
    found = []
    for name in names:
        match = _MONTHLY.search(name)
        month = date(int(match.group(1)), int(match.group(2)), 1) if match else None
        found.append(Partition(table, name, month))
    return sorted(found, key=lambda p: (p.month is None, p.month or date.min))


def existing(session: Session, table: str) -> set[str]:
    return {p.name for p in attached(session, table)}


def rows_in_default(session: Session, table: str) -> dict[date, int]:
    """Rows sitting in the default partition, counted per month they belong to (for the ledger,
    the month of the business time zone its instant falls in)."""
    _check_table(table)
    column = PARTITIONED_TABLES[table]
    month_of = (
        "CAST(date_trunc('month', {col} AT TIME ZONE {zone}) AS date)"
        if table == "stock_movement"
        else "CAST(date_trunc('month', {col}) AS date)"
    )
    statement = sql.SQL(
        "SELECT " + month_of + ", count(*) FROM {default} GROUP BY 1 ORDER BY 1"
    ).format(
        col=sql.Identifier(column),
        zone=sql.Literal(calendar.zone_name()),
        default=sql.Identifier(default_name(table)),
    )
    raw = raw_sql.driver(session)
    rows = session.connection().exec_driver_sql(statement.as_string(raw)).tuples().all()
    return dict(rows)


@dataclass(frozen=True)
class MonthMade:
    table: str
    name: str
    created: bool
    rows_moved: int = 0


def ensure_month(
    session: Session, table: str, month: date, *, lock_timeout_ms: int | None = None
) -> MonthMade:
    """Make the partition of `table` for `month` unless it exists.

    Rows of that month in the default partition would make `CREATE ... PARTITION OF` fail, so
    when there are some, the partition is built as a plain table, the rows are moved into it,
    and it is attached; the move is reported in `rows_moved`.
    """
    _check_table(table)
    rollover_lock(session)
    set_lock_timeout(session, lock_timeout_ms)
    month = month_start(month)
    name = partition_name(table, month)
    if name in existing(session, table):
        return MonthMade(table, name, created=False)
    lower, upper = bounds(table, month)
    parts = {
        "name": sql.Identifier(name),
        "parent": sql.Identifier(table),
        "lower": sql.Literal(lower),
        "upper": sql.Literal(upper),
        "default": sql.Identifier(default_name(table)),
        "column": sql.Identifier(PARTITIONED_TABLES[table]),
    }
    stray = rows_in_default(session, table).get(month, 0)
    if not stray:
        execute_ddl(
            session,
            sql.SQL(
                "CREATE TABLE {name} PARTITION OF {parent} FOR VALUES FROM ({lower}) TO ({upper})"
            ).format(**parts),
        )
        return MonthMade(table, name, created=True)
    execute_ddl(
        session,
        sql.SQL(
            "CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ).format(**parts),
    )
    execute_ddl(
        session,
        sql.SQL(
            "WITH moved AS (DELETE FROM {default} WHERE {column} >= {lower} AND {column} < {upper} RETURNING *) "
            "INSERT INTO {name} SELECT * FROM moved"
        ).format(**parts),
    )
    execute_ddl(
        session,
        sql.SQL(
            "ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES FROM ({lower}) TO ({upper})"
        ).format(**parts),
    )
    return MonthMade(table, name, created=True, rows_moved=stray)


def premake(
    session: Session, *, months_back: int = 1, months_ahead: int = 3, today: date | None = None
) -> list[str]:
    """Make sure monthly partitions exist from `months_back` before to `months_ahead` after today."""
    current = month_start(today or calendar.today())
    return ensure_range(
        session, add_months(current, -months_back), add_months(current, months_ahead)
    )


def ensure_range(session: Session, start: date, end: date) -> list[str]:
    """Partitions of every partitioned table for every month from `start` to `end` inclusive."""
    created = []
    month = month_start(start)
    while month <= end:
        for table in PARTITIONED_TABLES:
            made = ensure_month(session, table, month)
            if made.created:
                created.append(made.name)
        month = add_months(month, 1)
    return created
