"""Reading an ERP feed file: the checks only the raw bytes allow (size, header, delimiter, NUL
bytes), its fingerprint, and the COPY into the staging table. Everything else about its rows is
checked in SQL (`checks`), over the whole file, before anything is applied.

Why the database and not a dataframe library: the checks must name row, column and value for
every rule, run over a million rows at close to COPY speed, and the rows must end up in
PostgreSQL for the diff anyway. COPY parses and loads at the server's speed; the checks are a
few set-based queries over the loaded text.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.db.engine import postgres_url
from warehouse.db.roles import STAGING_SCHEMA
from warehouse.errors import InvalidArgument, WarehouseError

HEADER = ("warehouse", "sku", "lot", "quantity", "as_of")
CHUNK = 1 << 20
MAX_BLANK_TAIL = 1 << 16
MAX_HEADER_BYTES = 4096
_CONTEXT = re.compile(r"COPY \w+, line (\d+)(?:, column (\w+))?")


@dataclass(frozen=True)
class Problem:
    row: int | None  # data row, 1-based (the file's line is row + 1 when no cell spans lines)
    column: str | None
    value: str | None
    why: str

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row} (line {self.row + 1})")
        if self.column:
            where.append(f"column {self.column}")
        if self.value is not None:
            shown = self.value if len(self.value) <= 40 else self.value[:40] + "..."
            where.append(f"value {shown!r}")
        return f"{', '.join(where) or 'file'}: {self.why}"


class FeedRejected(WarehouseError):
    """The feed was refused whole; nothing was applied."""

    def __init__(
        self,
        feed: str,
        problems: list[Problem],
        total: int | None = None,
        *,
        kind: str = "ERP feed",
    ):
        self.feed = feed
        self.problems = problems
        self.total = total if total is not None else len(problems)
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {self.total - 5} more)" if self.total > 5 else ""
        super().__init__(f"{kind} {feed} rejected, nothing applied: {shown}{more}")


@dataclass(frozen=True)
class FeedFile:
    path: Path
    sha256: str
    size: int


def inspect(path: Path, *, max_bytes: int) -> FeedFile:
    """Check what COPY cannot: size, header, delimiter, NUL bytes; and fingerprint the file."""
    name = path.name
    if not path.is_file():
        raise FeedRejected(name, [Problem(None, None, None, f"{path} is not a readable file")])
    size = path.stat().st_size
    if size == 0:
        raise FeedRejected(
            name,
            [
                Problem(
                    None, None, None, "the file is empty (a feed never zeroes stock by omission)"
                )
            ],
        )
    if size > max_bytes:
        raise FeedRejected(
            name,
            [
                Problem(
                    None, None, None, f"the file is {size:,} bytes, over the limit of {max_bytes:,}"
                )
            ],
        )
    # Of what COPY will read: the same feed saved again with a blank tail is the same feed.
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        first = stream.read(MAX_HEADER_BYTES)
        _check_header(name, first)
        for chunk in _without_blank_tail(_refusing_nul(name, _chunks(stream, first))):
            digest.update(chunk)
    return FeedFile(path, digest.hexdigest(), size)


def _chunks(stream: BinaryIO, first: bytes = b"") -> Iterator[bytes]:
    if first:
        yield first
    while chunk := stream.read(CHUNK):
        yield chunk


def _refusing_nul(name: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks as they are; a NUL byte (which COPY would take for the end of a value)
    rejects the feed naming its line."""
    lines_before = offset = 0
    for chunk in chunks:
        nul = chunk.find(b"\x00")
        if nul >= 0:
            line = lines_before + chunk.count(b"\n", 0, nul) + 1
            problem = f"a NUL byte at byte {offset + nul} (line {line})"
            raise FeedRejected(name, [Problem(line - 1 if line > 1 else None, None, None, problem)])
        lines_before += chunk.count(b"\n")
        offset += len(chunk)
        yield chunk


