"""The database the tasks of this process use: one engine per process, built on first use
from the settings (never at import time)."""

from __future__ import annotations

from functools import lru_cache

import warehouse
from warehouse import Database


@lru_cache(maxsize=1)
def database() -> Database:
    """From CANGFLOW_DATABASE_URL (or the embedded server), or from the Prefect Secret block
    named by CANGFLOW_DATABASE_SECRET_BLOCK, so a deployment keeps the URL out of its files."""
    return warehouse.connect(secret_url("database_secret_block"))


def secret_url(setting: str) -> str | None:
    from warehouse.settings import get_settings

    block = getattr(get_settings(), setting)
    if not block:
        return None
    from prefect.blocks.system import Secret

    return Secret.load(block).get()


def forget() -> None:
    """Drop the cached engine (tests that point the settings at another database)."""
    if database.cache_info().currsize:
        database().dispose()
    database.cache_clear()
