"""stock_balance: never negative, reserved within on_hand, one row per (warehouse, bin, SKU, lot)."""

NAME = "stock_balance"
AS_SQL = True  # run as one SQL statement (warehouse.quality.as_sql)
# Lot-less rows carry lot 0 here so the key check sees them (NULLs would be skipped).
QUERY = "SELECT warehouse_id, location_id, sku_id, coalesce(lot_id, 0) AS lot_key, on_hand, reserved FROM stock_balance"


def expectations(**_context) -> list[tuple[str, dict]]:
    return [
        ("ExpectColumnValuesToBeBetween", {"column": "on_hand", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "reserved", "min_value": 0}),
        (
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "on_hand", "column_B": "reserved", "or_equal": True},
        ),
        (
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["warehouse_id", "location_id", "sku_id", "lot_key"]},
        ),
    ]
