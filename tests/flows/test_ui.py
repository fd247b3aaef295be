"""What ops see: a nightly run recorded on a real Prefect server, looked at in headless
Chromium. Screenshots of the flow runs and of an artifact are saved under
tests/output/screenshots/. Skipped, saying why, where Chromium is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import World
from tests.services import prefect_server

pytestmark = pytest.mark.integration

SHOTS = Path(__file__).resolve().parents[1] / "output" / "screenshots"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browser(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--window-size=1440,1000", "--virtual-time-budget=20000", *arguments],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (Debian package: chromium)")
def test_ops_see_the_nightly_runs_and_their_artifacts_in_the_prefect_ui(tasks_db, tmp_path):
    from datetime import datetime, timedelta, timezone

    from warehouse import stock

    world = World.create(tasks_db, bins=1)
    sku = world.add_sku()
    with tasks_db.session() as s:  # history, so the snapshot run builds days worth looking at
        stock.receive(s, warehouse=world.warehouse, sku=sku, qty=3, location=world.locations[0],
                      occurred_at=datetime.now(timezone.utc) - timedelta(days=2))
    with prefect_server(tmp_path / "prefect") as env:
        nightly = subprocess.run([sys.executable, "-c", "from flows.nightly import nightly_flow; nightly_flow()"],
                                 env=env, capture_output=True, text=True, timeout=600)
        assert nightly.returncode == 0, nightly.stdout[-3000:] + nightly.stderr[-3000:]
        SHOTS.mkdir(parents=True, exist_ok=True)
        base = env["PREFECT_API_URL"].removesuffix("/api")
        for name, page in (("flow-runs", "/runs"), ("snapshot-artifact", "/artifacts/key/snapshot-run")):
            shot = SHOTS / f"{name}.png"
            _browser(f"--screenshot={shot}", base + page)
            assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot of {page}"
        dom = _browser("--dump-dom", base + "/runs").stdout
        assert "nightly" in dom, "the flow runs page does not show the nightly run"
