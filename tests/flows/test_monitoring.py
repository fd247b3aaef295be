"""A flow run's metrics reach the Pushgateway: outcome, duration, last success, and what the
domain code recorded during the run; a failed run leaves the last success time alone."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from flows.monitoring import run_metrics
from warehouse import metrics


@pytest.fixture
def pushgateway(monkeypatch):
    received: list[tuple[str, str, str]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    from warehouse.settings import get_settings

    monkeypatch.setattr(get_settings(), "pushgateway_url", f"http://127.0.0.1:{server.server_port}")
    yield received
    server.shutdown()


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
