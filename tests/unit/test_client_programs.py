"""Which pg_dump serves which server: this machine has at least Debian's on PATH and the one
pgserver ships (the embedded server's, 16)."""

import subprocess

import pytest

from warehouse.db import client_programs
from warehouse.errors import WarehouseError


def major(path) -> int:
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    return int(done.stdout.split("(PostgreSQL) ")[1].split(".")[0])


@pytest.mark.parametrize("server", [15, 16])
def test_a_pg_dump_at_least_as_new_as_the_server_and_the_oldest_such(server):
    chosen = major(client_programs.for_server("pg_dump", server))
    assert chosen >= server
    # None older than the chosen one would also do: the closest to the server's version wins.
    found = [major(path) for path in client_programs._candidates("pg_dump")]
    assert chosen == min(version for version in found if version >= server)


def test_a_server_newer_than_every_pg_dump_is_named_with_what_was_found():
    with pytest.raises(WarehouseError, match=r"no pg_dump of PostgreSQL 99 or newer .*\(16\)"):
        client_programs.for_server("pg_dump", 99)
