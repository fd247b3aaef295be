"""Every flow run's batch metrics, by the Prometheus batch-job convention: gauges of its last
run (when it ended, whether it failed, how long it took, what it processed, its slow
statements), plus what the domain code set during the run, in a registry of the run's own,
pushed when it ends to the Pushgateway named by CANGFLOW_PUSHGATEWAY_URL (job
`cangflow_<flow>`, instance = host).

The push is a pushadd (POST): it replaces only the families it carries, and the run's registry
carries only the families the run set. So a success sets the last success time and leaves the
last failure time in place, and the reverse: the alert on a failed run still sees it after a
later good run, the alert on a late flow sees the last success after a failure.

Library metrics (deductions, cache, outbox) are never pushed: they count in the process that
does the work and are scraped there (`warehouse.metrics.sinks`)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import pushadd_to_gateway

from warehouse.metrics import sinks as metrics
from warehouse.settings import get_settings

logger = logging.getLogger("cangflow.monitoring")


class FlowRun:
    """What a flow tells its run's metrics: how many items it processed."""

    def __init__(self, sink: metrics.RunMetrics):
        self.sink = sink
        self.registry = sink.registry
        self.items: float | None = None


@contextmanager
def run_metrics(flow: str) -> Iterator[FlowRun]:
    sink = metrics.RunMetrics(flow)
    run = FlowRun(sink)
    started = time.time()
    failed = True
    with metrics.use(sink):
        try:
            yield run
            failed = False
        finally:
            ended = time.time()
            sink.set("cangflow_flow_last_run_timestamp_seconds", ended, flow=flow)
            sink.set("cangflow_flow_last_run_failed", 1 if failed else 0, flow=flow)
            sink.set("cangflow_flow_last_duration_seconds", ended - started, flow=flow)
            sink.set("cangflow_flow_last_slow_statements", sink.slow_statements, flow=flow)
            if failed:
                sink.set("cangflow_flow_last_failure_timestamp_seconds", ended, flow=flow)
            else:
                sink.set("cangflow_flow_last_success_timestamp_seconds", ended, flow=flow)
                if run.items is not None:
                    sink.set("cangflow_flow_last_items_processed", run.items, flow=flow)
            push(sink, flow)


def push(sink: metrics.PrometheusMetrics, flow: str) -> None:
    url = get_settings().pushgateway_url
    if not url:
        return
    try:
        pushadd_to_gateway(
            url,
            job=f"cangflow_{flow}",
            registry=sink.registry,
            grouping_key={"instance": socket.gethostname()},
            timeout=5,
        )
    except Exception as error:  # monitoring trouble must not fail the stock work it reports on
        logger.warning("could not push metrics of %s to the Pushgateway: %s", flow, error)