def _check_header(name: str, start: bytes) -> None:
    line = start.split(b"\n", 1)[0].rstrip(b"\r")
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]  # a UTF-8 byte order mark, as spreadsheets write it
    try:
        header = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FeedRejected(
            name,
            [Problem(None, "header", None, f"not UTF-8 ({error.reason} at byte {error.start})")],
        ) from None
    columns = [c.strip('"') for c in header.split(",")]
    if tuple(columns) == HEADER:
        return
    for delimiter in (";", "\t", "|"):
        if tuple(c.strip('"') for c in header.split(delimiter)) == HEADER:
            raise FeedRejected(
                name,
                [
                    Problem(
                        None,
                        "header",
                        header,
                        f"uses {delimiter!r} as delimiter; the feed is comma-separated",
                    )
                ],
            )
    missing = [c for c in HEADER if c not in columns]
    extra = [c for c in columns if c not in HEADER]
    parts = []
    if missing:
        parts.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected column(s) {', '.join(extra)}")
    if not parts:
        parts.append(f"columns out of order; expected {','.join(HEADER)}")
    raise FeedRejected(name, [Problem(None, "header", header, "; ".join(parts))])


STAGING_PREFIX = "erp_feed_"
_STAGING_NAME = re.compile(r"^erp_feed_(\d+)(?:_[0-9a-f]{8})?$")


def new_attempt() -> str:
    """A fresh attempt's tag: two attempts of one run never share a staging table."""
    return secrets.token_hex(4)


def staging_table(run_id: int, attempt: str) -> str:
    """One attempt's own staging table: UNLOGGED and without indexes, so COPY runs at full
    speed; `seq` numbers the rows in file order (one COPY inserts them in order; its identity
    sequence hands this one backend blocks of numbers, so they stay consecutive)."""
    if not re.fullmatch(r"[0-9a-f]{8}", attempt):
        raise ValueError(f"attempt tag {attempt!r}: 8 hex digits")
    return f"{STAGING_PREFIX}{int(run_id)}_{attempt}"


def staging_run(name: str) -> int | None:
    """The run a staging table belongs to; None for a table that is not one."""
    found = _STAGING_NAME.match(name)
    return int(found.group(1)) if found else None


def quoted(session: Session, name: str) -> str:
    return quoted_name(raw_sql.driver(session), name)


def quoted_name(connection: psycopg.Connection, name: str) -> str:
    """A staging table's qualified name: they live in the schema where the app role may create."""
    return sql.Identifier(STAGING_SCHEMA, name).as_string(connection)


# The staging tables there are (the sweep and a run's own clean-up filter them by run).
STAGING_TABLES = f"""
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = '{STAGING_SCHEMA}' AND c.relname LIKE 'erp\\_feed\\_%'
"""


_SEQ_CACHE = 10_000


def load(session: Session, staging: str, feed: FeedFile) -> int:
    """COPY the file into the attempt's staging table (made anew); the number of data rows.
    COPY's own errors (encoding, quotes, missing or extra fields) become a rejection naming the line."""
    table = quoted(session, staging)
    session.execute(text(f"DROP TABLE IF EXISTS {table}"))
    session.execute(
        text(
            # CACHE: a block of numbers per sequence access instead of one (a fifth of COPY's
            # time on a million rows); only this COPY draws from it, so they stay consecutive.
            f"CREATE UNLOGGED TABLE {table} (seq bigint GENERATED ALWAYS AS IDENTITY (CACHE {_SEQ_CACHE}), "
            "warehouse text, sku text, lot text, quantity text, as_of text)"
        )
    )
    raw = raw_sql.driver(session)
    statement = (
        f"COPY {table} (warehouse, sku, lot, quantity, as_of) FROM STDIN "
        "WITH (FORMAT csv, HEADER true, ENCODING 'UTF8')"
    )
    try:
        with raw.cursor() as cursor:
            with cursor.copy(statement) as copy, feed.path.open("rb") as stream:
                for chunk in _without_blank_tail(_chunks(stream)):
                    copy.write(chunk)
            rows = cursor.rowcount
    except psycopg.errors.DataError as error:  # bad encoding, quoting, field counts
        raise FeedRejected(feed.path.name, [_copy_problem(error, feed.path)]) from None
    # Statistics for the checks and the diff: without them the planner guesses ~100 rows.
    session.execute(text(f"ANALYZE {table}"))
    return rows


