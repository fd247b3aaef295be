"""Per-role URLs with passwords, on a server that asks for them. The test server trusts
127.0.0.1, so every other test would pass with any password or none; here an embedded server
(pgserver, under a home of this test's own) is told to ask its roles for SCRAM passwords.
`cangflow db roles` sets each role's password from the password in that role's URL (reserved
characters percent-encoded in the URL, as a URL needs them), and the commands then log in with
those URLs and nothing else."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
from sqlalchemy.engine import make_url

import warehouse
from tests.services import cangflow_run
from warehouse.db import client_programs, schema
from warehouse.db.embedded import postgres_url
from warehouse.db.roles import ROLES, RoleNames
from warehouse.history import retention

pytestmark = pytest.mark.integration

# Each reserved in a URL's password: '@' and ':' end it, '/' and '?' and '#' end the authority.
PASSWORDS = {"owner": "own@er:pw/1", "app": "app?p#w%2F", "reader": "read er&pw=3"}


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def login(url: str, password: str | None) -> psycopg.Connection:
    """A connection to `url`'s server and database as its user, with `password` (None: none)."""
    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.query["host"],
        dbname=parsed.database,
        user=parsed.username,
        **({} if password is None else {"password": password}),
    )


@pytest.fixture
def asking_server(tmp_path):
    """An embedded server converted to the roles; its superuser's URL and each role's URL
    with that role's password."""
    home = tmp_path / "cangflow-home"
    superuser = postgres_url(home, role=None)
    names = RoleNames.from_settings()
    role_urls = {
        role: make_url(superuser)
        .set(username=names.of(role), password=PASSWORDS[role])
        .render_as_string(hide_password=False)
        for role in ROLES
    }
    try:
        yield home, superuser, role_urls
    finally:  # as a user stops it, while this process still holds its pgserver handle on it
        env = {key: value for key, value in os.environ.items() if not key.startswith("CANGFLOW_")}
        stopped = cangflow_run({**env, "CANGFLOW_HOME": str(home)}, "db", "stop")
        assert "embedded PostgreSQL stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not (home / "pg" / "postmaster.pid").exists()  # it did stop


def ask_for_passwords(home, superuser: str) -> None:
    """Every role but the superuser authenticates by SCRAM on the server's socket from now on."""
    user = make_url(superuser).username
    (home / "pg" / "pg_hba.conf").write_text(
        f"local all {user} trust\nlocal all all scram-sha-256\n"
    )
    with psycopg.connect(libpq(superuser), autocommit=True) as connection:
        assert connection.execute("SELECT pg_reload_conf()").fetchone() == (True,)
        # The file is read again on the reload: a line it could not parse would keep the old one.
        errors = connection.execute(
            "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
        ).fetchall()
        assert errors == []


def test_db_roles_sets_each_roles_password_from_its_url_and_the_commands_log_in_with_it(
    asking_server, tmp_path
):
    home, superuser, role_urls = asking_server
    names = RoleNames.from_settings()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CANGFLOW_")}
    env.update(
        CANGFLOW_HOME=str(home),
        CANGFLOW_DATABASE_URL=superuser,
        **{f"CANGFLOW_{role.upper()}_ROLE": names.of(role) for role in ROLES},
        **{f"CANGFLOW_{role.upper()}_DATABASE_URL": url for role, url in role_urls.items()},
    )
    converted = cangflow_run(env, "db", "roles")
    assert converted.returncode == 0, converted.stderr
    assert "roles created: none (they exist)" in converted.stdout  # the embedded start made them
    for url in role_urls.values():  # no password in what the command prints
        assert make_url(url).password not in converted.stdout + converted.stderr

    ask_for_passwords(home, superuser)
    for role, url in role_urls.items():
        with login(url, PASSWORDS[role]) as connection:
            assert connection.execute("SELECT current_user").fetchone() == (names.of(role),)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            login(url, PASSWORDS[role] + "x").close()
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            login(url, None).close()  # the control: the server does ask

    # The commands, with only the roles' URLs: each logs in as its own role by its password.
    del env["CANGFLOW_DATABASE_URL"]
    upgraded = cangflow_run(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"at revision {schema.head_revision()}, as role {names.owner}" in upgraded.stdout
    checked = cangflow_run(env, "check")
    assert checked.returncode == 0, checked.stderr
    assert "books check (full): ok" in checked.stdout

    # pg_dump (retention_mode=drop) as the owner: the password reaches it by the environment,
    # and the command line, which `ps` shows every user of the machine, does not carry it.
    owner = warehouse.connect(role_urls["owner"], role="owner", pool_size=1)
    commands: list[list[str]] = []
    real_run = subprocess.run

    def watched_run(arguments, **kwargs):
        commands.append([str(argument) for argument in arguments])
        return real_run(arguments, **kwargs)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(subprocess, "run", watched_run)
            dumped = retention.dump(owner, "sku", tmp_path / "dumps", schema="public")
    finally:
        owner.dispose()
    [command] = [command for command in commands if "--format=custom" in command]
    assert make_url(command[-1]).password is None, command  # the DSN, last
    assert not any(PASSWORDS["owner"] in argument for argument in command)
    # pgserver's PostgreSQL is 16, Debian 12's pg_dump on PATH 15 (which refuses a newer server):
    # the dump came from a pg_dump that could read the server, and its pg_restore reads it.
    listed = subprocess.run(
        [client_programs.for_server("pg_restore", 16), "--list", dumped],
        capture_output=True,
        text=True,
    )
    assert "TABLE public sku" in listed.stdout, listed.stderr
