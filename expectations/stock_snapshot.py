"""stock_snapshot of one day: never negative, unique keys, and no more rows than balance rows
exist (a snapshot row is a balance row's closing stock)."""

NAME = "stock_snapshot"
AS_SQL = True  # run as one SQL statement (warehouse.quality.as_sql)
# Values the expectations need, read first (one row, one column each).
CONTEXT = {"balance_rows": "SELECT count(*) FROM stock_balance"}
QUERY = (
    "SELECT snapshot_date, warehouse_id, sku_id, balance_id, on_hand, reserved FROM stock_snapshot "
    "WHERE snapshot_date = DATE '{day}'"
)


def expectations(*, balance_rows: int, **_context) -> list[tuple[str, dict]]:
    return [
        ("ExpectColumnValuesToBeBetween", {"column": "on_hand", "min_value": 0}),
        (
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "on_hand", "column_B": "reserved", "or_equal": True},
        ),
        (
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["snapshot_date", "warehouse_id", "sku_id", "balance_id"]},
        ),
        ("ExpectTableRowCountToBeBetween", {"min_value": 0, "max_value": balance_rows}),
    ]
