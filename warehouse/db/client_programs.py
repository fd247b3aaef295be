"""PostgreSQL's client programs (pg_dump) of a version that can work with a given server.

pg_dump refuses a server of a newer major version than its own ("aborting because of server
version mismatch"), and a machine may hold several: the one on PATH, Debian's per-version ones
under /usr/lib/postgresql, and the one pgserver ships with the embedded server (PostgreSQL 16,
while Debian 12's PATH has 15)."""

from __future__ import annotations

import glob
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

from warehouse.errors import WarehouseError

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")


def _candidates(program: str) -> list[Path]:
    found = [shutil.which(program)]
    embedded = importlib.util.find_spec("pgserver")
    if embedded is not None and embedded.submodule_search_locations:
        for location in embedded.submodule_search_locations:
            found.append(str(Path(location) / "pginstall" / "bin" / program))
    found += sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))
    # Not resolved: Debian's /usr/bin/pg_dump links to a wrapper that goes by the name it is run as.
    unique: dict[Path, None] = {}
    for path in found:
        if path and Path(path).is_file():
            unique.setdefault(Path(path).absolute(), None)
    return list(unique)


def _major(path: Path) -> int | None:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # not a program this machine can run
        return None
    match = _VERSION.search(done.stdout)
    return int(match.group(1)) if match else None


def for_server(program: str, server_major: int) -> Path:
    """`program` of the lowest major version >= `server_major` on this machine, PATH's first
    among equals; a WarehouseError naming what was found when none is."""
    versions = [(path, _major(path)) for path in _candidates(program)]
    usable = sorted(
        (major, place, path)
        for place, (path, major) in enumerate(versions)
        if major is not None and major >= server_major
    )
    if not usable:
        seen = ", ".join(f"{path} ({major or 'unknown version'})" for path, major in versions)
        raise WarehouseError(
            f"no {program} of PostgreSQL {server_major} or newer on this machine "
            f"(found: {seen or 'none'}); install the server's client programs"
        )
    return usable[0][2]
