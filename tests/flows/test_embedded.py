"""A new user's path: no CANGFLOW_DATABASE_URL, so cangflow starts its own embedded PostgreSQL
(pgserver) under CANGFLOW_HOME, migrates it, and stops it on request."""

import os
import subprocess
import sys

import pytest

from warehouse import schema


def cangflow(home, *arguments):
    env = {key: value for key, value in os.environ.items() if key != "CANGFLOW_DATABASE_URL"}
    env["CANGFLOW_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *arguments], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "cangflow-home"
    yield path
    cangflow(path, "db", "stop")


def test_commands_run_on_an_embedded_database_when_no_url_is_set(home):
    upgraded = cangflow(home, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"at revision {schema.head_revision()}" in upgraded.stdout
    assert (home / "pg" / "PG_VERSION").exists()
    checked = cangflow(home, "check")  # reuses the running server
    assert checked.returncode == 0, checked.stderr
    assert "books check (full): ok" in checked.stdout
    stopped = cangflow(home, "db", "stop")
    assert "stopped" in stopped.stdout
