"""A run's adjustment order lines before any is applied: delta = ERP - WMS, never zero, a status
the workflow knows, and the run against its blast-radius brake (`warehouse.reconcile.brake`):
a braked run applied (ERP truth) or sent (WMS truth) nothing, and a run that was not braked
has no held line and no more lines than the brake allows."""

NAME = "adjustment_orders"
# Simple counts and bounds on the reconciliation's critical path: one SQL statement, no GX
# import (warehouse.quality.as_sql).
AS_SQL = True
QUERY = (
    "SELECT l.id, l.wms_qty, coalesce(l.erp_qty, 0) AS erp_qty, l.delta, l.wms_qty + l.delta AS erp_by_delta, "
    "l.status FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id WHERE o.run_id = {run_id:d}"
)
STATUSES = [
    "for_erp",
    "acknowledged",
    "pending_approval",
    "held",
    "approved",
    "applied",
    "rejected",
    "failed",
    "superseded",
]


def expectations(
    *, truth: str = "erp", braked: bool | None = None, max_lines: int | None = None, **_context
) -> list[tuple[str, dict]]:
    suite: list[tuple[str, dict]] = [
        ("ExpectColumnValuesToNotBeInSet", {"column": "delta", "value_set": [0]}),
        ("ExpectColumnPairValuesToBeEqual", {"column_A": "erp_qty", "column_B": "erp_by_delta"}),
        ("ExpectColumnValuesToBeInSet", {"column": "status", "value_set": STATUSES}),
    ]
    if braked:
        moved = ["approved", "applied"] if truth == "erp" else ["for_erp", "acknowledged"]
        suite.append(
            (
                "ExpectColumnValuesToNotBeInSet",
                {
                    "column": "status",
                    "value_set": moved,
                    "meta": {
                        "why": "the run is over the brake: no line may be applied or sent before a person approves it"
                    },
                },
            )
        )
    elif braked is not None:
        suite.append(
            (
                "ExpectColumnValuesToNotBeInSet",
                {
                    "column": "status",
                    "value_set": ["held"],
                    "meta": {"why": "the run is within the brake's limits, yet lines are held"},
                },
            )
        )
        if max_lines is not None:
            suite.append(
                (
                    "ExpectTableRowCountToBeBetween",
                    {
                        "max_value": max_lines,
                        "meta": {
                            "why": f"more than {max_lines:,} lines, over the brake's share of differing rows, yet the run was not braked"
                        },
                    },
                )
            )
    return suite
