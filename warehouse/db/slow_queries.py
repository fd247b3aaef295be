"""Slow statements: counted (metric `cangflow_db_slow_queries_total`) and logged with their
shape, never their values. SQLAlchemy's cursor events see what goes through the engine; the
two hot paths that talk to psycopg directly (stock statements, as-of reads) call `observe`."""

from __future__ import annotations

import logging
import re
import time

from sqlalchemy import event
from sqlalchemy.engine import Engine

from warehouse.metrics import sinks as metrics

logger = logging.getLogger("cangflow.slow_queries")

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$])-?\d+(?:\.\d+)?\b")
_SPACE = re.compile(r"\s+")
SHAPE_MAX = 400


def shape(statement: str) -> str:
    """The statement without its literal values, on one line."""
    text = _NUMBER.sub("?", _STRING.sub("?", statement))
    return _SPACE.sub(" ", text).strip()[:SHAPE_MAX]


def operation(statement: str) -> str:
    words = _SPACE.sub(" ", statement).strip().split(" ", 1)
    first = words[0].upper() if words and words[0] else "OTHER"
    return (
        first
        if first
        in {
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "WITH",
            "COPY",
            "CREATE",
            "ALTER",
            "DROP",
            "ANALYZE",
            "EXECUTE",
            "SET",
        }
        else "OTHER"
    )


def observe(statement: str, seconds: float, threshold_s: float) -> None:
    if seconds < threshold_s:
        return
    metrics.current().inc("cangflow_db_slow_queries_total", operation=operation(statement))
    logger.warning("slow statement (%.3f s): %s", seconds, shape(statement))


def install(engine: Engine, threshold_s: float) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _started(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("cangflow_started", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _ended(conn, cursor, statement, parameters, context, executemany):
        started = conn.info.get("cangflow_started")
        if started:
            observe(statement, time.perf_counter() - started.pop(), threshold_s)
