"""An ERP feed's shape, after the row checks proved each row (whole quantities, known codes,
no duplicates, one as_of for the whole feed). What no row rule can see is the feed's shape:
this suite holds it to the bounds the previous feed of the same scope sets
(`warehouse.reconcile.profile.bounds`): a truncated export, a feed of zeros, quantities that
jumped (a unit changed).

The shape is what the load step measured in one SQL pass over the staged feed and kept on the
run (`profile.measure`, `profile.record`), so the suite reads that one row instead of scanning
a million-row feed again for each expectation. Without a previous feed to go by (the first
feed of a scope, or the operator confirmed the shape) it only checks that the run's profile is
there."""

NAME = "erp_feed"
# Simple counts and bounds on the reconciliation's critical path: one SQL statement, no GX
# import (warehouse.quality.as_sql).
AS_SQL = True
# `run_id` is this run's id, never input.
QUERY = (
    "SELECT CAST(profile ->> 'rows' AS bigint) AS feed_rows, "
    "CAST(profile ->> 'zero_pct' AS float8) AS zero_pct, "
    "CAST(profile ->> 'mean_qty' AS float8) AS mean_qty "
    "FROM reconciliation_run WHERE id = {run_id:d} AND profile IS NOT NULL"
)


def expectations(
    *,
    run_id: int,
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
            "ExpectTableRowCountToEqual",
            {
                "value": 1,
                "meta": {
                    "why": f"run {run_id} has no measured profile of its feed: the load step did not "
                    "finish, so the feed's shape cannot be judged"
                },
            },
        )
    ]
    if previous_run is None:
        return suite
    suite.append(
        (
            "ExpectColumnValuesToBeBetween",
            {
                "column": "feed_rows",
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
                "ExpectColumnValuesToBeBetween",
                {
                    "column": "zero_pct",
                    "max_value": max_zero_pct,
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
                "ExpectColumnValuesToBeBetween",
                {
                    "column": "mean_qty",
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
