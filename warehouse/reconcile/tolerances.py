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

# Set-based: the file's SKU rows in one statement, its category rows in another.
_UNKNOWN_SKUS = text("""
SELECT t.line, t.sku FROM unnest(CAST(:lines AS int[]), CAST(:skus AS text[])) AS t(line, sku)
WHERE NOT EXISTS (SELECT 1 FROM sku s WHERE s.code = t.sku)
ORDER BY t.line
""")
_UPSERT_SKUS = text("""
INSERT INTO reconciliation_tolerance (sku_id, abs_qty, pct)
SELECT s.id, t.abs_qty, t.pct
FROM unnest(CAST(:skus AS text[]), CAST(:abs AS bigint[]), CAST(:pct AS numeric[])) AS t(sku, abs_qty, pct)
JOIN sku s ON s.code = t.sku
ON CONFLICT (sku_id) WHERE sku_id IS NOT NULL DO UPDATE SET abs_qty = excluded.abs_qty, pct = excluded.pct
""")
_UPSERT_CATEGORIES = text("""
INSERT INTO reconciliation_tolerance (category, abs_qty, pct)
SELECT t.category, t.abs_qty, t.pct
FROM unnest(CAST(:categories AS text[]), CAST(:abs AS bigint[]), CAST(:pct AS numeric[])) AS t(category, abs_qty, pct)
ON CONFLICT (category) WHERE category IS NOT NULL DO UPDATE SET abs_qty = excluded.abs_qty, pct = excluded.pct
""")
# What a cell may hold: a tolerance beyond any stock is a keying error, and a category is
# stored in 64 characters.
ABS_MAX = 10**12
CATEGORY_MAX = 64
# The percentage column's scale (numeric(7, 3)): a finer value would be stored rounded.
PCT_PLACES = 3
# Unknown SKUs named in a refusal, at most.
SHOWN = 50


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
    first_row: dict[tuple[str, str], int] = {}  # (sku, category) -> the row that named it first
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != 4:
            problems.append(
                Problem(number, None, ",".join(row), f"has {len(row)} fields, expected 4")
            )
            continue
        nul = _nul_cell(number, row)
        if nul is not None:
            problems.append(nul)
            continue
        sku, category, abs_text, pct_text = row
        target_ok = bool(sku) != bool(category)
        if not target_ok:
            problems.append(
                Problem(
                    number,
                    "sku,category",
                    f"{sku},{category}",
                    "give exactly one of sku or category",
                )
            )
        elif len(category) > CATEGORY_MAX:
            problems.append(
                Problem(number, "category", category, f"is longer than {CATEGORY_MAX} characters")
            )
        elif (sku, category) in first_row:  # two values for one target: which one is meant?
            problems.append(
                Problem(
                    number,
                    "sku" if sku else "category",
                    sku or category,
                    f"repeats row {first_row[(sku, category)]} (one row per sku or category)",
                )
            )
        else:
            first_row[(sku, category)] = number
        abs_ok = (
            abs_text.isascii()
            and abs_text.isdigit()
            and len(abs_text) <= len(str(ABS_MAX))  # int() of a 5,000-digit cell raises
            and int(abs_text) <= ABS_MAX
        )
        if not abs_ok:
            problems.append(
                Problem(number, "abs", abs_text, f"is not a whole number from 0 to {ABS_MAX}")
            )
        pct = _percentage(number, pct_text)
        if isinstance(pct, Problem):
            problems.append(pct)
            continue
        if abs_ok:
            parsed.append(Override(number, sku, category, int(abs_text), pct))
    if problems:
        raise FeedRejected(path.name, problems, kind=KIND)
    return parsed


def _nul_cell(number: int, row: list[str]) -> Problem | None:
    """The first cell holding a NUL byte (PostgreSQL text cannot store one: the load would fail
    with a database error, and be retried, instead of naming the cell)."""
    for column, cell in zip(HEADER, row, strict=True):
        if "\x00" in cell:
            return Problem(
                number, column, cell.replace("\x00", "\\0"), "holds a NUL byte (shown as \\0)"
            )
    return None


def _percentage(number: int, text: str) -> Decimal | Problem:
    """A pct cell's value, or the problem naming it: 0 to 100, with no more decimal places than
    the column keeps (a finer value would be stored rounded, silently)."""
    try:
        pct = Decimal(text)
        if pct < 0 or pct > 100:
            raise InvalidOperation
    except InvalidOperation:
        return Problem(number, "pct", text, "is not a percentage between 0 and 100")
    if pct != round(pct, PCT_PLACES):
        return Problem(
            number,
            "pct",
            text,
            f"has more than {PCT_PLACES} decimal places (tolerances are kept to "
            f"{Decimal(1).scaleb(-PCT_PLACES)} %)",
        )
    return pct


def load_tolerances(session: Session, path: Path) -> int:
    """Store the overrides of a tolerance file, all or nothing: a SKU code that names nothing
    refuses the whole file (every such row named), before anything is written."""
    overrides = read_tolerances(path)
    by_sku = [o for o in overrides if o.sku]
    by_category = [o for o in overrides if o.category]
    unknown = session.execute(
        _UNKNOWN_SKUS, {"lines": [o.line for o in by_sku], "skus": [o.sku for o in by_sku]}
    ).all()
    if unknown:
        problems = [Problem(line, "sku", sku, "is not a known SKU code") for line, sku in unknown]
        raise FeedRejected(path.name, problems[:SHOWN], total=len(problems), kind=KIND)
    for statement, targets, rows in (
        (_UPSERT_SKUS, "skus", by_sku),
        (_UPSERT_CATEGORIES, "categories", by_category),
    ):
        if rows:
            session.execute(
                statement,
                {
                    targets: [o.sku or o.category for o in rows],
                    "abs": [o.abs_qty for o in rows],
                    "pct": [o.pct for o in rows],
                },
            )
    return len(overrides)
