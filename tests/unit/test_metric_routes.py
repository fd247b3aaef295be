"""The router works out each metric's sinks once; `use()` must make it work them out again, so
a sink added after a metric was first recorded still gets it, and one removed no longer does."""

from __future__ import annotations

from warehouse.metrics import sinks as metrics


def test_a_sink_added_after_the_route_was_worked_out_gets_the_metric_and_one_removed_does_not():
    router = metrics.current()
    router.deduction_attempted("deduct")  # the route worked out with no added sink
    with metrics.use(metrics.RecordingMetrics()) as first:
        router.deduction_attempted("deduct")
        with metrics.use(metrics.RecordingMetrics()) as second:
            router.deduction_attempted("deduct")
        router.deduction_attempted("deduct")
    router.deduction_attempted("deduct")
    name = "cangflow_deductions_attempted_total"
    assert first.value(name, operation="deduct") == 3
    assert second.value(name, operation="deduct") == 1
