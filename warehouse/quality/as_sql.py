"""A suite of simple expectations run as one SQL statement, without Great Expectations.

The reconciliation's two suites (`erp_feed`, `adjustment_orders`) check a handful of counts and
bounds over small queries, on the critical path of a nightly run: there, importing GX and
building its context cost seconds (most of the suite step), the checks themselves milliseconds.
A suite module that sets `AS_SQL = True` is run here instead, one statement over its QUERY,
with GX's meaning of each expectation (column values: nulls are not counted, `mostly` is the
share of non-null values that must pass; bounds inclusive) and GX's result rows, so its
artifact, its failures and its callers read the same. Suites that need more of GX stay on GX;
`tests/flows/test_quality.py` runs each AS_SQL suite both ways on the same rows and compares.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.exc import DBAPIError

from warehouse.db import raw_sql
from warehouse.db.engine import Database
from warehouse.errors import WarehouseError

SAMPLE_ROWS = 5


class SuiteCouldNotRun(WarehouseError):
    """An expectation raised (a missing table, a refused privilege): that says nothing about
    the data, so it must not read as a failed expectation (a good feed quarantined)."""


def _between(column: sql.Composable, args: dict[str, Any]) -> sql.Composable:
    bounds = []
    if args.get("min_value") is not None:
        bounds.append(sql.SQL("{} < {}").format(column, sql.Literal(args["min_value"])))
    if args.get("max_value") is not None:
        bounds.append(sql.SQL("{} > {}").format(column, sql.Literal(args["max_value"])))
    return sql.SQL(" OR ").join(bounds) if bounds else sql.SQL("false")


def _in_set(column: sql.Composable, args: dict[str, Any]) -> sql.Composable:
    return sql.SQL("{} = ANY({})").format(column, sql.Literal(list(args["value_set"])))


# Column map expectations: kind -> (the column's values that are unexpected, as SQL).
_COLUMN_MAPS: dict[str, Callable[[sql.Composable, dict[str, Any]], sql.Composable]] = {
    "ExpectColumnValuesToBeBetween": _between,
    "ExpectColumnValuesToNotBeInSet": _in_set,
    "ExpectColumnValuesToBeInSet": lambda column, args: sql.SQL("NOT ({})").format(
        _in_set(column, args)
    ),
}
_TABLE = ("ExpectTableRowCountToEqual", "ExpectTableRowCountToBeBetween")
PAIR = "ExpectColumnPairValuesToBeEqual"
SUPPORTED = frozenset({*_COLUMN_MAPS, *_TABLE, PAIR})


def supports(expectations: list[tuple[str, dict]]) -> bool:
    return all(kind in SUPPORTED for kind, _ in expectations)


def snake_case(kind: str) -> str:
    """ExpectTableRowCountToEqual -> expect_table_row_count_to_equal (GX's expectation type)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", error)
    return (str(orig).strip().splitlines() or ["an error"])[0]


def validate(
    db: Database, suite: str, query: str, expectations: list[tuple[str, dict]]
) -> list[dict[str, Any]]:
    """One result row per expectation, as `suites.validate` makes them from GX's results."""
    measures: list[sql.Composable] = [sql.SQL("count(*)")]
    for kind, args in expectations:
        if kind in _TABLE:
            continue
        unexpected_sql: sql.Composable
        if kind == PAIR:
            a, b = sql.Identifier(args["column_A"]), sql.Identifier(args["column_B"])
            counted_sql = sql.SQL("NOT ({a} IS NULL AND {b} IS NULL)").format(a=a, b=b)
            unexpected_sql = sql.SQL("{a} IS DISTINCT FROM {b}").format(a=a, b=b)
            sample_sql = sql.SQL("jsonb_build_array({a}, {b})").format(a=a, b=b)
        else:
            column = sql.Identifier(args["column"])
            counted_sql = sql.SQL("{} IS NOT NULL").format(column)
            unexpected_sql = _COLUMN_MAPS[kind](column, args)
            sample_sql = sql.SQL("to_jsonb({})").format(column)
        measures += [
            sql.SQL("count(*) FILTER (WHERE {})").format(counted_sql),
            sql.SQL("count(*) FILTER (WHERE {c} AND ({u}))").format(
                c=counted_sql, u=unexpected_sql
            ),
            sql.SQL("(array_agg({s}) FILTER (WHERE {c} AND ({u})))[1:{n}]").format(
                s=sample_sql, c=counted_sql, u=unexpected_sql, n=sql.Literal(SAMPLE_ROWS)
            ),
        ]
    # The suite's QUERY is the module's own text, formatted with values this code made (see
    # `suites.validate`), never input.
    statement = sql.SQL("SELECT {} FROM ({}) AS suite").format(
        sql.SQL(", ").join(measures), sql.SQL(query)
    )
    try:
        with db.session() as session:
            row = raw_sql.driver(session).execute(statement).fetchone()
    except (DBAPIError, psycopg.Error) as error:
        raise SuiteCouldNotRun(
            f"quality suite {suite} could not run its query: {_first_line(error)}"
        ) from error
    assert row is not None  # aggregates without GROUP BY: one row
    rows, measured = row[0], iter(row[1:])
    results = []
    for kind, args in expectations:
        if kind in _TABLE:
            low = args.get("value", args.get("min_value"))
            high = args.get("value", args.get("max_value"))
            success = (low is None or rows >= low) and (high is None or rows <= high)
            unexpected, sample = rows, list[Any]()
        else:
            counted, unexpected, sample = next(measured), next(measured), next(measured) or []
            mostly = args.get("mostly", 1.0)
            success = unexpected == 0 or (
                counted > 0 and (counted - unexpected) / counted >= mostly
            )
            if rows == 0:  # GX reports no count at all over no rows
                unexpected = None
        results.append(
            {
                "expectation": snake_case(kind),
                "arguments": {k: v for k, v in args.items() if k != "meta"},
                "success": bool(success),
                "unexpected": unexpected,
                "sample": [tuple(s) if isinstance(s, list) else s for s in sample],
                "why": (args.get("meta") or {}).get("why", ""),
            }
        )
    return results