def _without_blank_tail(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks less the blank lines the file ends with (an editor's or a spreadsheet's last
    empty line), which COPY would read as a row with every field missing. A blank line between
    rows stays, and is refused as such; spaces ending the last row stay part of its last field.
    A blank run longer than MAX_BLANK_TAIL is no editor's habit: it goes on, and is refused
    (and what is held stays small: each chunk is scanned once more at most)."""
    held = b""
    for chunk in chunks:
        data = held + chunk if held else chunk
        content_end = len(data.rstrip(b" \t\r\n"))
        line_ends = (data.find(b"\n", content_end), data.find(b"\r", content_end))
        # A blank tail starts at the first line end after the content.
        cut = min((found for found in line_ends if found >= 0), default=len(data))
        if len(data) - cut > MAX_BLANK_TAIL:
            cut = len(data)
        held = data[cut:]  # maybe the start of the next row: it goes first in the next chunk
        if cut:
            yield data[:cut]


def _copy_problem(error: psycopg.Error, path: Path) -> Problem:
    found = _CONTEXT.search(error.diag.context or "")
    line = int(found.group(1)) if found else None
    column = found.group(2) if found and found.group(2) else None
    why = error.diag.message_primary or str(error)
    if "unterminated" in why:
        # COPY names the line where the file ended, still inside the quotes: the line to fix
        # is the one where that quoted field opened.
        line = _unclosed_quote_line(path) or line
        why = "a quoted field opens on this line and is never closed (unbalanced quotes)"
    return Problem(line - 1 if line and line > 1 else None, column, None, why)


def _unclosed_quote_line(path: Path) -> int | None:
    """The line (1 = the header) where a quoted field that never closes opens: the last line
    where the running count of quote characters turned odd, the count being odd at the end (a
    doubled quote inside a field adds two, so it never turns the count)."""
    opened, inside = None, False
    with path.open("rb") as stream:
        for number, text_line in enumerate(stream, start=1):
            quotes = text_line.count(b'"')
            if quotes % 2:
                if not inside:
                    opened = number
                inside = not inside
    return opened if inside else None


def erp_dsn(url: str) -> str:
    """The libpq form of an ERP database URL; InvalidArgument (a ValueError, never showing the
    password) for one that is not PostgreSQL's: a setting to fix, which no retry would pass."""
    try:
        parsed = postgres_url(url)
    except ValueError as error:
        raise InvalidArgument(str(error)) from None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class QueryRefused(WarehouseError):
    """The ERP database refused the feed's query as written (the run fails, exit 1)."""


def new_export_file(folder: Path, moment: datetime) -> Path:
    """A new, empty feed file of this export alone, named by `moment`: erp-<stamp>.csv, or
    erp-<stamp>-2.csv and so on when an export of the same second has one (created exclusively,
    so a second export never writes over the first's rows, nor removes them when it fails)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = moment.strftime("%Y%m%dT%H%M%S")
    for number in itertools.count(1):
        target = folder / (f"erp-{stamp}.csv" if number == 1 else f"erp-{stamp}-{number}.csv")
        try:
            target.open("xb").close()
        except FileExistsError:
            continue
        return target
    raise AssertionError("unreachable")


def export_query(url: str, query: str, target: Path) -> None:
    """Write the rows of an ERP database query as a feed file (COPY ... TO STDOUT); the file
    then goes through every check like any other feed. On any failure `target` is removed."""
    try:
        with (
            psycopg.connect(erp_dsn(url)) as connection,
            connection.cursor() as cursor,
            target.open("wb") as out,
        ):
            statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(
                sql.SQL(query)
            )
            with cursor.copy(statement) as copy:
                for chunk in copy:
                    out.write(chunk)
    except BaseException as error:  # a refusal, a lost connection, a bad URL, an interrupt
        target.unlink(missing_ok=True)  # no rows, or a part of them, is no feed
        if isinstance(error, psycopg.Error) and (error.sqlstate or "")[:2] in _QUERY_REFUSED:
            why = error.diag.message_primary or str(error)
            raise QueryRefused(f"the ERP database refused --erp-query: {why}") from None
        raise


# SQLSTATE classes of a query the ERP database refuses as written (syntax, names, privileges,
# its data, an unsupported feature): it would be refused again, so it is not retried.
_QUERY_REFUSED = {"42", "22", "0A", "21"}
