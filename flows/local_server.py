"""`cangflow server start|stop|status`: a Prefect server that keeps the run history, with its
database under CANGFLOW_HOME, and a process worker for the deployments, both in the background
like the embedded PostgreSQL.

Why: without a server, each `cangflow run ...` starts a temporary Prefect API (about 10 s here)
that vanishes with the command, taking the runs out of reach of the UI. While this server runs,
the command records its runs there instead (unless PREFECT_API_URL names another server).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

WORK_POOL = "cangflow-process"  # the pool deployments/prefect.yaml deploys to
HEALTH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ServerState:
    api_url: str
    ui_url: str
    server_pid: int
    worker_pid: int | None
    started_at: float


class ServerError(RuntimeError):
    pass


def folder(home: Path) -> Path:
    return home.resolve() / "prefect"


def _state_path(home: Path) -> Path:
    return folder(home) / "server.json"


def read_state(home: Path) -> ServerState | None:
    try:
        return ServerState(**json.loads(_state_path(home).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def auth_string() -> str | None:
    """CANGFLOW_SERVER_AUTH ("user:password"), Prefect's API auth string for the local server."""
    from warehouse.settings import get_settings

    secret = get_settings().server_auth
    return secret.get_secret_value() if secret else None


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def answers(api_url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    import httpx

    auth = auth_string()
    user, _, password = (auth or "").partition(":")
    try:
        return (
            httpx.get(
                f"{api_url}/health",
                timeout=timeout,
                auth=(user, password) if auth else None,
            ).status_code
            == 200
        )
    except httpx.HTTPError:
        return False


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def running(home: Path) -> ServerState | None:
    """The state of this home's server when its process lives and its API answers."""
    state = read_state(home)
    if state and _alive(state.server_pid) and answers(state.api_url):
        return state
    return None


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _environment(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(folder(home)),
            "CANGFLOW_HOME": str(home.resolve()),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    auth = auth_string()
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth  # what the worker and its runs send
    return env


def _spawn(arguments: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *arguments],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def start(
    home: Path,
    *,
    host: str,
    port: int,
    worker: bool = True,
    timeout_s: float = 180,
    progress=lambda message: None,
) -> tuple[ServerState, bool]:
    """Start the server (and the worker) unless this home's server runs; returns its state and
    whether it was started now."""
    if not loopback(host) and not auth_string():
        raise ServerError(
            f"listening on {host} exposes the API and UI beyond this machine: set CANGFLOW_SERVER_AUTH "
            "(user:password, Prefect's API auth) and put it behind your own access control, "
            "or keep the default 127.0.0.1"
        )
    current = running(home)
    if current:
        return current, False
    stop(home)  # leftovers of a server that died: its worker, its state file
    if not _port_free(host, port):
        raise ServerError(
            f"port {port} on {host} is taken by another program; "
            "choose another with --port (or CANGFLOW_SERVER_PORT)"
        )
    folder(home).mkdir(parents=True, exist_ok=True)
    shown_host = f"[{host}]" if ":" in host else host
    api_url = f"http://{shown_host}:{port}/api"
    server_env = _environment(home, api_url)
    server_env["PREFECT_SERVER_UI_API_URL"] = api_url  # where the UI in a browser finds the API
    auth = auth_string()
    if auth:
        server_env["PREFECT_SERVER_API_AUTH_STRING"] = auth  # every API call must carry it
    server = _spawn(
        ["prefect", "server", "start", "--host", host, "--port", str(port)],
        server_env,
        folder(home) / "server.log",
    )
    progress(
        f"Prefect server starting on {api_url.removesuffix('/api')} (log: {folder(home) / 'server.log'}) ..."
    )
    deadline = time.monotonic() + timeout_s
    while not answers(api_url):
        if server.poll() is not None:
            raise ServerError(
                f"the Prefect server exited with status {server.returncode}: "
                f"{_tail(folder(home) / 'server.log')}"
            )
        if time.monotonic() > deadline:
            _terminate(server.pid)
            raise ServerError(
                f"the Prefect server did not answer within {timeout_s:.0f} s "
                f"(log: {folder(home) / 'server.log'})"
            )
        time.sleep(0.5)
    worker_pid = None
    if worker:
        spawned = _spawn(
            [
                "prefect",
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
                "--name",
                f"cangflow-local-{socket.gethostname()}",
            ],
            _environment(home, api_url),
            folder(home) / "worker.log",
        )
        worker_pid = spawned.pid
    state = ServerState(api_url, api_url.removesuffix("/api"), server.pid, worker_pid, time.time())
    _state_path(home).write_text(json.dumps(asdict(state)))
    return state, True


def _terminate(pid: int | None, grace_s: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace_s`."""
    if pid is None or not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)  # our own child when started by this process
            if reaped:
                return
        except ChildProcessError:
            pass
        if not _alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(home: Path) -> bool:
    """Stop this home's worker and server; returns whether anything was running."""
    state = read_state(home)
    if state is None:
        return False
    was_running = _alive(state.server_pid)
    _terminate(state.worker_pid)
    _terminate(state.server_pid)
    _state_path(home).unlink(missing_ok=True)
    return was_running
