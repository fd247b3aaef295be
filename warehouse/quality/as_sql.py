"""A suite of simple expectations run as one SQL statement, without Great Expectations.

Every suite here checks counts, bounds, pairs and keys over one query, on the critical path of a
nightly run: there, GX builds a context and a datasource and sends a query per metric (the two
table suites took 0.9 s of a small night, 70% of it; the reconciliation's suites, seconds of
imports), while the checks themselves take one scan. A suite module that sets `AS_SQL = True`
is run here instead, one statement over its QUERY, with GX's meaning of each expectation
(column values: nulls are not counted, `mostly` is the share of non-null values that must pass;
bounds inclusive; a pair compares row by row; a compound key's every row counts when the key
repeats) and GX's result rows, so its artifact, its failures and its callers read the same. The
suites stay written as GX expectations, and one that needs more of GX runs on GX;
`tests/flows/test_quality.py` runs each AS_SQL suite both ways on the same rows, sound and
broken, and compares.
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
PAIR_GREATER = "ExpectColumnPairValuesAToBeGreaterThanB"
COMPOUND_UNIQUE = "ExpectCompoundColumnsToBeUnique"
SUPPORTED = frozenset({*_COLUMN_MAPS, *_TABLE, PAIR, PAIR_GREATER, COMPOUND_UNIQUE})


def supports(expectations: list[tuple[str, dict]]) -> bool:
    return all(kind in SUPPORTED for kind, _ in expectations)


def snake_case(kind: str) -> str:
    """ExpectTableRowCountToEqual -> expect_table_row_count_to_equal (GX's expectation type)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", error)
    return (str(orig).strip().splitlines() or ["an error"])[0]


def _measured(
    kind: str, args: dict[str, Any], windows: list[sql.Composable]
) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """(the rows the expectation counts, those of them it finds unexpected, a sample value) as
    SQL over the suite's rows; a compound key adds its per-key row count to `windows`."""
    if kind in (PAIR, PAIR_GREATER):
        a, b = sql.Identifier(args["column_A"]), sql.Identifier(args["column_B"])
        counted = sql.SQL("NOT ({a} IS NULL AND {b} IS NULL)").format(a=a, b=b)
        if kind == PAIR:
            unexpected = sql.SQL("{a} IS DISTINCT FROM {b}").format(a=a, b=b)
        else:
            operator = sql.SQL(">=" if args.get("or_equal") else ">")
            unexpected = sql.SQL("NOT coalesce({a} {op} {b}, false)").format(a=a, op=operator, b=b)
        return counted, unexpected, sql.SQL("jsonb_build_array({a}, {b})").format(a=a, b=b)
    if kind == COMPOUND_UNIQUE:
        columns = [sql.Identifier(name) for name in args["column_list"]]
        rows_of_key = sql.Identifier(f"cangflow_rows_of_key_{len(windows)}")
        windows.append(
            sql.SQL("count(*) OVER (PARTITION BY {}) AS {}").format(
                sql.SQL(", ").join(columns), rows_of_key
            )
        )
        # GX leaves out rows whose columns are all missing, and counts every row of a repeated key.
        counted = sql.SQL("NOT ({})").format(
            sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(c) for c in columns)
        )
        unexpected = sql.SQL("{} > 1").format(rows_of_key)
        return (
            counted,
            unexpected,
            sql.SQL("jsonb_build_array({})").format(sql.SQL(", ").join(columns)),
        )
    column = sql.Identifier(args["column"])
    counted = sql.SQL("{} IS NOT NULL").format(column)
    return counted, _COLUMN_MAPS[kind](column, args), sql.SQL("to_jsonb({})").format(column)


def validate(
    db: Database, suite: str, query: str, expectations: list[tuple[str, dict]]
) -> list[dict[str, Any]]:
    """One result row per expectation, as `suites.validate` makes them from GX's results."""
    measures: list[sql.Composable] = [sql.SQL("count(*)")]
    # A compound key's rows counted per key (a window over the suite's rows), one per expectation.
    windows: list[sql.Composable] = []
    for kind, args in expectations:
        if kind in _TABLE:
            continue
        counted_sql, unexpected_sql, sample_sql = _measured(kind, args, windows)
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
    rows_sql: sql.Composable = sql.SQL(query)
    if windows:
        rows_sql = sql.SQL("SELECT suite.*, {} FROM ({}) AS suite").format(
            sql.SQL(", ").join(windows), rows_sql
        )
    statement = sql.SQL("SELECT {} FROM ({}) AS suite").format(
        sql.SQL(", ").join(measures), rows_sql
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
