"""Running the data-quality suites of `expectations/` with Great Expectations (GX Core 1.x) in
the database: a SQL datasource on our PostgreSQL and a query asset bounded to one batch, so the
metrics run as SQL and no big table is pulled into memory."""

from __future__ import annotations

import importlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from .db import Database

logger = logging.getLogger("cangflow.quality")
SAMPLE_ROWS = 5


@dataclass
class QualityResult:
    suite: str
    success: bool
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per expectation, for the artifact

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if not row["success"]]

    def __str__(self) -> str:
        if self.success:
            return f"{self.suite}: {len(self.rows)} expectation(s) met"
        shown = "; ".join(f"{f['expectation']} {f['arguments']}: unexpected {f['unexpected']} e.g. {f['sample']}"
                          for f in self.failures)
        return f"{self.suite}: {len(self.failures)} of {len(self.rows)} expectation(s) failed: {shown}"


def validate(db: Database, suite: str, **context: Any) -> QualityResult:
    """Run `expectations.<suite>` against its query (formatted with `context`, which only ever
    holds values this code made: dates, ids, our own table names)."""
    import great_expectations as gx

    module = importlib.import_module(f"expectations.{suite}")
    if getattr(module, "CONTEXT", None):
        with db.session() as session:
            for name, query in module.CONTEXT.items():
                context.setdefault(name, session.execute(text(query)).scalar_one())
    gx_context = gx.get_context(mode="ephemeral")
    source = gx_context.data_sources.add_postgres(
        f"cangflow-{uuid.uuid4().hex[:8]}", connection_string=db.url.render_as_string(hide_password=False))
    asset = source.add_query_asset(module.NAME, query=module.QUERY.format(**context))
    batch = asset.add_batch_definition_whole_table("batch").get_batch()
    suite_obj = gx_context.suites.add(gx.ExpectationSuite(name=module.NAME))
    for kind, arguments in module.expectations(**context):
        suite_obj.add_expectation(getattr(gx.expectations, kind)(**arguments))
    outcome = batch.validate(suite_obj, result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS})
    rows = []
    for result in outcome.results:
        details = result.result or {}
        rows.append({
            "expectation": result.expectation_config.type,
            "arguments": {k: v for k, v in result.expectation_config.kwargs.items() if k not in ("batch_id",)},
            "success": bool(result.success),
            "unexpected": details.get("unexpected_count", details.get("observed_value", "")),
            "sample": details.get("partial_unexpected_list", [])[:SAMPLE_ROWS],
        })
    return QualityResult(module.NAME, bool(outcome.success), rows)
