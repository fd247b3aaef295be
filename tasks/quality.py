"""The quality gate before steps that apply data: the stock invariants must hold."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.database import database
from warehouse.errors import WarehouseError
from warehouse.stock import books


class QualityGateFailed(WarehouseError):
    pass


@task(name="quality-gate-books", retries=1, retry_delay_seconds=10)
def check_books(full: bool | None = None) -> dict:
    """The books check that is due (incremental, or full on its schedule), recorded; raises
    (failing the run) when anything is wrong, naming the first findings."""
    with database().session() as session:
        result = books.check_books(session, full=full, limit_per_check=20)
    get_run_logger().info("%s", result.summary())
    if not result.ok:
        shown = "; ".join(result.lines()[:10])
        raise QualityGateFailed(f"{result.summary()}; nothing further is applied: {shown}")
    return {"kind": result.kind, "ok": True, "summary": result.summary()}


@task(name="quality-suite", task_run_name="quality-{suite}", retries=1, retry_delay_seconds=10)
def run_suite(suite: str, **context) -> dict:
    """One suite of expectations/ in the database; its result becomes a table artifact
    (`quality-<suite>`); a failure fails the task naming the failing expectations and sample rows."""
    result = validated(suite, **context)
    if not result.success:
        raise QualityGateFailed(str(result))
    return {"suite": suite, "expectations": len(result.rows)}


def validated(suite: str, **context):
    """Run the suite and leave its result as a table artifact (`quality-<suite>`)."""
    from tasks.reporting import table_artifact
    from warehouse.quality import suites as quality

    result = quality.validate(database("reader"), suite, **context)
    table_artifact(
        f"quality-{suite.replace('_', '-')}",
        [
            {**row, "arguments": str(row["arguments"]), "sample": str(row["sample"])}
            for row in result.rows
        ],
        str(result)[:2000],
    )
    return result
