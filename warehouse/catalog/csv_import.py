"""Bulk import of master data from CSV. The whole file is checked first; any bad cell rejects
the file with errors naming line, column and value, and nothing is written."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.errors import InvalidArgument
from warehouse.stock import validation

MAX_ERRORS_SHOWN = 20
NUL = b"\x00"

COLUMNS = {
    "warehouses": ("code", "name"),
    "locations": ("warehouse", "code"),
    "skus": ("code", "name", "category"),
    "lots": ("sku", "code", "expires"),
}
KEYS = {
    "warehouses": ("code",),
    "locations": ("warehouse", "code"),
    "skus": ("code",),
    "lots": ("sku", "code"),
}

_INSERT = {
    "warehouses": """
        INSERT INTO warehouse (code, name)
        SELECT * FROM unnest(CAST(:code AS text[]), CAST(:name AS text[]))
        ON CONFLICT (code) DO NOTHING RETURNING 1""",
    "locations": """
        INSERT INTO location (warehouse_id, code)
        SELECT w.id, r.code FROM unnest(CAST(:warehouse AS text[]), CAST(:code AS text[])) AS r(warehouse, code)
        JOIN warehouse w ON w.code = r.warehouse
        ON CONFLICT (warehouse_id, code) DO NOTHING RETURNING 1""",
    "skus": """
        INSERT INTO sku (code, name, category)
        SELECT * FROM unnest(CAST(:code AS text[]), CAST(:name AS text[]), CAST(:category AS text[]))
        ON CONFLICT (code) DO NOTHING RETURNING 1""",
    "lots": """
        INSERT INTO lot (sku_id, code, expires)
        SELECT s.id, r.code, r.expires
        FROM unnest(CAST(:sku AS text[]), CAST(:code AS text[]), CAST(:expires AS date[])) AS r(sku, code, expires)
        JOIN sku s ON s.code = r.sku
        ON CONFLICT (sku_id, code) DO NOTHING RETURNING 1""",
}
# Which referenced codes must exist already: (column, table).
_REFERENCES = {"locations": ("warehouse", "warehouse"), "lots": ("sku", "sku")}


@dataclass(frozen=True)
class ImportReport:
    kind: str
    rows: int
    created: int

    @property
    def existing(self) -> int:
        return self.rows - self.created


def read_rows(kind: str, content: bytes) -> list[dict[str, object]]:
    """Parse and check `content`; raise InvalidArgument listing every bad cell."""
    if kind not in COLUMNS:
        raise InvalidArgument(f"unknown catalog kind {kind!r}; one of {', '.join(COLUMNS)}")
    if b"\x00" in content:
        raise InvalidArgument(f"{kind}: the file contains NUL bytes (byte {content.index(NUL)})")
    try:
        decoded = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidArgument(f"{kind}: not UTF-8 at byte {error.start}") from None
    reader = csv.DictReader(io.StringIO(decoded, newline=""), strict=True)
    expected = COLUMNS[kind]
    try:
        header = reader.fieldnames or []
        if tuple(header) != expected:
            raise InvalidArgument(
                f"{kind}: header is {','.join(header) or '(empty)'}; expected {','.join(expected)}"
            )
        records = list(reader)
    except csv.Error as error:
        raise InvalidArgument(f"{kind}: line {reader.line_num}: malformed CSV ({error})") from None
    errors: list[str] = []
    rows: list[dict[str, object]] = []
    seen: dict[tuple, int] = {}
    for line, record in enumerate(records, start=2):
        if None in record or any(value is None for value in record.values()):
            errors.append(f"line {line}: expected {len(expected)} columns")
            continue
        row, problems = _check_row(kind, record)
        errors.extend(f"line {line}, column {column}: {problem}" for column, problem in problems)
        key = tuple(record[column] for column in KEYS[kind])
        if key in seen:
            errors.append(
                f"line {line}: duplicate of line {seen[key]} ({', '.join(map(repr, key))})"
            )
        seen.setdefault(key, line)
        rows.append(row)
    if not records:
        errors.append("the file has a header but no rows")
    if errors:
        shown = "\n  ".join(errors[:MAX_ERRORS_SHOWN])
        more = (
            f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more"
            if len(errors) > MAX_ERRORS_SHOWN
            else ""
        )
        raise InvalidArgument(
            f"{kind}: {len(errors)} problem(s), nothing imported:\n  {shown}{more}"
        )
    return rows


def _check_row(
    kind: str, record: dict[str, str]
) -> tuple[dict[str, object], list[tuple[str, str]]]:
    row: dict[str, object] = {}
    problems: list[tuple[str, str]] = []
    for column, value in record.items():
        if column in ("name", "category"):
            row[column] = value or None
            if len(value) > 200:
                problems.append((column, f"{value[:20]!r}... is longer than 200 characters"))
        elif column == "expires":
            try:
                row[column] = date.fromisoformat(value) if value else None
            except ValueError:
                problems.append((column, f"{value!r} is not a date (YYYY-MM-DD)"))
        else:
            try:
                row[column] = validation.code(value, field=column)
            except InvalidArgument as error:
                problems.append((column, str(error)))
    return row, problems


def import_csv(session: Session, kind: str, source: Path | str | bytes) -> ImportReport:
    content = source if isinstance(source, bytes) else Path(source).read_bytes()
    rows = read_rows(kind, content)
    if kind in _REFERENCES:
        column, table = _REFERENCES[kind]
        # `_check_row` made the referencing column a code (`validation.code`): always a str.
        wanted = sorted({code for row in rows if isinstance(code := row[column], str)})
        known = set(
            session.execute(
                text(f"SELECT code FROM {table} WHERE code = ANY (CAST(:codes AS text[]))"),
                {"codes": wanted},
            ).scalars()
        )
        missing = [code for code in wanted if code not in known]
        if missing:
            lines = [
                f"line {i}: {column} {row[column]!r} is unknown"
                for i, row in enumerate(rows, start=2)
                if row[column] in missing
            ]
            raise InvalidArgument(
                f"{kind}: {len(lines)} row(s) name an unknown {column}, nothing imported:\n  "
                + "\n  ".join(lines[:MAX_ERRORS_SHOWN])
            )
    params = {column: [row[column] for row in rows] for column in COLUMNS[kind]}
    created = len(session.execute(text(_INSERT[kind]), params).all())
    return ImportReport(kind, len(rows), created)
