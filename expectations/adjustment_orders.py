"""A run's adjustment order lines before any is applied: delta = ERP - WMS, never zero, and a
status the workflow knows."""

NAME = "adjustment_orders"
QUERY = ("SELECT l.id, l.wms_qty, coalesce(l.erp_qty, 0) AS erp_qty, l.delta, l.wms_qty + l.delta AS erp_by_delta, "
         "l.status FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id WHERE o.run_id = {run_id:d}")


def expectations(*, full_feed: bool = False, **_context) -> list[tuple[str, dict]]:
    return [
        ("ExpectColumnValuesToNotBeInSet", {"column": "delta", "value_set": [0]}),
        ("ExpectColumnPairValuesToBeEqual", {"column_A": "erp_qty", "column_B": "erp_by_delta"}),
        ("ExpectColumnValuesToBeInSet", {"column": "status", "value_set": [
            "for_erp", "acknowledged", "pending_approval", "held", "approved", "applied", "rejected", "failed",
            "superseded"]}),
    ]
