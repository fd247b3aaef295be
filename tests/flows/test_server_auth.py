"""The local Prefect server listens on loopback by default; listening beyond it is refused
unless CANGFLOW_SERVER_AUTH is set, and with it the server answers no API call without the
credentials, while the commands and Prefect clients that carry them work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flows.cli import main as cangflow
from tests.services import free_port

pytestmark = pytest.mark.integration


def test_an_exposed_server_without_credentials_is_refused_before_anything_starts(
    tmp_path, monkeypatch, capsys
):
    from warehouse.settings import get_settings

    monkeypatch.setenv("CANGFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("CANGFLOW_SERVER_AUTH", raising=False)
    get_settings.cache_clear()
    try:
        assert (
            cangflow(
                ["server", "start", "--host", "0.0.0.0", "--port", str(free_port()), "--no-worker"]
            )
            == 2
        )
        assert "set CANGFLOW_SERVER_AUTH" in capsys.readouterr().err
        assert not (tmp_path / "prefect" / "server.json").exists()
    finally:
        get_settings.cache_clear()


def test_with_credentials_the_server_answers_only_calls_that_carry_them(tmp_path):
    import httpx

    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env.update(CANGFLOW_HOME=str(tmp_path), CANGFLOW_SERVER_AUTH="ops:s3cret-Pa55")
    port = free_port()
    command = [sys.executable, "-m", "flows.cli", "server"]
    started = subprocess.run(
        [*command, "start", "--port", str(port), "--no-worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        api = f"http://127.0.0.1:{port}/api"
        assert httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).status_code == 401
        assert (
            httpx.post(
                f"{api}/flow_runs/filter", json={}, auth=("ops", "wrong"), timeout=10
            ).status_code
            == 401
        )
        assert (
            httpx.post(
                f"{api}/flow_runs/filter", json={}, auth=("ops", "s3cret-Pa55"), timeout=10
            ).status_code
            == 200
        )
        assert (
            subprocess.run(
                [*command, "status"], env=env, capture_output=True, timeout=120
            ).returncode
            == 0
        )
        client = (
            "from prefect.client.orchestration import get_client\n"
            "with get_client(sync_client=True) as c:\n    print(len(c.read_flow_runs()))"
        )
        with_auth = subprocess.run(
            [sys.executable, "-c", client],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": "ops:s3cret-Pa55"},
        )
        assert with_auth.returncode == 0, with_auth.stderr[-2000:]
        without = subprocess.run(
            [sys.executable, "-c", client],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "PREFECT_API_URL": api},
        )
        assert without.returncode != 0 and "401" in without.stderr
    finally:
        subprocess.run([*command, "stop"], env=env, capture_output=True, timeout=120)
