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
    db = warehouse.connect(secret_url("database_secret_block"))
    bound_statements(db)
    return db


def bound_statements(db: Database) -> None:
    """Every connection of the flows' engine gets CANGFLOW_JOB_STATEMENT_TIMEOUT_S as its
    statement_timeout (a session default; a task may still SET LOCAL a longer one)."""
    from sqlalchemy import event

    from warehouse.settings import get_settings

    timeout_ms = int(get_settings().job_statement_timeout_s * 1000)

    @event.listens_for(db.engine, "connect")
    def _bound(dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {timeout_ms}")
        dbapi_connection.commit()


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
