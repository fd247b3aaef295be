"""Slow statements are counted by operation and logged by shape: never with their values."""

from warehouse.db import slow_queries
from warehouse.metrics import sinks as metrics


def test_shape_drops_strings_and_numbers_and_keeps_identifiers():
    statement = "SELECT * FROM stock_movement_p2026_11 WHERE sku = 'SECRET-CODE' AND qty > 42 AND x = 'it''s'"
    shaped = slow_queries.shape(statement)
    assert "SECRET" not in shaped and "42" not in shaped and "it''s" not in shaped
    assert "stock_movement_p2026_11" in shaped and shaped.count("?") == 3


def test_only_statements_over_the_threshold_are_counted_and_logged(caplog):
    with metrics.use(metrics.RecordingMetrics()) as seen:
        slow_queries.observe("UPDATE stock_balance SET on_hand = 5", 0.2, threshold_s=1.0)
        slow_queries.observe(
            "UPDATE stock_balance SET on_hand = 5 WHERE code = 'X1'", 1.5, threshold_s=1.0
        )
    assert seen.value("cangflow_db_slow_queries_total", operation="UPDATE") == 1
    assert "X1" not in caplog.text and "slow statement" in caplog.text
