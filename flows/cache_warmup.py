"""The cache warmup: the hot set (the most read SKUs of the last hour, or the most moved ones
of the ledger's last day when there are no statistics yet) written to Redis ahead of readers.

    cangflow run warmup [--top N]
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.monitoring import run_metrics
from tasks.reporting import table_artifact
from tasks.cache import find_hot_set, hit_rates, warm_cache


def _warmup_flow(top: int = 1000) -> dict:
    logger = get_run_logger()
    started = time.perf_counter()
    pairs, source = find_hot_set(top)
    warmed = warm_cache(pairs, source)
    rates = hit_rates()
    summary = {**warmed, "hit_rate_previous_hour": rates["previous_hour"], "hit_rate_this_hour": rates["this_hour"],
               "seconds": round(time.perf_counter() - started, 3)}
    table_artifact("cache-warmup", [summary], f"Warmup: {warmed['keys']} keys from {source} in {summary['seconds']} s")
    logger.info("summary: %s", summary)
    return summary


@flow(name="cache-warmup")
def warmup_flow(top: int = 1000) -> dict:
    """cache-warmup: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("warmup"):
        return _warmup_flow(top)
