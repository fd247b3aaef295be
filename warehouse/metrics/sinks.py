"""Metrics where the work happens, by the Prometheus conventions for each kind of process.

Two kinds, named apart:

- **Library metrics** (`LIBRARY`): deductions, cache reads, slow statements, the outbox. They
  count in the process that does the work, on prometheus_client's default registry
  (multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set, as for a gunicorn WMS service), so
  that process's own /metrics shows them and `rate()` over them is right: they are true
  counters, cumulative for the process. `cangflow metrics serve --port N` serves them for a
  process that has no endpoint of its own (`serve_registry`).
- **Batch metrics** (`BATCH`): what a flow run did and how it ended, as gauges of its last run
  (Prometheus's batch-job convention). A flow run collects them in a registry of its own and
  pushes it when it ends (`flows.monitoring`). A family is created only when the run sets it,
  so a push carries only what the run set: a success never erases the time of the last
  failure, a run that found no feed leaves the last feed's as_of alone.

Code records by name through `current()`; `use(sink)` adds a sink for a block (a flow run's
registry, or `RecordingMetrics`, which keeps values in memory for tests and the demo).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# name -> (kind, help, label names)
LIBRARY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cangflow_deductions_attempted_total": ("counter", "Deductions attempted", ("operation",)),
    "cangflow_deductions_succeeded_total": (
        "counter",
        "Deductions applied (or replayed)",
        ("operation",),
    ),
    "cangflow_deductions_refused_total": (
        "counter",
        (
            "Deductions refused by a stock rule (kind: insufficient_stock, "
            "unknown_item, invalid_argument, ...): answers, not failures"
        ),
        ("operation", "kind"),
    ),
    "cangflow_deductions_retried_total": (
        "counter",
        "Deduction transactions retried after a deadlock or serialization failure",
        ("operation",),
    ),
    "cangflow_deduction_seconds": ("histogram", "Time spent in one deduction", ("operation",)),
    "cangflow_stock_combined_deductions_total": (
        "counter",
        (
            "Deductions that went through a combined statement (outcome: applied; declined or "
            "failed, which then ran alone)"
        ),
        ("outcome",),
    ),
    "cangflow_stock_direct_handovers_total": (
        "counter",
        (
            "Direct stock calls the Session path decided (reason: unknown_code, key, deadlock); "
            "each costs the round trips the direct path saves"
        ),
        ("operation", "reason"),
    ),
    "cangflow_cache_hits_total": (
        "counter",
        "Stock cache reads answered by a cache level (l1: in-process, l2: Redis)",
        ("level",),
    ),
    "cangflow_cache_misses_total": ("counter", "Stock cache reads that went to PostgreSQL", ()),
    "cangflow_cache_fallbacks_total": (
        "counter",
        "Stock cache reads answered from PostgreSQL because Redis failed or the breaker was open",
        (),
    ),
    "cangflow_cache_loads_total": (
        "counter",
        "Stock cache values loaded from PostgreSQL",
        ("reason",),
    ),
    "cangflow_cache_stale_writes_refused_total": (
        "counter",
        "Cache writes refused because Redis held a newer version",
        (),
    ),
    "cangflow_cache_breaker_open": (
        "gauge",
        "1 while the circuit breaker around Redis is open (or half open)",
        (),
    ),
    "cangflow_cache_breaker_transitions_total": (
        "counter",
        "Circuit breaker state changes",
        ("state",),
    ),
    "cangflow_db_slow_queries_total": (
        "counter",
        "Database statements slower than CANGFLOW_SLOW_QUERY_S",
        ("operation",),
    ),
    "cangflow_outbox_published_total": (
        "counter",
        "Outbox messages published to Redis Streams",
        ("topic",),
    ),
    "cangflow_outbox_failed_total": ("counter", "Outbox publish attempts that failed", ()),
    "cangflow_outbox_consumed_total": (
        "counter",
        "Stream messages handled by a consumer (redeliveries excluded)",
        ("consumer",),
    ),
    "cangflow_outbox_redelivered_total": (
        "counter",
        "Stream messages a consumer had handled before (ignored)",
        ("consumer",),
    ),
    "cangflow_outbox_oldest_pending_age_seconds": (
        "gauge",
        "Age of the oldest outbox message not yet published (0: none), as the relay last saw it",
        (),
    ),
    "cangflow_relay_last_loop_timestamp_seconds": (
        "gauge",
        "When the following relay last went round its loop",
        (),
    ),
}
BATCH: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cangflow_flow_last_run_timestamp_seconds": (
        "gauge",
        "When the flow's last run ended (Unix time)",
        ("flow",),
    ),
    "cangflow_flow_last_success_timestamp_seconds": (
        "gauge",
        "When the flow last ended successfully (Unix time)",
        ("flow",),
    ),
    "cangflow_flow_last_failure_timestamp_seconds": (
        "gauge",
        "When a run of the flow last failed (Unix time)",
        ("flow",),
    ),
    "cangflow_flow_last_run_failed": (
        "gauge",
        "1 when the flow's last run failed, 0 when it succeeded",
        ("flow",),
    ),
    "cangflow_flow_last_duration_seconds": (
        "gauge",
        "How long the flow's last run took",
        ("flow",),
    ),
    "cangflow_flow_last_items_processed": (
        "gauge",
        "What the flow's last run processed (rows, days, messages, keys: see the README)",
        ("flow",),
    ),
    "cangflow_flow_last_slow_statements": (
        "gauge",
        "Statements slower than CANGFLOW_SLOW_QUERY_S in the flow's last run",
        ("flow",),
    ),
    "cangflow_reconciliation_last_rows_compared": (
        "gauge",
        "ERP feed rows the last reconciliation compared",
        (),
    ),
    "cangflow_reconciliation_last_differences": (
        "gauge",
        "Differences the last reconciliation found (within tolerance included)",
        (),
    ),
    "cangflow_reconciliation_last_applied": (
        "gauge",
        "Adjustment lines the last reconciliation applied to WMS stock",
        (),
    ),
    "cangflow_reconciliation_last_rejected_timestamp_seconds": (
        "gauge",
        "When an ERP feed was last rejected (Unix time)",
        (),
    ),
    # Labelled by the feed's source (its folder, or file/query), so a run that pushes no value
    # for a source leaves that source's last value in place.
    "cangflow_reconciliation_feed_stale": (
        "gauge",
        (
            "1 when the last reconciliation of this source found no new feed "
            "(too old, reconciled before, none), 0 when it reconciled one"
        ),
        ("source",),
    ),
    "cangflow_reconciliation_feed_as_of_timestamp_seconds": (
        "gauge",
        "as_of of the last feed reconciled from this source (Unix time)",
        ("source",),
    ),
    "cangflow_adjustments_waiting_lines": (
        "gauge",
        (
            "Adjustment lines waiting for a person (pending approval or held), "
            "as the last reconciliation saw them"
        ),
        (),
    ),
    "cangflow_adjustments_waiting_oldest_age_seconds": (
        "gauge",
        "Age of the oldest adjustment line waiting for a person (0: none)",
        (),
    ),
    "cangflow_partition_default_rows": (
        "gauge",
        "Rows in a default partition after the rollover (should be 0)",
        ("table",),
    ),
    "cangflow_cache_hit_ratio_last_hour": (
        "gauge",
        (
            "Stock cache hit ratio over every process, this hour so far (the "
            "previous hour while this one has no reads), from the access statistics "
            "in Redis (the warmup reads it)"
        ),
        (),
    ),
}
DEFINITIONS = {**LIBRARY, **BATCH}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SLOW_STATEMENTS = "cangflow_db_slow_queries_total"


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

    def deduction_refused(self: Metrics, operation: str, kind: str) -> None:
        self.inc("cangflow_deductions_refused_total", operation=operation, kind=kind)

    def deduction_retried(self: Metrics, operation: str) -> None:
        self.inc("cangflow_deductions_retried_total", operation=operation)

    def combined_deductions(self: Metrics, outcome: str, count: int) -> None:
        if count:
            self.inc("cangflow_stock_combined_deductions_total", count, outcome=outcome)

    def direct_handed_over(self: Metrics, operation: str, reason: str) -> None:
        self.inc("cangflow_stock_direct_handovers_total", operation=operation, reason=reason)

    def deduction_latency(self: Metrics, operation: str, seconds: float) -> None:
        self.observe("cangflow_deduction_seconds", seconds, operation=operation)


def _check(name: str) -> None:
    if name not in DEFINITIONS:
        raise KeyError(f"metric {name!r} is not defined in warehouse.metrics.sinks")


class PrometheusMetrics(_Deductions):
    """cangflow's metrics (those of `names`) in a prometheus-client registry, each family created
    the first time it is recorded."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        names: dict[str, tuple[str, str, tuple[str, ...]]] | None = None,
    ):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.names = names if names is not None else DEFINITIONS
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        # Labelled children by (name, label values): prometheus-client's labels() takes a lock
        # and rebuilds the key on every call, a tenth of a direct deduction's client time.
        self._children: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def accepts(self, name: str) -> bool:
        return name in self.names

    def _family(self, name: str):
        metric = self._metrics.get(name)
        if metric is not None:
            return metric
        with self._lock:
            if name not in self._metrics:
                kind, description, labels = self.names[name]
                made: Counter | Gauge | Histogram
                if kind == "counter":
                    made = Counter(name, description, labels, registry=self.registry)
                elif kind == "gauge":
                    # Under multiprocess mode, the largest value of the live processes.
                    made = Gauge(
                        name,
                        description,
                        labels,
                        registry=self.registry,
                        multiprocess_mode="livemax",
                    )
                else:
                    made = Histogram(
                        name, description, labels, registry=self.registry, buckets=LATENCY_BUCKETS
                    )
                self._metrics[name] = made
            return self._metrics[name]

    def _child(self, name: str, labels: dict[str, str]):
        if not labels:
            return self._family(name)
        # Values as the strings prometheus-client makes of them: True and 1 are one dict key.
        key = (name, *((label, str(value)) for label, value in labels.items()))
        child = self._children.get(key)
        if child is None:  # children are never removed: one made once stays the family's
            child = self._children.setdefault(key, self._family(name).labels(**labels))
        return child

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self._child(name, labels).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels).observe(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels).set(value)


