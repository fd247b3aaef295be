"""The cache warmup: the hot set (the most read SKUs of the last hour, or the most moved ones
of the ledger's last day when there are no statistics yet) written to Redis ahead of readers.

    cangflow run warmup [--top N]
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.console import summary_text
from flows.monitoring import run_metrics
from flows.runners import task_runner
from tasks.cache import find_hot_set, hit_rates, warm_cache
from tasks.reporting import table_artifact


def _warmup_flow(top: int = 1000) -> dict:
    logger = get_run_logger()
    started = time.perf_counter()
    pairs, source = find_hot_set(top)
    # One task per warehouse, mapped: threads here, or workers on other hosts (flows.runners).
    by_warehouse: dict[str, list[tuple[str, str]]] = {}
    for warehouse, sku in pairs:
        by_warehouse.setdefault(warehouse, []).append((warehouse, sku))
    parts = [future.result() for future in warm_cache.map(list(by_warehouse.values()), source)]
    warmed = {
        "source": source,
        "keys": sum(p["keys"] for p in parts),
        "written": sum(p["written"] for p in parts),
        "refused_stale": sum(p["refused_stale"] for p in parts),
        "seconds": max((p["seconds"] for p in parts), default=0.0),
        "warehouses": len(parts),
    }
    rates = hit_rates()
    summary = {
        **warmed,
        "hit_rate_previous_hour": rates["previous_hour"],
        "hit_rate_this_hour": rates["this_hour"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    table_artifact(
        "cache-warmup",
        [summary],
        f"Warmup: {warmed['keys']} keys from {source} in {summary['seconds']} s",
    )
    logger.info("summary: %s", summary_text(summary))
    return summary


@flow(name="cache-warmup", task_runner=task_runner(), timeout_seconds=30 * 60)
def warmup_flow(top: int = 1000) -> dict:
    """cache-warmup: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("warmup") as run:
        summary = _warmup_flow(top)
        run.items = summary["keys"]  # keys written to Redis
        return summary
