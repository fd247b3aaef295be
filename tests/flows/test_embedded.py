"""A new user's path: no CANGFLOW_DATABASE_URL, so cangflow starts its own embedded PostgreSQL
(pgserver) under CANGFLOW_HOME, converts it to the three roles, migrates it as the owner, checks
the books as the app role, and stops it on request."""

import os

import psycopg
import pytest

from tests.services import cangflow_run
from warehouse.db import schema
from warehouse.db.embedded import postgres_url
from warehouse.db.roles import RoleNames


def cangflow(home, *arguments):
    env = {key: value for key, value in os.environ.items() if key != "CANGFLOW_DATABASE_URL"}
    env["CANGFLOW_HOME"] = str(home)
    return cangflow_run(env, *arguments)


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "cangflow-home"
    yield path
    cangflow(path, "db", "stop")


def test_commands_run_on_an_embedded_database_when_no_url_is_set(home):
    names = RoleNames.from_settings()
    upgraded = cangflow(home, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"at revision {schema.head_revision()}, as role {names.owner}" in upgraded.stdout
    assert (home / "pg" / "PG_VERSION").exists()
    checked = cangflow(home, "check")  # reuses the running server
    assert checked.returncode == 0, checked.stderr
    assert "books check (full): ok" in checked.stdout
    # The embedded default made the three roles and logs in as them: the app role is refused
    # what it may not do, and the reader writes nothing.
    for role, statement in (
        ("app", "DELETE FROM stock_movement"),
        ("app", "TRUNCATE stock_snapshot"),
        ("app", "CREATE TABLE public.x (id int)"),
        ("reader", "INSERT INTO sku (code) VALUES ('x')"),
    ):
        with psycopg.connect(
            postgres_url(home, role=role).replace("postgresql+psycopg://", "postgresql://", 1)
        ) as connection:
            assert connection.execute("SELECT current_user").fetchone()[0] == names.of(role)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)
    # This process holds a pgserver handle on the server (postgres_url above): stop means stop.
    stopped = cangflow(home, "db", "stop")
    assert "embedded PostgreSQL stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not (home / "pg" / "postmaster.pid").exists()
    again = cangflow(home, "db", "stop")
    assert "no embedded PostgreSQL runs here" in again.stdout, again.stdout + again.stderr
