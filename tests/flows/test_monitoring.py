"""A flow run's batch metrics reach the Pushgateway as gauges of its last run: when it ended,
whether it failed, how long it took, what it processed, and what the domain code set during the
run. A push carries only what the run set: a failed run leaves the last success time alone, a
good run leaves the last failure time alone, so the alert on a failure still sees it after a
later good run (shown with a real Pushgateway and the rule itself, through promtool)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from flows.monitoring import run_metrics
from tests.services import free_port, http_receiver
from warehouse.metrics import sinks as metrics

MONITORING = Path(__file__).resolve().parents[2] / "deployments" / "monitoring"


@pytest.fixture
def pushgateway(monkeypatch):
    from warehouse.settings import get_settings

    with http_receiver() as gateway:
        monkeypatch.setattr(get_settings(), "pushgateway_url", gateway.url)
        yield gateway.requests


def test_a_successful_run_pushes_its_last_run_gauges_and_what_the_run_set_but_no_library_counter(
    pushgateway,
):
    with run_metrics("snapshot") as run:
        metrics.current().set("cangflow_partition_default_rows", 0, table="stock_movement")
        metrics.current().inc(
            "cangflow_cache_misses_total"
        )  # a library metric: the process's, never pushed
        metrics.current().inc("cangflow_db_slow_queries_total", 2, operation="SELECT")
        run.items = 42
    ((method, path, body),) = pushgateway
    assert (
        method == "POST" and "/job/cangflow_snapshot/instance/" in path
    )  # pushadd: replaces only what it carries
    for line in (
        'cangflow_flow_last_run_failed{flow="snapshot"} 0.0',
        'cangflow_flow_last_items_processed{flow="snapshot"} 42.0',
        'cangflow_flow_last_slow_statements{flow="snapshot"} 2.0',
        'cangflow_partition_default_rows{table="stock_movement"} 0.0',
    ):
        assert line in body
    assert 'cangflow_flow_last_success_timestamp_seconds{flow="snapshot"}' in body
    assert (
        "cangflow_flow_last_failure_timestamp_seconds" not in body
    )  # not even its HELP: the last failure stays
    assert (
        "cangflow_cache_misses_total" not in body and "_total" not in body
    )  # no per-run counter to reset


def test_a_failed_run_pushes_its_failure_time_but_no_success_time(pushgateway):
    with pytest.raises(RuntimeError), run_metrics("rollover"):
        raise RuntimeError("boom")
    ((_, _, body),) = pushgateway
    assert 'cangflow_flow_last_run_failed{flow="rollover"} 1.0' in body
    assert 'cangflow_flow_last_failure_timestamp_seconds{flow="rollover"}' in body
    assert "cangflow_flow_last_success_timestamp_seconds" not in body


def test_no_gateway_configured_pushes_nothing_and_a_dead_one_does_not_fail_the_run(monkeypatch):
    from warehouse.settings import get_settings

    monkeypatch.setattr(get_settings(), "pushgateway_url", "http://127.0.0.1:9")  # nothing listens
    with run_metrics("warmup"):
        pass  # the push fails, is logged, and the run still succeeds


def test_with_a_real_pushgateway_a_failed_run_still_fires_its_alert_after_a_later_good_run(
    monkeypatch, tmp_path
):
    """Debian's prometheus-pushgateway on a free port: a failed nightly, then a good one; the
    gateway's series, fed to promtool with the project's rules, fire CangflowFlowFailed (and a
    gateway that saw only good runs does not)."""
    import shutil

    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("no Pushgateway installed (Debian package: prometheus-pushgateway)")
    from warehouse.settings import get_settings

    def pushed(runs: list[bool]) -> str:
        with pushgateway_process(binary) as url:
            monkeypatch.setattr(get_settings(), "pushgateway_url", url)
            for fails in runs:
                try:
                    with run_metrics("nightly"):
                        if fails:
                            raise RuntimeError("the books do not add up")
                except RuntimeError:
                    pass
            with urllib.request.urlopen(url + "/metrics", timeout=5) as page:
                return page.read().decode()

    after_a_failure = pushed([True, False])
    assert (
        'cangflow_flow_last_failure_timestamp_seconds{flow="nightly",instance=' in after_a_failure
    )
    assert 'cangflow_flow_last_run_failed{flow="nightly",instance=' in after_a_failure
    got = fires(tmp_path / "failed", after_a_failure, "CangflowFlowFailed")
    assert got and 'alertname="CangflowFlowFailed"' in got and 'flow="nightly"' in got
    assert fires(tmp_path / "good", pushed([False, False]), "CangflowFlowFailed") is None


@contextmanager
def pushgateway_process(binary: str):
    port = free_port()
    gateway = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        gateway.kill()
        gateway.wait(timeout=10)


SAMPLE = re.compile(r"^(cangflow_\w+)\{([^}]*)\} (\S+)$", re.MULTILINE)


def fires(folder: Path, exposition: str, alert: str) -> str | None:
    """What promtool says `alert` fired with (labels and annotations) on the scraped series held
    steady for an hour, evaluated with the project's rules; None when it does not fire. The
    samples' times are Unix times near now: promtool's clock starts at 0, so each is shifted
    to the same distance from the evaluation time."""
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    evaluated = 3600
    series = []
    for name, labels, value in SAMPLE.findall(exposition):
        number = float(value)
        if name.endswith("_timestamp_seconds"):
            number = evaluated - (now - number)
        series.append(
            {
                "series": f'{name}{{{labels},job="cangflow_nightly"}}'
                if "job=" not in labels
                else f"{name}{{{labels}}}",
                "values": f"{number}x60",
            }
        )
    case = {
        "rule_files": [str(MONITORING / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": f"{evaluated}s", "alertname": alert, "exp_alerts": []}
                ],
            }
        ],
    }
    path = folder / "case.yml"
    path.write_text(yaml.safe_dump(case))
    done = subprocess.run(
        [shutil.which("promtool"), "test", "rules", str(path)], capture_output=True, text=True
    )
    if done.returncode == 0:
        return None
    said = done.stdout + done.stderr
    assert "got:" in said, said  # a failed expectation, not a broken test file
    return said
