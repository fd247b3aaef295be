"""Retention: closed months older than the retention leave the hot tables. They are detached
and kept in the `archive` schema, or, when configured, dumped with pg_dump and then dropped.

`DETACH PARTITION ... CONCURRENTLY` is used where PostgreSQL allows it; it refuses it while the
parent has a default partition (ours do, as a safety net for rows dated outside every month),
and then the plain DETACH runs under `lock_timeout`: a catalog change that holds the parent's
lock for milliseconds, given up (and retried by the next run) rather than queued behind a
long query.

Snapshots keep one month more than the ledger: the snapshot of the last retired month's last
day is what the oldest retained ledger month builds on.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from psycopg import sql
from sqlalchemy import URL, text
from sqlalchemy.orm import Session

from warehouse.db import client_programs, raw_sql
from warehouse.db.engine import Database
from warehouse.errors import WarehouseError
from warehouse.history import partitions
from warehouse.history.closing import closed_months, record_state
from warehouse.history.partitions import add_months, month_label
from warehouse.stock.validation import history_floor

ARCHIVE_SCHEMA = "archive"


@dataclass(frozen=True)
class Retired:
    table: str
    name: str
    month: date
    how: str  # "archived" (kept in archive schema) or "dropped" (after a dump)
    concurrently: bool
    dump: str | None = None


def cutoffs(today: date, retention_months: int) -> dict[str, date]:
    """Per table, months before this leave the hot table."""
    # The one definition the stock API refuses before.
    ledger = history_floor(today, retention_months)
    return {"stock_movement": ledger, "stock_snapshot": add_months(ledger, -1)}


def due(session: Session, *, today: date, retention_months: int) -> list[partitions.Partition]:
    """Attached partitions older than the retention, oldest first; a ledger month is due only
    once it is closed (open history is never archived)."""
    closed = set(closed_months(session))
    found = []
    for table, cutoff in cutoffs(today, retention_months).items():
        for p in partitions.attached(session, table):
            if p.month is None or p.month >= cutoff:
                continue
            if table == "stock_movement" and p.month not in closed:
                continue
            found.append(p)
    return sorted(found, key=lambda p: (p.month, p.table))


def _has_default(session: Session, table: str) -> bool:
    return any(p.month is None for p in partitions.attached(session, table))


def detach(db: Database, partition: partitions.Partition, *, lock_timeout_ms: int) -> bool:
    """Detach one partition (its own transaction); True when it went CONCURRENTLY."""
    identifiers = {
        "parent": sql.Identifier(partition.table),
        "name": sql.Identifier(partition.name),
    }
    with db.session() as session:
        partitions.rollover_lock(session)
        if partition.name not in partitions.existing(session, partition.table):
            return False  # a concurrent rollover detached it first
        concurrently = not _has_default(session, partition.table)
        if not concurrently:
            partitions.set_lock_timeout(session, lock_timeout_ms)
            partitions.execute_ddl(
                session,
                sql.SQL("ALTER TABLE {parent} DETACH PARTITION {name}").format(**identifiers),
            )
    if concurrently:
        # Cannot run inside a transaction block: its own autocommit connection.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            raw = raw_sql.driver_of(connection)
            statement = sql.SQL("ALTER TABLE {parent} DETACH PARTITION {name} CONCURRENTLY").format(
                **identifiers
            )
            connection.exec_driver_sql(statement.as_string(raw))
    return concurrently


def _move_to_archive(session: Session, partition: partitions.Partition) -> None:
    partitions.execute_ddl(
        session,
        sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
            sql.Identifier(partition.name), sql.Identifier(ARCHIVE_SCHEMA)
        ),
    )
    _forget_snapshot_days(session, partition)


def _forget_snapshot_days(session: Session, partition: partitions.Partition) -> None:
    if partition.table == "stock_snapshot":
        assert partition.month is not None  # retention handles monthly partitions only (`_finish`)
        # The days are gone from the hot table: readers must not find them as a base.
        session.execute(
            text("DELETE FROM snapshot_day WHERE snapshot_date >= :lo AND snapshot_date < :hi"),
            {"lo": partition.month, "hi": add_months(partition.month, 1)},
        )
        session.execute(
            text("DELETE FROM snapshot_dirty WHERE snapshot_date >= :lo AND snapshot_date < :hi"),
            {"lo": partition.month, "hi": add_months(partition.month, 1)},
        )


def dump(db: Database, name: str, directory: Path, *, schema: str = ARCHIVE_SCHEMA) -> Path:
    """pg_dump of `schema`.`name` (custom format); raises unless it wrote a non-empty file."""
    with db.engine.connect() as connection:
        server = int(connection.exec_driver_sql("SHOW server_version_num").scalar_one())
    try:
        pg_dump = client_programs.for_server("pg_dump", server // 10000)
    except WarehouseError as error:
        raise WarehouseError(f"retention_mode=drop: {error}; nothing was dropped") from error
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.dump"
    url = db.url
    # The password goes by the environment, never on the command line (which `ps` shows to every
    # user of the machine). URL.set(password=None) would keep it (None there means unchanged).
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    dsn = URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    ).render_as_string()
    done = subprocess.run(
        [pg_dump, "--format=custom", f"--table={schema}.{name}", f"--file={target}", dsn],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        raise WarehouseError(
            f"pg_dump of {schema}.{name} failed ({done.returncode}): {done.stderr.strip()[:500]}"
        )
    return target


def retire(
    db: Database,
    partition: partitions.Partition,
    *,
    mode: str,
    lock_timeout_ms: int,
    dump_directory: Path,
) -> Retired | None:
    """Detach one due partition and archive it (or dump and drop it). Each step commits on its
    own; a run killed between steps finishes the partition next time (see `leftovers`). None
    when a concurrent rollover retired it."""
    concurrently = detach(db, partition, lock_timeout_ms=lock_timeout_ms)
    return _finish(
        db, partition, mode=mode, concurrently=concurrently, dump_directory=dump_directory
    )


def _finish(
    db: Database,
    partition: partitions.Partition,
    *,
    mode: str,
    concurrently: bool,
    dump_directory: Path,
) -> Retired | None:
    """Archive, or dump and drop, a detached partition: one transaction after the detach, so a
    run killed at any point leaves the table detached in `public` (a leftover) and the next run
    starts this step again. Drop mode dumps from `public` under the rollover lock, then drops
    the table and records the month in the same transaction; it never parks the table in the
    archive, where a killed run would leave it looking like archive mode's."""
    # `due` passes monthly partitions only (never the default one), `leftovers` those named by
    # their month.
    assert partition.month is not None
    with db.session() as session:
        partitions.rollover_lock(session)
        if partition.name not in {p.name for p in leftovers(session)}:
            return None  # a concurrent rollover finished it
        if mode != "drop":
            _move_to_archive(session, partition)
            if partition.table == "stock_movement":
                record_state(
                    session,
                    partition.month,
                    "archived",
                    "archived",
                    f"older than the retention; in schema {ARCHIVE_SCHEMA}",
                )
            return Retired(
                partition.table, partition.name, partition.month, "archived", concurrently
            )
        target = dump(db, partition.name, dump_directory, schema="public")
        _forget_snapshot_days(session, partition)
        partitions.execute_ddl(
            session, sql.SQL("DROP TABLE {}").format(sql.Identifier(partition.name))
        )
        if partition.table == "stock_movement":
            record_state(session, partition.month, "dropped", "dropped", f"dumped to {target}")
    return Retired(
        partition.table, partition.name, partition.month, "dropped", concurrently, str(target)
    )


_DETACHED_IN_PUBLIC = text("""
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
  AND c.relname ~ '^(stock_movement|stock_snapshot)_p[0-9]{4}_[0-9]{2}$'
""")


def leftovers(session: Session) -> list[partitions.Partition]:
    """Monthly tables detached by a run that stopped before moving them to the archive."""
    found = []
    for name in session.execute(_DETACHED_IN_PUBLIC).scalars():
        table, _, stamp = name.rpartition("_p")
        year, month = stamp.split("_")
        found.append(partitions.Partition(table, name, date(int(year), int(month), 1)))
    return found


def finish_leftover(
    db: Database, partition: partitions.Partition, *, mode: str, dump_directory: Path
) -> Retired | None:
    return _finish(db, partition, mode=mode, concurrently=False, dump_directory=dump_directory)


def describe(retired: Retired) -> str:
    how = "detached concurrently" if retired.concurrently else "detached"
    where = (
        f"dropped after dump to {retired.dump}"
        if retired.how == "dropped"
        else f"kept in {ARCHIVE_SCHEMA}"
    )
    return f"{retired.name} ({month_label(retired.month)}): {how}, {where}"
