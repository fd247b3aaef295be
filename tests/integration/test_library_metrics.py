"""Library metrics count where the work happens: in a plain Python process (no flow, no
Prefect), after `stock.deduct` and `StockCache.available`, prometheus_client's default registry
shows the deduction and cache samples, as a WMS service's own /metrics would; in multiprocess
mode they add up across processes; `cangflow metrics serve` serves them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.services import free_port

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent("""
    import sys
    import warehouse
    from prometheus_client import generate_latest
    from warehouse import stock
    from warehouse.metrics import sinks as metrics
    from warehouse.cache import StockCache
    from warehouse.errors import InsufficientStock

    db = warehouse.connect()
    warehouse_code, sku = sys.argv[1], sys.argv[2]
    with db.session() as s:
        stock.deduct(s, warehouse=warehouse_code, sku=sku, qty=1)
    try:
        with db.session() as s:
            stock.deduct(s, warehouse=warehouse_code, sku=sku, qty=10**6)
    except InsufficientStock:
        pass
    cache = StockCache(db)
    for _ in range(3):
        cache.available(warehouse=warehouse_code, sku=sku)
    cache.close()
    print(generate_latest(metrics.serve_registry()).decode())
""")


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CANGFLOW_DATABASE_URL": database_url,
        "CANGFLOW_REDIS_URL": TEST_REDIS_URL,
        "CANGFLOW_REDIS_NAMESPACE": f"test-metrics-{os.getpid()}",
        **extra,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra)
    return env


def _run(world, database_url: str, **extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, world.warehouse, world.skus[0]],
        env=_env(database_url, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_plain_process_shows_its_deductions_and_cache_reads_on_the_default_registry(
    world, database_url
):
    world.stocked_sku(50)
    shown = _run(world, database_url)
    assert 'cangflow_deductions_attempted_total{operation="deduct"} 2.0' in shown
    assert 'cangflow_deductions_succeeded_total{operation="deduct"} 1.0' in shown
    assert (
        'cangflow_deductions_refused_total{kind="insufficient_stock",operation="deduct"} 1.0'
        in shown
    )
    assert 'cangflow_deduction_seconds_count{operation="deduct"} 2.0' in shown
    assert (
        "cangflow_cache_misses_total 1.0" in shown
        and 'cangflow_cache_hits_total{level="l1"} 2.0' in shown
    )
    assert (
        "cangflow_flow_" not in shown
    )  # batch metrics are a flow run's, pushed, never a service's


def test_in_multiprocess_mode_the_processes_add_up(world, database_url, tmp_path):
    world.stocked_sku(50)
    folder = tmp_path / "prometheus-multiproc"
    folder.mkdir()
    _run(world, database_url, PROMETHEUS_MULTIPROC_DIR=str(folder))
    shown = _run(world, database_url, PROMETHEUS_MULTIPROC_DIR=str(folder))
    assert (
        'cangflow_deductions_attempted_total{operation="deduct"} 4.0' in shown
    )  # two processes, two each


def test_the_serve_command_serves_the_metrics_of_the_processes_in_the_multiprocess_folder(
    world, database_url, tmp_path
):
    world.stocked_sku(50)
    folder = tmp_path / "served"
    folder.mkdir()
    _run(world, database_url, PROMETHEUS_MULTIPROC_DIR=str(folder))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "metrics", "serve", "--port", str(port)],
        env=_env(database_url, PROMETHEUS_MULTIPROC_DIR=str(folder)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, page = time.monotonic() + 60, ""
        while time.monotonic() < deadline and not page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as got:
                    page = got.read().decode()
            except OSError:
                time.sleep(0.3)
        assert 'cangflow_deductions_attempted_total{operation="deduct"} 2.0' in page, page[:2000]
    finally:
        server.terminate()
        server.communicate(timeout=30)  # reaps it and closes its pipes
