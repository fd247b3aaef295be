"""The cache warmup: the hot set (the most read SKUs of the last hour, or the most moved ones
of the ledger's last day when there are no statistics yet) written to Redis ahead of readers.

    cangflow run warmup [--top N]
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from flows.console import summary_text
from flows.monitoring import run_metrics
from flows.runners import task_runner
from tasks import reporting
from tasks.cache import find_hot_set, hit_rates, warm_cache


def _warmup_flow(top: int = 1000) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.perf_counter()
    pairs, source = find_hot_set(top)
    # One task per warehouse, mapped: threads here, or workers on other hosts (flows.runners).
    by_warehouse: dict[str, list[tuple[str, str]]] = {}
    for warehouse, sku in pairs:
        by_warehouse.setdefault(warehouse, []).append((warehouse, sku))
    parts = [future.result() for future in warm_cache.map(list(by_warehouse.values()), source)]
    summary = reporting.warmup_summary(source, parts, hit_rates(), time.perf_counter() - started)
    reporting.warmup_artifact(summary)
    logger.info("summary: %s", summary_text(summary))
    return summary


@flow(name="cache-warmup", task_runner=task_runner(), timeout_seconds=30 * 60)
def warmup_flow(top: int = 1000) -> dict[str, Any]:
    """cache-warmup: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("warmup") as run:
        summary = _warmup_flow(top)
        run.items = summary["keys"]  # keys written to Redis
        return summary
