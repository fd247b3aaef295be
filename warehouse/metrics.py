"""Metrics behind a small interface: code records by name, a sink decides where it goes.

`PrometheusMetrics` feeds a prometheus-client registry (its own per instance, so a batch run can
push exactly its registry to a Pushgateway); `RecordingMetrics` keeps values in memory for
tests. `current()` is the active sink, `use(sink)` swaps it for a block.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# name -> (kind, help, label names)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cangflow_deductions_attempted_total": ("counter", "Deductions attempted", ("operation",)),
    "cangflow_deductions_succeeded_total": ("counter", "Deductions applied (or replayed)", ("operation",)),
    "cangflow_deductions_insufficient_total": ("counter", "Deductions refused for lack of stock", ("operation",)),
    "cangflow_deductions_retried_total": ("counter", "Deduction transactions retried after a deadlock or serialization failure", ("operation",)),
    "cangflow_deduction_seconds": ("histogram", "Time spent in one deduction statement", ("operation",)),
    "cangflow_cache_hits_total": ("counter", "Stock cache reads answered by a cache level (l1: in-process, l2: Redis)", ("level",)),
    "cangflow_cache_misses_total": ("counter", "Stock cache reads that went to PostgreSQL", ()),
    "cangflow_cache_loads_total": ("counter", "Stock cache values loaded from PostgreSQL", ("reason",)),
    "cangflow_cache_stale_writes_refused_total": ("counter", "Cache writes refused because Redis held a newer version", ()),
    "cangflow_cache_breaker_open": ("gauge", "1 while the circuit breaker around Redis is open (or half open)", ()),
    "cangflow_cache_breaker_transitions_total": ("counter", "Circuit breaker state changes", ("state",)),
    "cangflow_outbox_published_total": ("counter", "Outbox messages published to Redis Streams", ("topic",)),
    "cangflow_outbox_failed_total": ("counter", "Outbox publish attempts that failed", ()),
    "cangflow_outbox_consumed_total": ("counter", "Stream messages handled by a consumer (redeliveries excluded)", ("consumer",)),
    "cangflow_reconciliation_rows_compared_total": ("counter", "ERP feed rows compared with the WMS", ()),
    "cangflow_reconciliation_differences_total": ("counter", "Differences found (within tolerance included)", ()),
    "cangflow_reconciliation_adjusted_total": ("counter", "Adjustment lines applied to WMS stock", ()),
    "cangflow_reconciliation_pending_total": ("counter", "Adjustment lines left waiting for approval", ()),
    "cangflow_reconciliation_feeds_rejected_total": ("counter", "ERP feeds rejected whole", ()),
    # Labelled by the feed's source (its folder, or file/query), so a run that pushes no value
    # for a source leaves that source's last value in place.
    "cangflow_reconciliation_feed_stale": ("gauge", "1 when the last reconciliation of this source found no new feed "
                                           "(too old, reconciled before, none), 0 when it reconciled one", ("source",)),
    "cangflow_reconciliation_feed_as_of_timestamp_seconds": ("gauge", "as_of of the last feed reconciled from this "
                                                             "source (Unix time)", ("source",)),
    "cangflow_db_slow_queries_total": ("counter", "Database statements slower than CANGFLOW_SLOW_QUERY_S", ("operation",)),
    "cangflow_flow_runs_total": ("counter", "Flow runs ended, by outcome", ("flow", "state")),
    "cangflow_flow_last_success_timestamp_seconds": ("gauge", "When the flow last ended successfully (Unix time)", ("flow",)),
    "cangflow_flow_last_duration_seconds": ("gauge", "How long the flow's last run took", ("flow", "state")),
    "cangflow_outbox_redelivered_total": ("counter", "Stream messages a consumer had handled before (ignored)", ("consumer",)),
}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics(Protocol):
    def inc(self, name: str, amount: float = 1, **labels: str) -> None: ...
    def observe(self, name: str, value: float, **labels: str) -> None: ...
    def set(self, name: str, value: float, **labels: str) -> None: ...


class _Deductions:
    """Named helpers so call sites read as the rule they count."""

    def deduction_attempted(self: Metrics, operation: str) -> None:
        self.inc("cangflow_deductions_attempted_total", operation=operation)

    def deduction_succeeded(self: Metrics, operation: str) -> None:
        self.inc("cangflow_deductions_succeeded_total", operation=operation)

    def deduction_insufficient(self: Metrics, operation: str) -> None:
        self.inc("cangflow_deductions_insufficient_total", operation=operation)

    def deduction_retried(self: Metrics, operation: str) -> None:
        self.inc("cangflow_deductions_retried_total", operation=operation)

    def deduction_latency(self: Metrics, operation: str, seconds: float) -> None:
        self.observe("cangflow_deduction_seconds", seconds, operation=operation)


class PrometheusMetrics(_Deductions):
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._metrics = {}
        for name, (kind, description, labels) in DEFINITIONS.items():
            if kind == "counter":
                self._metrics[name] = Counter(name, description, labels, registry=self.registry)
            elif kind == "gauge":
                self._metrics[name] = Gauge(name, description, labels, registry=self.registry)
            else:
                self._metrics[name] = Histogram(
                    name, description, labels, registry=self.registry, buckets=LATENCY_BUCKETS
                )

    def _child(self, name: str, labels: dict[str, str]):
        metric = self._metrics[name]
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self._child(name, labels).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels).observe(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels).set(value)


class RecordingMetrics(_Deductions):
    """Keeps every value in memory; tests assert on `value()` and `observations()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple, float] = defaultdict(float)
        self.samples: dict[tuple, list[float]] = defaultdict(list)

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> tuple:
        if name not in DEFINITIONS:
            raise KeyError(f"metric {name!r} is not defined in warehouse.metrics.DEFINITIONS")
        return (name, tuple(sorted(labels.items())))

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        with self._lock:
            self.counters[self._key(name, labels)] += amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self.samples[self._key(name, labels)].append(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self.counters[self._key(name, labels)] = value

    def value(self, name: str, **labels: str) -> float:
        return self.counters.get(self._key(name, labels), 0)

    def observations(self, name: str, **labels: str) -> list[float]:
        return list(self.samples.get(self._key(name, labels), []))


_current: PrometheusMetrics | RecordingMetrics | None = None
_current_lock = threading.Lock()


def current() -> PrometheusMetrics | RecordingMetrics:
    global _current
    with _current_lock:
        if _current is None:
            _current = PrometheusMetrics()
        return _current


@contextmanager
def use(sink: PrometheusMetrics | RecordingMetrics) -> Iterator[PrometheusMetrics | RecordingMetrics]:
    global _current
    with _current_lock:
        previous, _current = _current, sink
    try:
        yield sink
    finally:
        with _current_lock:
            _current = previous
