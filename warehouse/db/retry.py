"""Run a whole transaction again after a deadlock or serialization failure, a bounded number
of times with jittered backoff. Safe because every stock function either applies entirely in
its transaction or not at all, and a key makes a retried request apply once."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from warehouse.db.engine import Database
from warehouse.errors import ConcurrentConflict
from warehouse.metrics import sinks as metrics

T = TypeVar("T")
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def _sqlstate(error: BaseException) -> str | None:
    return (
        getattr(getattr(error, "orig", None), "sqlstate", None)
        if isinstance(error, DBAPIError)
        else None
    )


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, ConcurrentConflict) or _sqlstate(error) in RETRYABLE_SQLSTATES


def conflicts_are_retryable(operation: Callable[..., T]) -> Callable[..., T]:
    """Wrap a stock operation: a deadlock or serialization failure in its statements reaches the
    caller as the one documented retryable error, `ConcurrentConflict`."""

    @functools.wraps(operation)
    def wrapper(*args, **kwargs):
        try:
            return operation(*args, **kwargs)
        except DBAPIError as error:
            # A DBAPIError is retryable by its SQLSTATE alone: a retryable one has one.
            sqlstate = _sqlstate(error)
            if sqlstate is None or not is_retryable(error):
                raise
            detail = str(getattr(error, "orig", error)).splitlines()[0]
            raise ConcurrentConflict(operation.__name__, sqlstate, detail) from error

    return wrapper


def in_transaction(
    db: Database,
    work: Callable[[Session], T],
    *,
    attempts: int = 5,
    base_delay: float = 0.005,
    label: str = "transaction",
) -> T:
    for attempt in range(1, attempts + 1):
        try:
            with db.session() as session:
                return work(session)
        except (DBAPIError, ConcurrentConflict) as error:
            if not is_retryable(error) or attempt == attempts:
                raise
            metrics.current().deduction_retried(label)
            # Full jitter: concurrent losers spread out instead of colliding again.
            time.sleep(random.uniform(0, base_delay * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


LOCK_WAIT_SQLSTATES = {"55P03", "40P01"}  # lock_not_available (lock_timeout), deadlock_detected


def ddl_step(
    db: Database, work: Callable[[Session], T], *, attempts: int = 5, base_delay: float = 0.5
) -> T:
    """One DDL step in its own short transaction. A step that gave up waiting for a lock
    (its `lock_timeout`) is tried again after a jittered pause, while the writers it would
    have blocked get through."""
    for attempt in range(1, attempts + 1):
        try:
            with db.session() as session:
                return work(session)
        except DBAPIError as error:
            sqlstate = _sqlstate(error)
            if sqlstate not in LOCK_WAIT_SQLSTATES or attempt == attempts:
                raise
            time.sleep(random.uniform(base_delay / 2, base_delay * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")
