"""The quality gate before steps that apply data: the stock invariants must hold."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from tasks import reporting
from tasks.database import database
from warehouse.errors import WarehouseError
from warehouse.quality.suites import QualityResult
from warehouse.stock import books


class QualityGateFailed(WarehouseError):
    pass


@task(name="quality-gate-books", retries=1, retry_delay_seconds=10)
def check_books(full: bool | None = None) -> books.BooksCheck:
    """The books check that is due (incremental, or full on its schedule), recorded; raises
    (failing the run) when anything is wrong, naming the first findings."""
    with database().session() as session:
        result = books.check_books(session, full=full, limit_per_check=20)
    get_run_logger().info("%s", result.summary())
    if not result.ok:
        shown = "; ".join(result.lines()[:10])
        raise QualityGateFailed(f"{result.summary()}; nothing further is applied: {shown}")
    return result


@task(name="quality-suite", task_run_name="quality-{suite}", retries=1, retry_delay_seconds=10)
def run_suite(suite: str, **context: Any) -> QualityResult:
    """One suite of expectations/ in the database; its result becomes a table artifact
    (`quality-<suite>`); a failure fails the task naming the failing expectations and sample rows."""
    result = validated(suite, **context)
    if not result.success:
        raise QualityGateFailed(str(result))
    return result


def validated(suite: str, **context: Any) -> QualityResult:
    """Run the suite and leave its result as a table artifact (`quality-<suite>`)."""
    from warehouse.quality import suites as quality

    result = quality.validate(database("reader"), suite, **context)
    reporting.quality_artifact(result)
    return result
