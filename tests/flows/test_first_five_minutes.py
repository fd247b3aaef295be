"""A new user's first five minutes, walked as the README tells it: no CANGFLOW_DATABASE_URL, no
CANGFLOW_REDIS_URL, no Prefect server, a fresh CANGFLOW_HOME. `uv run cangflow demo` runs on the
embedded PostgreSQL and Redis, twice; then with the local Prefect server running, whose runs a
browser then looks at; and, where the tests run as root, as an unprivileged user too (pgserver
behaves differently for root)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.services import chromium, free_port, page_text, redis_servers_of

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
SHOTS = PROJECT / "tests" / "output" / "screenshots"
UV = os.environ.get("UV") or shutil.which("uv")
DEMO_FLOWS = [
    "snapshot",
    "partition-rollover",
    "outbox-relay",
    "cache-warmup",
    "erp-reconciliation",
]
RUN_URL = re.compile(
    r"^  (\S+) +(\S+) +(\w+) +(http://\S+/runs/flow-run/([0-9a-f-]{36}))$", re.MULTILINE
)


def new_user_environment(base: Path) -> dict[str, str]:
    """This machine's environment as a new user has it: no cangflow or Prefect settings at all."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CANGFLOW_", "PREFECT_")) and key not in ("CI",)
    }
    env.update(
        CANGFLOW_HOME=str(base / "cangflow-home"),
        PREFECT_HOME=str(base / "prefect-home"),
        DO_NOT_TRACK="1",
        GX_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def uv_run(env: dict[str, str], *arguments: str, timeout: int = 600) -> subprocess.CompletedProcess:
    assert UV, "uv is not on PATH (the README's commands start with `uv run`)"
    return subprocess.run(
        [UV, "run", *arguments],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def figure(output: str, label: str) -> int:
    found = re.search(rf"^  {label} +([\d,]+)$", output, re.MULTILINE)
    assert found, f"no {label!r} line in:\n{output}"
    return int(found.group(1).replace(",", ""))


def assert_demo_passed(done: subprocess.CompletedProcess) -> None:
    shown = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, shown
    assert re.search(r"^invariants: 0 violations$", done.stdout, re.MULTILINE), shown
    assert "Traceback" not in done.stderr, shown
    assert "Calculating Metrics" not in done.stderr, "GX progress bars are back"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    base = tmp_path_factory.mktemp("new-user")
    env = new_user_environment(base)
    yield base, env
    uv_run(env, "cangflow", "server", "stop")
    stopped = uv_run(env, "cangflow", "db", "stop")
    assert "embedded Redis stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert redis_servers_of(base / "cangflow-home" / "redis" / "redis.sock") == 0


@pytest.fixture(scope="module")
def two_demos(fresh):
    _, env = fresh
    return [uv_run(env, "cangflow", "demo") for _ in range(2)]


def test_readme_demo_passes_twice_on_the_embedded_defaults(fresh, two_demos):
    base, _ = fresh
    for done in two_demos:
        assert_demo_passed(done)
        assert "cangflow server start" in done.stdout  # where to look next time
    first, second = (done.stdout for done in two_demos)
    assert (
        f"host={str(base / 'cangflow-home' / 'pg').replace('/', '%2F')}" in first
    )  # the embedded server
    assert (base / "cangflow-home" / "pg" / "PG_VERSION").exists()
    assert re.search(r"^cangflow demo on .*, as role cangflow_app$", first, re.MULTILINE), (
        first
    )  # least privilege
    assert "already loaded" not in first and figure(first, "succeeded") > 0
    assert "already loaded, nothing added" in second
    assert figure(second, "succeeded") == 0
    assert figure(second, "replayed") == figure(first, "succeeded") + figure(first, "replayed")
    assert re.search(r"^reconciliation: 5 difference\(s\)", first, re.MULTILINE), first
    assert re.search(
        r"^reconciliation: stale, feed \S+ was reconciled before", second, re.MULTILINE
    ), second
    # One embedded Redis for the home, reused by every command, not one left behind per command.
    assert redis_servers_of(base / "cangflow-home" / "redis" / "redis.sock") == 1


def test_with_the_local_server_the_demo_runs_are_kept_and_shown_in_the_ui(fresh, two_demos):
    import httpx

    _, env = fresh
    port = free_port()
    started = uv_run(env, "cangflow", "server", "start", "--port", str(port))
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"Prefect server started: http://127.0.0.1:{port}" in started.stdout
    assert uv_run(env, "cangflow", "server", "status").returncode == 0
    again = uv_run(env, "cangflow", "server", "start", "--port", str(port))  # the same input twice
    assert (
        again.returncode == 0
        and f"Prefect server already running: http://127.0.0.1:{port}" in again.stdout
    )

    demo = uv_run(env, "cangflow", "demo")
    assert_demo_passed(demo)
    assert "Starting temporary server" not in demo.stderr  # the runs went to the local server
    assert f"in the UI at http://127.0.0.1:{port}:" in demo.stdout, demo.stdout
    runs = RUN_URL.findall(demo.stdout)
    assert [flow for flow, *_ in runs] == DEMO_FLOWS, demo.stdout
    api = f"http://127.0.0.1:{port}/api"
    for flow, name, state, _url, run_id in runs:
        recorded = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        # The demo's feed was reconciled by the demos before this one: that run ends Stale (a
        # completed state of its own name, as a nightly without a new feed would).
        expected = "Stale" if flow == "erp-reconciliation" else "Completed"
        assert (recorded["name"], recorded["state_type"], state) == (name, "COMPLETED", expected)

    # What ops see: the runs page lists every run the demo made, and a run's own page opens.
    SHOTS.mkdir(parents=True, exist_ok=True)
    listing = page_text(f"http://127.0.0.1:{port}/runs", [name for _, name, *_ in runs])
    for flow, name, *_ in runs:
        assert name in listing, f"the runs page does not show the {flow} run {name}"
    flow, name, _, url, _ = runs[-1]
    assert name in page_text(url, [name])
    for shot, page in (
        ("demo-runs.png", f"http://127.0.0.1:{port}/runs"),
        ("demo-reconciliation-run.png", url),
    ):
        chromium(f"--screenshot={SHOTS / shot}", page)
        assert (SHOTS / shot).stat().st_size > 10_000, f"no screenshot of {page}"

    # A flow run by hand goes there too, with no temporary server, and says where.
    snapshot = uv_run(env, "cangflow", "run", "snapshot")
    assert snapshot.returncode == 0, snapshot.stdout + snapshot.stderr
    assert "Starting temporary server" not in snapshot.stderr
    recorded_at = re.search(
        rf"^  recorded at +(http://127.0.0.1:{port}/runs/flow-run/([0-9a-f-]{{36}}))$",
        snapshot.stdout,
        re.MULTILINE,
    )
    assert recorded_at, snapshot.stdout

    # The history outlives the server: stopped and started again, the runs are still there.
    stopped = uv_run(env, "cangflow", "server", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert uv_run(env, "cangflow", "server", "status").returncode == 1
    assert (
        uv_run(env, "cangflow", "server", "start", "--port", str(port), "--no-worker").returncode
        == 0
    )
    kept = httpx.get(f"{api}/flow_runs/{recorded_at.group(2)}", timeout=10)
    assert kept.status_code == 200 and kept.json()["state_type"] == "COMPLETED"


if hasattr(os, "geteuid") and os.geteuid() == 0:
    # Run as root here, so the tests above took pgserver's root path (it hands the data folder to
    # a system user of its own); a normal user's path is walked by a user made for it. Where the
    # tests run unprivileged, the tests above already walk that path.

    DEMO_USER = "cangflow-demo"

    @pytest.fixture(scope="module")
    def unprivileged():
        """A system user, and a copy of the locked environment on a Python it can run (the
        project's own interpreter may sit under root's home, which it cannot enter)."""
        if subprocess.run(["id", DEMO_USER], capture_output=True).returncode != 0:
            made = subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    DEMO_USER,
                ],
                capture_output=True,
                text=True,
            )
            assert made.returncode == 0, made.stderr
        base = Path(tempfile.mkdtemp(prefix="cangflow-unprivileged-"))
        base.chmod(0o755)
        home = base / "home"
        home.mkdir()
        shutil.chown(home, DEMO_USER)
        python = shutil.which("python3.11", path="/usr/bin") or shutil.which(
            "python3", path="/usr/bin"
        )
        assert python, "no system Python for the unprivileged user"
        # --reinstall-package: uv keys its cache of a local project's build on pyproject.toml
        # alone, so without it a wheel built from older sources of this checkout is reused.
        synced = subprocess.run(
            [
                UV,
                "sync",
                "--frozen",
                "--no-dev",
                "--no-editable",
                "--reinstall-package",
                "cangflow",
                "--python",
                python,
            ],
            cwd=PROJECT,
            env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(base / "venv")},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert synced.returncode == 0, synced.stderr[-3000:]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "CANGFLOW_HOME": str(home / ".cangflow"),
            "PREFECT_HOME": str(home / ".prefect"),
        }
        yield base, env
        as_user(base, env, "db", "stop")
        shutil.rmtree(base, ignore_errors=True)

    def as_user(base: Path, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "runuser",
                "-u",
                DEMO_USER,
                "--",
                "env",
                "-i",
                *(f"{k}={v}" for k, v in env.items()),
                str(base / "venv" / "bin" / "cangflow"),
                *arguments,
            ],
            cwd=base / "home",
            capture_output=True,
            text=True,
            timeout=600,
        )

    def test_the_demo_passes_twice_for_an_unprivileged_user(unprivileged):
        base, env = unprivileged
        small = ["--skus", "300", "--bins", "30", "--days", "10"]
        first, second = as_user(base, env, "demo", *small), as_user(base, env, "demo", *small)
        for done in (first, second):
            assert_demo_passed(done)
        data = base / "home" / ".cangflow" / "pg"
        assert data.stat().st_uid == int(
            subprocess.check_output(["id", "-u", DEMO_USER])
        )  # its own server
        assert (
            "already loaded, nothing added" in second.stdout
            and figure(second.stdout, "succeeded") == 0
        )
