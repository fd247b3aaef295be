"""An ERP feed as loaded (its run's staging table), after the row checks: whole quantities,
codes present, one as_of. A second, independent gate before the diff."""

NAME = "erp_feed"
QUERY = "SELECT warehouse, sku, lot, quantity, as_of FROM erp_feed_{run_id:d}"


def expectations(**_context) -> list[tuple[str, dict]]:
    return [
        ("ExpectColumnValuesToNotBeNull", {"column": "warehouse"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "sku"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "quantity", "regex": "^[0-9]{1,13}$"}),
        ("ExpectColumnUniqueValueCountToBeBetween", {"column": "as_of", "min_value": 1, "max_value": 1}),
    ]
