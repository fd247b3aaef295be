"""A flow run's metrics reach the Pushgateway: outcome, duration, last success, and what the
domain code recorded during the run; a failed run leaves the last success time alone."""

from __future__ import annotations


import pytest

from flows.monitoring import run_metrics
from tests.services import free_port, http_receiver
from warehouse import metrics


@pytest.fixture
def pushgateway(monkeypatch):
    from warehouse.settings import get_settings

    with http_receiver() as gateway:
        monkeypatch.setattr(get_settings(), "pushgateway_url", gateway.url)
        yield gateway.requests


def test_a_successful_run_pushes_its_outcome_duration_success_time_and_domain_metrics(pushgateway):
    with run_metrics("snapshot"):
        metrics.current().inc("cangflow_cache_misses_total")
    (method, path, body), = pushgateway
    assert method == "POST" and "/job/cangflow_snapshot/instance/" in path
    assert 'cangflow_flow_runs_total{flow="snapshot",state="completed"} 1.0' in body
    assert "cangflow_flow_last_success_timestamp_seconds" in body
    assert "cangflow_cache_misses_total 1.0" in body


def test_a_failed_run_pushes_its_failure_but_no_success_time(pushgateway):
    with pytest.raises(RuntimeError):
        with run_metrics("rollover"):
            raise RuntimeError("boom")
    (_, _, body), = pushgateway
    assert 'cangflow_flow_runs_total{flow="rollover",state="failed"} 1.0' in body
    assert "cangflow_flow_last_success_timestamp_seconds{" not in body


def test_no_gateway_configured_pushes_nothing_and_a_dead_one_does_not_fail_the_run(monkeypatch):
    from warehouse.settings import get_settings

    monkeypatch.setattr(get_settings(), "pushgateway_url", "http://127.0.0.1:9")  # nothing listens
    with run_metrics("warmup"):
        pass  # the push fails, is logged, and the run still succeeds


def test_a_real_pushgateway_serves_what_a_run_pushed(monkeypatch, tmp_path):
    """Debian's prometheus-pushgateway, started on a free port; skipped where it is missing."""
    import shutil
    import subprocess
    import time
    import urllib.request

    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("no Pushgateway installed (Debian package: prometheus-pushgateway)")
    port = free_port()
    gateway = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        from warehouse.settings import get_settings

        monkeypatch.setattr(get_settings(), "pushgateway_url", url)
        with run_metrics("snapshot"):
            metrics.current().inc("cangflow_cache_misses_total", 3)
        scraped = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        assert 'cangflow_flow_runs_total{flow="snapshot",instance=' in scraped
        assert 'job="cangflow_snapshot"' in scraped and "cangflow_flow_last_success_timestamp_seconds" in scraped
    finally:
        gateway.kill()
        gateway.wait(timeout=10)
