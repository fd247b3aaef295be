"""Artifacts a person can act on in the Prefect UI, with stable keys so the UI shows history.
Cells that a spreadsheet would run as a formula are neutralised."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact

_FORMULA_START = ("=", "+", "-", "@")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def table_artifact(key: str, rows: list[dict[str, Any]], description: str) -> None:
    table = [{column: safe_cell(value) for column, value in row.items()} for row in rows]
    create_table_artifact(
        table=table or [{"note": "nothing to report"}], key=key, description=description
    )