class RunMetrics(PrometheusMetrics):
    """One flow run's batch metrics (its own registry, pushed when the run ends). It also counts
    the slow statements of the run, as the gauge of its last run."""

    def __init__(self, flow: str):
        super().__init__(names=BATCH)
        self.flow = flow
        self.slow_statements = 0

    def accepts(self, name: str) -> bool:
        return name in BATCH or name == SLOW_STATEMENTS

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        if name == SLOW_STATEMENTS:
            self.slow_statements += int(amount)
            return
        super().inc(name, amount, **labels)


class RecordingMetrics(_Deductions):
    """Keeps every value in memory; tests assert on `value()` and `observations()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple, float] = defaultdict(float)
        self.samples: dict[tuple, list[float]] = defaultdict(list)

    def accepts(self, name: str) -> bool:
        return True

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> tuple:
        _check(name)
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


_process: PrometheusMetrics | None = None
_added: list = []
_lock = threading.Lock()


def process() -> PrometheusMetrics:
    """This process's library metrics, on prometheus_client's default registry."""
    global _process
    with _lock:
        if _process is None:
            _process = PrometheusMetrics(REGISTRY, LIBRARY)
        return _process


# The sinks each metric goes to, worked out once per name; `use()` clears it. A direct
# deduction records three metrics: working them out on every call (the lock, a list of the
# added sinks) was a measurable share of its client time.
_routes: dict[str, tuple] = {}


class _Router(_Deductions):
    """What `current()` returns: a library metric goes to the process's registry, and every
    metric to the sinks added by `use()` that take it."""

    def _targets(self, name: str) -> tuple:
        found = _routes.get(name)
        if found is not None:
            return found
        _check(name)
        library = (process(),) if name in LIBRARY else ()  # process() takes _lock itself
        with _lock:  # stored under the lock `use()` clears it under: never a stale route
            found = _routes[name] = library + tuple(s for s in _added if s.accepts(name))
        return found

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        for sink in self._targets(name):
            sink.inc(name, amount, **labels)

    def observe(self, name: str, value: float, **labels: str) -> None:
        for sink in self._targets(name):
            sink.observe(name, value, **labels)

    def set(self, name: str, value: float, **labels: str) -> None:
        for sink in self._targets(name):
            sink.set(name, value, **labels)


_ROUTER = _Router()


def current() -> _Router:
    return _ROUTER


@contextmanager
def use(
    sink: PrometheusMetrics | RecordingMetrics,
) -> Iterator[PrometheusMetrics | RecordingMetrics]:
    """Record into `sink` too while the block runs (every thread of the process)."""
    with _lock:
        _added.append(sink)
        _routes.clear()
    try:
        yield sink
    finally:
        with _lock:
            _added.remove(sink)
            _routes.clear()


def serve_registry() -> CollectorRegistry:
    """What a /metrics endpoint of this process serves: the default registry, or, in
    multiprocess mode, the merged values of every process writing to PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY
