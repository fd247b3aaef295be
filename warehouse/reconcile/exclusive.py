"""One reconciliation of a feed, and of a warehouse, at a time.

Two runs of one feed would load, compare and order the same differences at once; two feeds of
one warehouse would each compare against stock the other is adjusting. So a run holds
PostgreSQL advisory locks for its whole length: one on its run key (taken before anything is
loaded) and one per warehouse in its scope (taken, in id order, once the feed is loaded). A
second run waits for them up to CANGFLOW_RECONCILE_WAIT_SECONDS, then ends with "already
running (run N)".

The locks live on a connection of their own, outside the pool: the run's tasks commit and
return their connections freely, and a process that dies drops its connection and so its
locks (no slot can leak). The deployment's runs, the nightly's reconcile step and runs by hand
all take the same locks, so they share this limit whichever Prefect server, worker or host
starts them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from warehouse.db.engine import Database
from warehouse.errors import WarehouseError

# The first key of our two-key advisory locks: "CGR" plus a kind, so they never meet the
# locks of other code in the same database.
RUN_LOCK = 0x43475201
WAREHOUSE_LOCK = 0x43475202
POLL_SECONDS = 0.2
APPLICATION = "cangflow-reconcile"

_HOLDER = """
SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = CAST(%s AS oid) AND l.objid = CAST(%s AS oid) AND l.objsubid = 2
LIMIT 1
"""


class AlreadyRunning(WarehouseError):
    """Another reconciliation holds this feed or one of these warehouses."""


def key_of(run_key: str) -> int:
    """The run key as the second key of an advisory lock (a signed 32-bit integer)."""
    return int.from_bytes(hashlib.sha256(run_key.encode()).digest()[:4], "big", signed=True)


class Hold:
    """The locks one reconciliation run holds (see the module docstring)."""

    def __init__(self, connection, wait_seconds: float):
        self._connection = connection
        self._wait = wait_seconds

    def run(self, run_id: int, run_key: str) -> None:
        """Take the run's lock, waiting for another run of the same feed to end."""
        self._connection.execute(
            "SELECT set_config('application_name', %s, false)", (f"{APPLICATION}-run-{run_id}",)
        )
        self._take(
            RUN_LOCK,
            key_of(run_key),
            "reconciliation of this feed is already running ({holder}); rerun once it has ended",
        )

    def warehouses(self, warehouse_ids: Iterable[int]) -> None:
        """Take each warehouse's lock in id order (two runs never wait on each other crosswise)."""
        for warehouse_id in sorted(set(warehouse_ids)):
            self._take(
                WAREHOUSE_LOCK,
                int(warehouse_id),
                f"a reconciliation of warehouse id {warehouse_id} is already running ({{holder}})",
            )

    def sweep(self) -> list[str]:
        """Drop the staging tables other runs' killed attempts left, each only while holding its
        run's lock (a run being retried right now keeps its table)."""
        from warehouse.reconcile.feed import STAGING_TABLES, quoted_name, staging_run

        names = [row[0] for row in self._connection.execute(STAGING_TABLES).fetchall()]
        owners = {name: staging_run(name) for name in names}
        ids = sorted({run for run in owners.values() if run is not None})
        keys = dict(
            self._connection.execute(
                "SELECT id, run_key FROM reconciliation_run WHERE id = ANY(%s)", (ids,)
            ).fetchall()
        )
        dropped = []
        for run_id, run_key in keys.items():
            lock = (RUN_LOCK, key_of(run_key))
            if not self._connection.execute("SELECT pg_try_advisory_lock(%s, %s)", lock).fetchone()[
                0
            ]:
                continue  # that run is being worked on
            try:
                for name in sorted(n for n, owner in owners.items() if owner == run_id):
                    self._connection.execute(
                        f"DROP TABLE IF EXISTS {quoted_name(self._connection, name)}"
                    )
                    dropped.append(name)
            finally:
                self._connection.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
        return dropped

    def _take(self, kind: int, key: int, refusal: str) -> None:
        deadline = time.monotonic() + self._wait
        while True:
            if self._connection.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (kind, key)
            ).fetchone()[0]:
                return
            if time.monotonic() >= deadline:
                raise AlreadyRunning(refusal.format(holder=self._holder(kind, key)))
            time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.01)))

    def _holder(self, kind: int, key: int) -> str:
        row = self._connection.execute(_HOLDER, (kind, key & 0xFFFFFFFF)).fetchone()
        name = row[0] if row else ""
        prefix = f"{APPLICATION}-run-"
        return f"run {name[len(prefix) :]}" if name.startswith(prefix) else "another process"


@contextmanager
def reconciling(db: Database, *, wait_seconds: float) -> Iterator[Hold]:
    """A connection of its own for the run's locks; closing it releases them."""
    dialect = db.engine.dialect
    args, kwargs = dialect.create_connect_args(db.engine.url)
    connection = dialect.connect(
        *args, **{**kwargs, "autocommit": True, "application_name": APPLICATION}
    )
    try:
        db.act_as_role(connection)  # the sweep drops the app role's scratch tables as the app role
        yield Hold(connection, wait_seconds)
    finally:
        connection.close()
