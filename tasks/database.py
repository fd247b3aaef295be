"""The database the tasks of this process use: one engine per process, built on first use
from the settings (never at import time)."""

from __future__ import annotations

import threading
from typing import cast

import warehouse
from warehouse import Database
from warehouse.db.roles import ROLES, Role, RoleNames

_ENGINES: dict[Role, Database] = {}
_LOCK = threading.Lock()


def database(role: Role = "app") -> Database:
    """The engine of `role` (warehouse.db.roles: data steps use the app role, DDL the owner, the
    quality suites the reader), from `role_url`: a deployment keeps every URL out of its files."""
    with _LOCK:
        if role not in _ENGINES:
            db = warehouse.connect(role_url(role), role=role)
            bound_statements(db)
            _ENGINES[role] = db
        return _ENGINES[role]


def role_url(role: Role) -> str | None:
    """The role's own URL (its Secret block, then its setting), else the shared Secret block;
    None leaves the rest to `warehouse.connect` (CANGFLOW_DATABASE_URL, else embedded)."""
    from warehouse.settings import get_settings

    return (
        secret_url(f"{role}_database_secret_block")
        or getattr(get_settings(), f"{role}_database_url")
        or secret_url("database_secret_block")
    )


def role_passwords(names: RoleNames) -> dict[Role, str | None]:
    """Each role's password, from the password in its own URL (a Secret block or a setting)
    when that URL logs in as the role; `cangflow db roles` sets them."""
    from sqlalchemy.engine import make_url

    from warehouse.settings import get_settings

    settings = get_settings()
    passwords: dict[Role, str | None] = {}
    for role in ROLES:
        url = secret_url(f"{role}_database_secret_block") or getattr(
            settings, f"{role}_database_url"
        )
        parsed = make_url(url) if url else None
        passwords[role] = (
            parsed.password if parsed is not None and parsed.username == names.of(role) else None
        )
    return passwords


def bound_statements(db: Database) -> None:
    """Every connection of the flows' engine gets CANGFLOW_JOB_STATEMENT_TIMEOUT_S as its
    statement_timeout (a session default; a task may still SET LOCAL a longer one)."""
    from warehouse.settings import get_settings

    db.bound_statements(get_settings().job_statement_timeout_s)


def secret_url(setting: str) -> str | None:
    from warehouse.settings import get_settings

    block = getattr(get_settings(), setting)
    if not block:
        return None
    from prefect.blocks.system import Secret

    # Called from synchronous code, `load` returns the block itself (its type says "or an
    # awaitable" because the same name serves async callers).
    secret = cast(Secret, Secret.load(block))
    return secret.get()


def forget() -> None:
    """Drop the cached engine (tests that point the settings at another database)."""
    with _LOCK:
        for db in _ENGINES.values():
            db.dispose()
        _ENGINES.clear()
