"""Arguments are checked before anything starts: a bad one exits 2 with one line naming the
argument and the value, and leaves no trace (no flow run, no quarantined file, no metric pushed).
The control, a well-formed command with a bad feed, shows each of those traces can be seen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import http_receiver, prefect_server

pytestmark = pytest.mark.integration

FEED_HEADER = "warehouse,sku,lot,quantity,as_of\n"


@pytest.fixture(scope="module")
def surroundings(tasks_db, tmp_path_factory):
    """A real Prefect server to count runs on, a Pushgateway stand-in, a quarantine folder."""
    base = tmp_path_factory.mktemp("arguments")
    quarantine = base / "quarantine"
    with prefect_server(base / "prefect") as prefect_env, http_receiver() as pushgateway:
        env = {
            **prefect_env,
            "CANGFLOW_QUARANTINE_DIR": str(quarantine),
            "CANGFLOW_PUSHGATEWAY_URL": pushgateway.url,
        }
        yield {"env": env, "base": base, "quarantine": quarantine, "pushgateway": pushgateway}


def cangflow(
    env: dict[str, str], *arguments: str, drop_root_reads: bool = False
) -> subprocess.CompletedProcess:
    prefix = []
    if (
        drop_root_reads and os.geteuid() == 0
    ):  # root reads any file; without these capabilities it cannot
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "flows.cli", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def flow_runs(env: dict[str, str]) -> int:
    import httpx

    return httpx.post(f"{env['PREFECT_API_URL']}/flow_runs/count", json={}, timeout=10).json()


def traces(surroundings) -> tuple[int, list[Path], int]:
    quarantined = (
        sorted(surroundings["quarantine"].rglob("*")) if surroundings["quarantine"].exists() else []
    )
    return flow_runs(surroundings["env"]), quarantined, len(surroundings["pushgateway"].requests)


@pytest.fixture(scope="module")
def files(surroundings):
    base = surroundings["base"]
    feed = base / "feed.csv"
    feed.write_text(FEED_HEADER + "NOWHERE,NOTHING,,1,2026-01-01T00:00:00+00:00\n")
    unreadable = base / "unreadable.csv"
    unreadable.write_text(FEED_HEADER)
    unreadable.chmod(0)
    folder = base / "a-folder"
    folder.mkdir()
    bad_tolerances = base / "bad-tolerances.csv"
    bad_tolerances.write_text("sku,category,abs,pct\nSKU-1,,x,5\n")
    return {
        "bad_tolerances": bad_tolerances,
        "feed": feed,
        "unreadable": unreadable,
        "folder": folder,
        "missing": base / "missing.csv",
    }


CASES = {
    "truth not wms or erp": (
        ["run", "reconcile", "--erp-file", "{feed}", "--truth", "foo"],
        "--truth 'foo'",
    ),
    "feed missing": (
        ["run", "reconcile", "--erp-file", "{missing}"],
        "--erp-file '{missing}': no such file",
    ),
    "feed a directory": (
        ["run", "reconcile", "--erp-file", "{folder}"],
        "--erp-file '{folder}': is a directory",
    ),
    "feed unreadable": (
        ["run", "reconcile", "--erp-file", "{unreadable}"],
        "--erp-file '{unreadable}': cannot be read",
    ),
    "tolerance over 100%": (
        ["run", "reconcile", "--erp-file", "{feed}", "--tolerance-pct", "150"],
        "--tolerance-pct 150.0",
    ),
    "negative tolerance": (
        ["run", "reconcile", "--erp-file", "{feed}", "--tolerance-abs", "-1"],
        "--tolerance-abs -1",
    ),
    "tolerances file missing": (
        ["run", "reconcile", "--erp-file", "{feed}", "--tolerances", "{missing}"],
        "--tolerances '{missing}': no such file",
    ),
    "tolerances file with a bad cell": (
        ["run", "reconcile", "--erp-file", "{feed}", "--tolerances", "{bad_tolerances}"],
        (
            "--tolerances '{bad_tolerances}': tolerance file bad-tolerances.csv rejected, "
            "nothing applied: row 1 (line 2), column abs, value 'x'"
        ),
    ),
    "erp query and no erp database": (
        ["run", "reconcile", "--erp-query", "SELECT 1"],
        "--erp-query needs --erp-url (or CANGFLOW_ERP_URL)",
    ),
    "erp database of another kind": (
        ["run", "reconcile", "--erp-query", "SELECT 1", "--erp-url", "mysql://u:hunter2@h/db"],
        "--erp-url: cangflow needs a postgresql+psycopg:// URL, got mysql://",
    ),
    "erp database not a URL": (
        ["run", "reconcile", "--erp-query", "SELECT 1", "--erp-url", "hunter2"],
        "--erp-url: is not a database URL",
    ),
    "month to reopen": (["history", "reopen", "2026-1", "--reason", "x"], "MONTH '2026-1'"),
    "reopen with a blank reason": (
        ["history", "reopen", "2026-01", "--reason", "  "],
        "--reason '  ': say why",
    ),
    "no feed at all": (["run", "reconcile"], "give --erp-file PATH"),
    "quantity not a number": (
        ["run", "reconcile", "--erp-file", "{feed}", "--tolerance-abs", "x"],
        "'--tolerance-abs'",
    ),
    "unknown option": (["run", "reconcile", "--erp-file", "{feed}", "--truht", "erp"], "--truht"),
    "not a date": (["run", "snapshot", "--date", "2026-02-30"], "--date '2026-02-30'"),
    "warm top zero": (["run", "warmup", "--top", "0"], "'--top'"),
    "catalog kind": (["catalog", "import", "gadgets", "{feed}"], "KIND 'gadgets'"),
    "catalog file missing": (
        ["catalog", "import", "skus", "{missing}"],
        "FILE '{missing}': no such file",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_argument_exits_2_naming_it_and_leaves_no_trace(case, surroundings, files):
    arguments, expected = CASES[case]
    arguments = [part.format(**files) for part in arguments]
    before = traces(surroundings)
    done = cangflow(surroundings["env"], *arguments, drop_root_reads=case == "feed unreadable")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected.format(**files) in lines[0], lines[0]
    assert "hunter2" not in done.stdout + done.stderr  # a password never shows
    assert traces(surroundings) == before  # no run created, nothing quarantined, no metric pushed


def test_control_a_rejected_feed_exits_1_and_leaves_each_trace_the_checks_look_for(
    surroundings, files
):
    runs, quarantined, pushes = traces(surroundings)
    done = cangflow(surroundings["env"], "run", "reconcile", "--erp-file", str(files["feed"]))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in done.stderr
    after_runs, after_quarantined, after_pushes = traces(surroundings)
    assert (
        after_runs == runs + 1
        and len(after_quarantined) > len(quarantined)
        and after_pushes > pushes
    )
