"""Autocommit connections for the direct path (`Database.direct_connection()`), kept apart
from the Sessions' pool.

Why: a checkout from SQLAlchemy's pool for one autocommit statement (autocommit switched on,
then off again and the pool's reset on return) cost about 45 us of client CPU per direct call,
measured beside a bare list of connections; the whole statement costs the client about 100 us.
A connection here stays in autocommit for its life, so handing it out is a list pop.

Each connection is made by the engine's pool, so it gets every setup the engine's connections
get ("connect" events: session defaults, the role, a statement timeout), then detached from the
pool, where it no longer counts. At most `limit` are out at once (a caller waits up to `timeout`
seconds, as for the pool, then gets SQLAlchemy's TimeoutError); at most `keep` idle ones are
kept; one older than `recycle` seconds is replaced, as the pool recycles. A connection that
broke, or that the caller left in a transaction a rollback cannot end, is closed, not kept.
After a fork the child forgets the parent's connections without closing them (they are the
parent's sockets) and makes its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import suppress

import psycopg
from psycopg import pq
from sqlalchemy import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeout

logger = logging.getLogger(__name__)


class DirectLane:
    def __init__(
        self, engine: Engine, *, limit: int, keep: int, recycle: float, timeout: float
    ) -> None:
        self._engine = engine
        self.limit, self.keep, self.recycle, self.timeout = limit, keep, recycle, timeout
        self._reset()

    def _reset(self) -> None:
        """A fresh lane for this process (at start, and in a child after a fork, where a lock
        the parent's threads held stays held: every primitive is new)."""
        self._lock = threading.Lock()
        # Waited on only at the limit: a plain count under the lock is a tenth of the cost of
        # a semaphore (threading's is Python code around a Condition) on every call.
        self._freed = threading.Condition(self._lock)
        self._out = 0
        self._pid = os.getpid()
        self._idle: list[tuple[psycopg.Connection, float, int]] = []  # made at, generation
        # close() starts a new generation: a connection of an older one is closed on return.
        self._generation = 0

    def connection(self) -> _Lease:
        """`with lane.connection() as connection:` one connection, in autocommit, until the
        block ends."""
        if self._pid != os.getpid():
            self._reset()
        return _Lease(self)

    def _take(self) -> tuple[psycopg.Connection, float, int]:
        with self._lock:
            if self._out >= self.limit and not self._freed.wait_for(
                lambda: self._out < self.limit, timeout=self.timeout
            ):
                raise PoolTimeout(
                    f"no direct connection free within {self.timeout:g} s ({self.limit} in use)"
                )
            self._out += 1
        try:
            return self._idle_or_new()
        except BaseException:
            self._release()
            raise

    def _idle_or_new(self) -> tuple[psycopg.Connection, float, int]:
        now = time.monotonic()
        while True:
            with self._lock:
                found = self._idle.pop() if self._idle else None
                generation = self._generation
            if found is None:
                return self._make(), now, generation
            connection, made_at, generation = found
            if now - made_at < self.recycle and not connection.closed:
                return connection, made_at, generation
            _close_quietly(connection)

    def _release(self) -> None:
        with self._lock:
            self._out -= 1
            self._freed.notify()

    def _make(self) -> psycopg.Connection:
        pooled = self._engine.raw_connection()  # the engine's "connect" events set it up
        connection = pooled.driver_connection
        assert isinstance(connection, psycopg.Connection)
        pooled.detach()  # ours now: the pool makes itself another when it needs one
        connection.autocommit = True
        return connection

    def _give_back(self, connection: psycopg.Connection, made_at: float, generation: int) -> None:
        try:
            self._keep_or_close(connection, made_at, generation)
        finally:
            self._release()

    def _keep_or_close(
        self, connection: psycopg.Connection, made_at: float, generation: int
    ) -> None:
        if connection.closed or connection.broken:
            _close_quietly(connection)
            return
        try:
            # Back as handed out: in autocommit with no transaction open.
            if connection.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                connection.rollback()
            if not connection.autocommit:
                connection.autocommit = True
        except psycopg.Error:
            logger.warning("a direct connection could not be reset; closed", exc_info=True)
            _close_quietly(connection)
            return
        with self._lock:
            kept = (
                self._pid == os.getpid()
                and generation == self._generation
                and len(self._idle) < self.keep
            )
            if kept:
                self._idle.append((connection, made_at, generation))
        if not kept:
            _close_quietly(connection)

    def close(self) -> None:
        """Close the idle connections; those out now are closed when they come back."""
        if self._pid != os.getpid():  # the parent's: not this process's to close
            self._reset()
            return
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for connection, _, _ in idle:
            _close_quietly(connection)

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


class _Lease:
    """One connection of a lane for a `with` block (a class, not a generator: this runs on every
    direct call)."""

    __slots__ = ("_held", "_lane")

    def __init__(self, lane: DirectLane) -> None:
        self._lane = lane

    def __enter__(self) -> psycopg.Connection:
        self._held = self._lane._take()
        return self._held[0]

    def __exit__(self, *_exc: object) -> None:
        self._lane._give_back(*self._held)


def _close_quietly(connection: psycopg.Connection) -> None:
    with suppress(psycopg.Error):  # already gone with its server: nothing left to end
        connection.close()
