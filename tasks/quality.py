"""The quality gate before steps that apply data: the stock invariants must hold."""

from __future__ import annotations

from prefect import task

from warehouse import invariants
from warehouse.errors import WarehouseError

from .database import database


class QualityGateFailed(WarehouseError):
    pass


@task(name="quality-gate-invariants", retries=1, retry_delay_seconds=10)
def check_invariants() -> int:
    """Raises (failing the run) when any invariant is violated, naming the first violations."""
    with database().session() as session:
        violations = invariants.check(session, limit_per_check=20)
    if violations:
        shown = "; ".join(str(v) for v in violations[:10])
        raise QualityGateFailed(f"{len(violations)} invariant violation(s); nothing further is applied: {shown}")
    return 0


@task(name="quality-suite", task_run_name="quality-{suite}", retries=1, retry_delay_seconds=10)
def run_suite(suite: str, **context) -> dict:
    """One suite of expectations/ in the database; its result becomes a table artifact
    (`quality-<suite>`); a failure fails the task naming the failing expectations and sample rows."""
    from warehouse import quality

    from .reporting import table_artifact

    result = quality.validate(database(), suite, **context)
    table_artifact(f"quality-{suite.replace('_', '-')}",
                   [{**row, "arguments": str(row["arguments"]), "sample": str(row["sample"])} for row in result.rows],
                   str(result)[:2000])
    if not result.success:
        raise QualityGateFailed(str(result))
    return {"suite": suite, "expectations": len(result.rows)}
