"""The database the tasks of this process use: one engine per process, built on first use
from the settings (never at import time)."""

from __future__ import annotations

from functools import lru_cache

import warehouse
from warehouse import Database


@lru_cache(maxsize=1)
def database() -> Database:
    return warehouse.connect()


def forget() -> None:
    """Drop the cached engine (tests that point the settings at another database)."""
    if database.cache_info().currsize:
        database().dispose()
    database.cache_clear()
