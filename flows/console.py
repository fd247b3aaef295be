"""What the `cangflow` command prints and how it exits: aligned tables for summaries, one line
per error, and one table of exit codes shared by every command (the README shows it)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from enum import IntEnum
from typing import Any, NoReturn

import typer


class ExitCode(IntEnum):
    OK = 0
    # A check found a problem, or an input (feed, CSV file, request) was refused.
    CHECK_FAILED = 1
    # The command line was refused before anything started: unknown option, bad value, missing file.
    BAD_ARGUMENTS = 2
    # The command could not do its work: a server unreachable, the schema not migrated, another
    # run holding what it needs, a bug.
    CANNOT_RUN = 3
    # The reconciliation found no new ERP feed (too old, reconciled before, none in the folder).
    STALE = 4


class CommandFailed(Exception):
    """Raised by a command to end with `code` and `message` on stderr (one line)."""

    def __init__(self, message: str, code: ExitCode):
        super().__init__(message)
        self.code = code


def fail(message: str, code: ExitCode = ExitCode.CHECK_FAILED) -> NoReturn:
    raise CommandFailed(message, code)


def bad_argument(option: str, value: object, why: str) -> NoReturn:
    fail(f"{option} {value!r}: {why}", ExitCode.BAD_ARGUMENTS)


def error_line(error: BaseException) -> str:
    """The reason on one line: the message's lines joined, the type named when it says nothing."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def report(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


# --- tables -----------------------------------------------------------------------------------

LIST_SHOWN = 6


def cell(value: Any) -> str:
    """One value as a person reads it: thousands separators, yes/no, lists shortened."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [cell(item) for item in value]
        if not items:
            return "none"
        shown = ", ".join(items[:LIST_SHOWN])
        return shown if len(items) <= LIST_SHOWN else f"{shown}, ... ({len(items):,} in all)"
    return str(value)


def _label(key: str) -> str:
    return str(key).replace("_", " ")


def summary_lines(summary: Mapping[str, Any], indent: int = 2) -> list[str]:
    """A flow's summary as label/value rows, numbers right-aligned; nested mappings indented."""
    flat = {key: value for key, value in summary.items() if not isinstance(value, Mapping)}
    width = max((len(_label(key)) for key in summary), default=0)
    values = {key: cell(value) for key, value in flat.items()}
    number_width = max(
        (len(text) for key, text in values.items() if _is_number(flat[key])), default=0
    )
    lines = []
    for key, value in summary.items():
        pad = " " * indent
        if isinstance(value, Mapping):
            lines.append(f"{pad}{_label(key)}:" + ("" if value else " none"))
            lines.extend(summary_lines(value, indent + 2))
            continue
        text = values[key]
        shown = text.rjust(number_width) if _is_number(value) else text
        lines.append(f"{pad}{_label(key):<{width}}  {shown}")
    return lines


def summary_text(summary: Mapping[str, Any]) -> str:
    """A summary on one log line: `label value; label value`, values as in the tables."""
    return "; ".join(
        f"{_label(key)} {summary_text(value) if isinstance(value, Mapping) else cell(value)}"
        for key, value in summary.items()
    )


def table_lines(
    rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None, indent: int = 2
) -> list[str]:
    """Rows as an aligned table with a header; numbers right-aligned."""
    if not rows:
        return []
    names = list(columns or rows[0].keys())
    texts = [[cell(row.get(name)) for name in names] for row in rows]
    numeric = [
        all(_is_number(row.get(name)) or row.get(name) is None for row in rows) for name in names
    ]
    widths = [
        max(len(_label(name)), *(len(line[i]) for line in texts)) for i, name in enumerate(names)
    ]

    def line(parts: list[str]) -> str:
        return (
            " " * indent
            + "  ".join(
                part.rjust(w) if right else part.ljust(w)
                for part, w, right in zip(parts, widths, numeric, strict=True)
            ).rstrip()
        )

    return [line([_label(name) for name in names]), *(line(parts) for parts in texts)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- quiet logs -------------------------------------------------------------------------------


class _WithoutTraceback(logging.Formatter):
    """Formats a record as `inner` does, minus its traceback (the reason stays in the message)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_console_logs(*, debug: bool) -> None:
    """Prefect logs a failed task or flow with its traceback on the console; without --debug the
    console shows the reason only. Logs sent to the Prefect server keep the traceback."""
    logging.getLogger("great_expectations").setLevel(logging.DEBUG if debug else logging.WARNING)
    if debug:
        return
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not isinstance(
            handler.formatter, _WithoutTraceback
        ):
            handler.setFormatter(_WithoutTraceback(handler.formatter))
