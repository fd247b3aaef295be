"""An ERP feed as staged (one attempt's staging table), after the row checks proved each row
(whole quantities, known codes, no duplicates). What no row rule can see is the feed's shape:
this suite holds it to the bounds the previous feed of the same scope sets
(`warehouse.reconcile.profile.bounds`): a truncated export, a feed of zeros, quantities that
jumped (a unit changed), and one as_of for the whole feed. Without a previous feed to go by
(the first feed of a scope, or the operator confirmed the shape) only the as_of rule applies."""

from warehouse.db.roles import STAGING_SCHEMA

NAME = "erp_feed"
# `staging` is a name this code made (erp_feed_<run>_<8 hex digits>), never input.
QUERY = f'SELECT warehouse, sku, lot, CAST(quantity AS bigint) AS qty, as_of FROM "{STAGING_SCHEMA}"."{{staging}}"'


def expectations(
    *,
    previous_run: int | None = None,
    previous_rows: int | None = None,
    min_rows: int | None = None,
    max_zero_pct: float | None = None,
    mean_low: float | None = None,
    mean_high: float | None = None,
    **_context,
) -> list[tuple[str, dict]]:
    suite = [
        (
            "ExpectColumnUniqueValueCountToBeBetween",
            {
                "column": "as_of",
                "min_value": 1,
                "max_value": 1,
                "meta": {
                    "why": "a feed is one cut of the ERP's books: every row has the same as_of"
                },
            },
        )
    ]
    if previous_run is None:
        return suite
    suite.append(
        (
            "ExpectTableRowCountToBeBetween",
            {
                "min_value": min_rows,
                "meta": {
                    "why": f"the feed has fewer than {min_rows:,} rows, far fewer than the {previous_rows:,} of the previous "
                    f"feed of these warehouses (run {previous_run}): a truncated export?"
                },
            },
        )
    )
    if max_zero_pct is not None:
        suite.append(
            (
                "ExpectColumnValuesToNotBeInSet",
                {
                    "column": "qty",
                    "value_set": [0],
                    "mostly": round(1 - max_zero_pct / 100, 6),
                    "meta": {
                        "why": f"more than {max_zero_pct:.1f}% of the quantities are zero, far more than in the previous "
                        f"feed (run {previous_run}): a broken export?"
                    },
                },
            )
        )
    if mean_low is not None:
        suite.append(
            (
                "ExpectColumnMeanToBeBetween",
                {
                    "column": "qty",
                    "min_value": mean_low,
                    "max_value": mean_high,
                    "meta": {
                        "why": f"the mean quantity left {mean_low:,.2f}..{mean_high:,.2f}, the band around the previous "
                        f"feed's (run {previous_run}): a changed unit or a broken export?"
                    },
                },
            )
        )
    return suite
