"""Every flow run's metrics: a registry of the run's own (the domain code records into it while
the run lasts), the run's outcome and duration, and when it last succeeded; pushed to the
Pushgateway named by CANGFLOW_PUSHGATEWAY_URL (pushadd, job `cangflow_<flow>`, instance = host).

pushadd replaces only the metrics it carries, so a failed run leaves the last success time of
the previous good run in place: the alert on a flow that has not succeeded in time sees it."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import pushadd_to_gateway

from warehouse import metrics
from warehouse.settings import get_settings

logger = logging.getLogger("cangflow.monitoring")


@contextmanager
def run_metrics(flow: str) -> Iterator[metrics.PrometheusMetrics]:
    sink = metrics.PrometheusMetrics()
    started = time.time()
    state = "failed"
    with metrics.use(sink):
        try:
            yield sink
            state = "completed"
        finally:
            ended = time.time()
            sink.inc("cangflow_flow_runs_total", flow=flow, state=state)
            sink.set("cangflow_flow_last_duration_seconds", ended - started, flow=flow, state=state)
            if state == "completed":
                sink.set("cangflow_flow_last_success_timestamp_seconds", ended, flow=flow)
            push(sink, flow)


def push(sink: metrics.PrometheusMetrics, flow: str) -> None:
    url = get_settings().pushgateway_url
    if not url:
        return
    try:
        pushadd_to_gateway(url, job=f"cangflow_{flow}", registry=sink.registry,
                           grouping_key={"instance": socket.gethostname()}, timeout=5)
    except Exception as error:  # monitoring trouble must not fail the stock work it reports on
        logger.warning("could not push metrics of %s to the Pushgateway: %s", flow, error)
