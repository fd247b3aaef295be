"""Local stand-ins tests start on free ports: an HTTP receiver (webhook, Pushgateway) and a
real Prefect server in a subprocess; the `cangflow` command in a process of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


def cangflow_run(
    env: dict[str, str], *arguments: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`cangflow ARGUMENTS` in a new process (`python -m flows.cli`) with exactly `env`."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Receiver:
    port: int
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bodies(self) -> list[str]:
        return [body for _, _, body in self.requests]


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    """Answers 200 to every POST and keeps what it was sent."""
    requests: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            requests.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Receiver(server.server_port, requests)
    finally:
        server.shutdown()
        server.server_close()  # shutdown stops the loop; this closes the listening socket


@contextmanager
def tcp_forwarder(listen_host: str, target: tuple[str, int]) -> Iterator[int]:
    """Accepts on `listen_host` (an IPv6 address works) and pipes each connection to `target`;
    yields the port. For reaching the local PostgreSQL, which listens on 127.0.0.1 only, through
    an address of another shape."""
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((listen_host, 0))
    listener.listen(16)

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def relay(client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join()
        client.close()  # both directions are done: nothing uses either end any more
        upstream.close()

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(target)
            threading.Thread(target=relay, args=(client, upstream), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free port; yields the environment that points at it."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield env
    finally:
        os.killpg(server.pid, 9)
        server.wait(timeout=30)


CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)


def chromium(*arguments: str, budget_ms: int = 20000) -> subprocess.CompletedProcess:
    """Headless Chromium as a one-shot command (--screenshot=..., --dump-dom); `.ci/run` installs
    Debian's package. Background networking off: this machine has no internet."""
    assert CHROMIUM, "Chromium is not installed (Debian package: chromium; .ci/run installs it)"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1440,1000",
            f"--virtual-time-budget={budget_ms}",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def page_text(url: str, expected: list[str], attempts: int = 4) -> str:
    """The DOM of `url` once it shows every text of `expected` (or the last try's). A single-page
    app fills in after its API calls, which a loaded machine may not answer within Chromium's
    virtual-time budget: each try waits longer."""
    dom = ""
    for attempt in range(attempts):
        dom = chromium("--dump-dom", url, budget_ms=20000 * (attempt + 1)).stdout
        if all(text in dom for text in expected):
            break
        time.sleep(2)
    return dom


def redis_servers_of(path: Path | str) -> int:
    """How many redis-server processes have `path` (their socket, or a folder above it) on
    their command line (Redis rewrites its title, so the arguments arrive as one string)."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        count += b"redis-server" in arguments[0] and str(path).encode() in b" ".join(arguments)
    return count
