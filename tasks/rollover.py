"""Tasks of the partition rollover. Every DDL step runs in its own short transaction under
`lock_timeout` (`retry.ddl_step`), so a busy table delays a step instead of queueing writers.
The DDL is the owner role's (warehouse.db.roles); pruning expired keys is the app's."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from prefect import task

from tasks.database import database
from warehouse.db import retry
from warehouse.history import closing as history
from warehouse.history import partitions, retention
from warehouse.metrics import sinks as metrics
from warehouse.settings import get_settings
from warehouse.stock import idempotency


def _step(work):
    settings = get_settings()
    return retry.ddl_step(database("owner"), work, attempts=settings.ddl_attempts)


@task(name="rollover-premake", retries=2, retry_delay_seconds=10)
def premake_partitions(today: date) -> list[partitions.MonthMade]:
    """Partitions of both tables from last month to `premake_months` ahead; rows of a month
    found in the default partition are moved into its new partition."""
    settings = get_settings()
    current = partitions.month_start(today)
    made = []
    for offset in range(-1, settings.premake_months + 1):
        month = partitions.add_months(current, offset)
        for table in partitions.PARTITIONED_TABLES:
            made.append(
                _step(
                    lambda s, t=table, m=month: partitions.ensure_month(
                        s, t, m, lock_timeout_ms=settings.ddl_lock_timeout_ms
                    )
                )
            )
    return made


@task(name="rollover-default-rows", retries=2, retry_delay_seconds=10)
def rescue_default_rows() -> list[partitions.MonthMade]:
    """Rows in a default partition get a partition of their own month (they would block it)."""
    settings = get_settings()
    with database("owner").session() as session:
        stray = {
            table: partitions.rows_in_default(session, table)
            for table in partitions.PARTITIONED_TABLES
        }
    moved = []
    for table, months in stray.items():
        for month in months:
            moved.append(
                _step(
                    lambda s, t=table, m=month: partitions.ensure_month(
                        s, t, m, lock_timeout_ms=settings.ddl_lock_timeout_ms
                    )
                )
            )
    # What is left (a partition that could not be made yet): an alert watches it.
    with database("owner").session() as session:
        for table in partitions.PARTITIONED_TABLES:
            left = sum(partitions.rows_in_default(session, table).values())
            metrics.current().set("cangflow_partition_default_rows", left, table=table)
    return moved


@task(name="rollover-reopened-months")
def reopened_months() -> list[date]:
    with database("owner").session() as session:
        return history.reopened_months(session)


@task(name="rollover-close", retries=2, retry_delay_seconds=10)
def close_due_months(today: date) -> list[history.Closing]:
    """Each month due closes in its own transaction; one that may not (dirty, late movements)
    stays open with its reason, rolled back, and the others still close."""
    settings = get_settings()
    with database("owner").session() as session:
        due = history.due_months(session, today=today, grace_days=settings.history_grace_days)
    outcomes = []
    for month in due:
        try:
            closed = _step(
                lambda s, m=month: history.close_month(
                    s, m, lock_timeout_ms=settings.ddl_lock_timeout_ms
                )
            )
        except history.NotClosable as refused:
            outcomes.append(history.Closing(month, False, why=refused.why))
        else:
            outcomes.append(history.Closing(month, True, tuple(closed)))
    return outcomes


@task(name="rollover-retention", retries=2, retry_delay_seconds=10)
def retire_old_partitions(today: date) -> list[retention.Retired]:
    settings = get_settings()
    dumps = settings.home / "archive"
    with database("owner").session() as session:
        unfinished = retention.leftovers(session)
        due = retention.due(session, today=today, retention_months=settings.retention_months)
    done = [
        retention.finish_leftover(
            database("owner"), p, mode=settings.retention_mode, dump_directory=dumps
        )
        for p in unfinished
    ]
    done += [
        retention.retire(
            database("owner"),
            p,
            mode=settings.retention_mode,
            lock_timeout_ms=settings.ddl_lock_timeout_ms,
            dump_directory=dumps,
        )
        for p in due
    ]
    return [r for r in done if r is not None]


@task(name="rollover-expired-keys", retries=2, retry_delay_seconds=10)
def prune_expired_keys(now: datetime | None = None) -> int:
    """Idempotency keys past their retention, deleted in batches of one transaction each."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=get_settings().idempotency_retention_days)
    return idempotency.prune_expired_keys(database(), older_than=cutoff)
