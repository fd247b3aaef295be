"""Tolerance overrides from a CSV (`sku,category,abs,pct`, one of sku or category per row),
checked whole first like every feed: a bad cell names its line, column and value."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.reconcile.feed import FeedRejected, Problem

HEADER = ["sku", "category", "abs", "pct"]

_UPSERT_SKU = text("""
INSERT INTO reconciliation_tolerance (sku_id, abs_qty, pct)
SELECT id, :abs, :pct FROM sku WHERE code = :sku
ON CONFLICT (sku_id) WHERE sku_id IS NOT NULL DO UPDATE SET abs_qty = excluded.abs_qty, pct = excluded.pct
RETURNING id
""")
_UPSERT_CATEGORY = text("""
INSERT INTO reconciliation_tolerance (category, abs_qty, pct) VALUES (:category, :abs, :pct)
ON CONFLICT (category) WHERE category IS NOT NULL DO UPDATE SET abs_qty = excluded.abs_qty, pct = excluded.pct
""")


KIND = "tolerance file"


@dataclass(frozen=True)
class Override:
    line: int  # the data row's number (1 is the first after the header)
    sku: str
    category: str
    abs_qty: int
    pct: Decimal


def read_tolerances(path: Path) -> list[Override]:
    """The overrides of a tolerance file, checked whole (FeedRejected naming each bad row,
    column and value); no database: the command checks the file before anything starts."""
    with path.open(newline="", encoding="utf-8") as stream:
        try:
            rows = list(csv.reader(stream))
        except (UnicodeDecodeError, csv.Error) as error:
            raise FeedRejected(
                path.name, [Problem(None, None, None, f"is not a CSV file ({error})")], kind=KIND
            ) from None
    if not rows or rows[0] != HEADER:
        found = ",".join(rows[0]) if rows else ""
        problem = Problem(None, "header", found, f"expected the header {','.join(HEADER)}")
        raise FeedRejected(path.name, [problem], kind=KIND)
    problems, parsed = [], []
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != 4:
            problems.append(
                Problem(number, None, ",".join(row), f"has {len(row)} fields, expected 4")
            )
            continue
        sku, category, abs_text, pct_text = row
        if bool(sku) == bool(category):
            problems.append(
                Problem(
                    number,
                    "sku,category",
                    f"{sku},{category}",
                    "give exactly one of sku or category",
                )
            )
        if not abs_text.isdigit():
            problems.append(Problem(number, "abs", abs_text, "is not a whole number >= 0"))
        try:
            pct = Decimal(pct_text)
            if pct < 0 or pct > 100:
                raise InvalidOperation
        except InvalidOperation:
            problems.append(
                Problem(number, "pct", pct_text, "is not a percentage between 0 and 100")
            )
            continue
        if abs_text.isdigit():
            parsed.append(Override(number, sku, category, int(abs_text), pct))
    if problems:
        raise FeedRejected(path.name, problems, kind=KIND)
    return parsed


def load_tolerances(session: Session, path: Path) -> int:
    """Store the overrides of a tolerance file (an unknown SKU code refuses the whole file)."""
    overrides = read_tolerances(path)
    for override in overrides:
        if override.sku:
            known = session.execute(
                _UPSERT_SKU, {"sku": override.sku, "abs": override.abs_qty, "pct": override.pct}
            ).first()
            if known is None:
                problem = Problem(override.line, "sku", override.sku, "is not a known SKU code")
                raise FeedRejected(path.name, [problem], kind=KIND)
        else:
            session.execute(
                _UPSERT_CATEGORY,
                {"category": override.category, "abs": override.abs_qty, "pct": override.pct},
            )
    return len(overrides)
