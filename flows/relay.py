"""The outbox relay: publish due outbox messages to Redis Streams, run the cache's consumer
(invalidating every pair a stock change touched), prune what is past the retention.

    cangflow run relay [--follow]

Scheduled every minute it drains what is due and stops. With `follow` it keeps going (a
long-running process), polling when idle and logging a summary every minute.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger

from flows.console import summary_text
from flows.monitoring import run_metrics
from tasks import reporting
from tasks.cache import invalidate_cache, prune_outbox, publish_pending
from warehouse.metrics import sinks as metrics

IDLE_POLL_S = 0.5
SUMMARY_EVERY_S = 60.0
PRUNE_EVERY_S = 3600.0


def _relay_flow(
    follow: bool = False, max_batches: int = 1000, metrics_port: int | None = None
) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.perf_counter()
    if not follow:
        published = publish_pending(max_batches)
        invalidated = invalidate_cache(max_batches)
        pruned = prune_outbox()
        summary = reporting.relay_summary(
            published, invalidated, pruned, time.perf_counter() - started
        )
        reporting.relay_artifact(summary)
        logger.info("summary: %s", summary_text(summary))
        return summary
    if metrics_port:
        # A long-running process is scraped rather than pushed: /metrics of the process's
        # library metrics (published, consumed, backlog age, the loop's heartbeat).
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=metrics.serve_registry())
        logger.info("serving /metrics on port %d", metrics_port)
    totals = {"published": 0, "handled": 0, "redelivered": 0}
    last_summary = last_prune = time.monotonic()
    with _until_stopped() as stopped:
        while not stopped.is_set():
            _follow_once(max_batches, totals, stopped)
            now = time.monotonic()
            if now - last_prune >= PRUNE_EVERY_S:
                prune_outbox.fn()
                last_prune = now
            if now - last_summary >= SUMMARY_EVERY_S:
                logger.info("relay following: %s so far", totals)
                last_summary = now
    logger.info("relay stopped: %s in %.0f s", totals, time.perf_counter() - started)
    return {**totals, "seconds": round(time.perf_counter() - started, 1)}


def _follow_once(max_batches: int, totals: dict[str, int], stopped: threading.Event) -> None:
    """One round: publish what is due, run the cache's consumer; wait a little when idle."""
    published = publish_pending.fn(max_batches)
    invalidated = invalidate_cache.fn(max_batches)
    totals["published"] += published.published
    totals["handled"] += invalidated.handled
    totals["redelivered"] += invalidated.redelivered
    metrics.current().set("cangflow_relay_last_loop_timestamp_seconds", time.time())
    if published.claimed == 0 and invalidated.handled == 0:
        stopped.wait(IDLE_POLL_S)


@contextmanager
def _until_stopped() -> Iterator[threading.Event]:
    """Set on SIGINT (Ctrl-C) or SIGTERM (a service manager's stop): the loop ends after its
    round and the flow returns, so the run ends Completed rather than Crashed (an interrupt
    thrown into the middle of a step). Every step commits or rolls back whole either way."""
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopped  # only the main thread may take signals: an interrupt stops it as before
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stopped.set())
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@flow(name="outbox-relay")
def relay_flow(
    follow: bool = False, max_batches: int = 1000, metrics_port: int | None = None
) -> dict[str, Any]:
    """outbox-relay: see the module docstring. The run records and pushes its own metrics."""
    with run_metrics("relay") as run:
        summary = _relay_flow(follow, max_batches, metrics_port)
        run.items = summary["published"]
        return summary
