"""Tolerance overrides from a CSV (`sku,category,abs,pct`, one of sku or category per row),
checked whole first like every feed: a bad cell names its line, column and value."""

from __future__ import annotations

import csv
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


def load_tolerances(session: Session, path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    if not rows or rows[0] != HEADER:
        raise FeedRejected(
            path.name,
            [
                Problem(
                    None,
                    "header",
                    ",".join(rows[0]) if rows else "",
                    f"expected the header {','.join(HEADER)}",
                )
            ],
        )
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
        parsed.append((number, sku, category, abs_text, pct))
    if problems:
        raise FeedRejected(path.name, problems)
    for number, sku, category, abs_text, pct in parsed:
        if sku:
            if (
                session.execute(_UPSERT_SKU, {"sku": sku, "abs": int(abs_text), "pct": pct}).first()
                is None
            ):
                raise FeedRejected(
                    path.name, [Problem(number, "sku", sku, "is not a known SKU code")]
                )
        else:
            session.execute(
                _UPSERT_CATEGORY, {"category": category, "abs": int(abs_text), "pct": pct}
            )
    return len(parsed)
