"""Running the data-quality suites of `expectations/` with Great Expectations (GX Core 1.x) in
the database: a SQL datasource on our PostgreSQL and a query asset bounded to one batch, so the
metrics run as SQL and no big table is pulled into memory.

The datasource never sees our URL as text. GX validates a Postgres connection string as a
host-based DSN (the embedded server is reached through a unix socket, with no host) and treats
`$` as a config template, so a pasted URL breaks on the embedded default, on passwords holding
`$`, and in other ways. Instead its engine gets a `creator` that connects exactly as our own
engine does (the dialect's connect arguments, taken from the parsed URL); the string GX holds
names the dialect only."""

from __future__ import annotations

import importlib
import logging
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from warehouse.db.engine import Database
from warehouse.quality import as_sql
from warehouse.quality.as_sql import SuiteCouldNotRun

logger = logging.getLogger("cangflow.quality")
SAMPLE_ROWS = 5


@dataclass
class QualityResult:
    suite: str
    success: bool
    # One per expectation, for the artifact.
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if not row["success"]]

    def __str__(self) -> str:
        if self.success:
            return f"{self.suite}: {len(self.rows)} expectation(s) met"
        shown = "; ".join(
            f"{f.get('why') or f['expectation']} {f['arguments']}: unexpected {f['unexpected']} e.g. {f['sample']}"
            for f in self.failures
        )
        return (
            f"{self.suite}: {len(self.failures)} of {len(self.rows)} expectation(s) failed: {shown}"
        )


def validate(db: Database, suite: str, **context: Any) -> QualityResult:
    """Run `expectations.<suite>` against its query (formatted with `context`, which only ever
    holds values this code made: dates, ids, our own table names); a suite that sets `AS_SQL`
    as one SQL statement (`as_sql`), every other one with Great Expectations."""
    module = importlib.import_module(f"expectations.{suite}")
    if getattr(module, "CONTEXT", None):
        with db.session() as session:
            for name, query in module.CONTEXT.items():
                context.setdefault(name, session.execute(text(query)).scalar_one())
    if getattr(module, "AS_SQL", False):
        expected = module.expectations(**context)
        if not as_sql.supports(expected):
            raise ValueError(f"suite {module.NAME} sets AS_SQL but uses expectations only GX runs")
        rows = as_sql.validate(db, module.NAME, module.QUERY.format(**context), expected)
        return QualityResult(module.NAME, all(row["success"] for row in rows), rows)
    import great_expectations as gx

    gx_context = quiet_context()
    source = datasource(gx_context, db)
    try:
        asset = source.add_query_asset(module.NAME, query=module.QUERY.format(**context))
        batch = asset.add_batch_definition_whole_table("batch").get_batch()
        suite_obj = gx_context.suites.add(gx.ExpectationSuite(name=module.NAME))
        for kind, arguments in module.expectations(**context):
            suite_obj.add_expectation(getattr(gx.expectations, kind)(**arguments))
        outcome = batch.validate(
            suite_obj,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS},
        )
    finally:
        close_engines(source)
    _refuse_unrun(module.NAME, outcome.results)
    rows = []
    for result in outcome.results:
        details = result.result or {}
        rows.append(
            {
                "expectation": result.expectation_config.type,
                "arguments": {
                    k: v
                    for k, v in result.expectation_config.kwargs.items()
                    if k not in ("batch_id",)
                },
                "success": bool(result.success),
                "unexpected": details.get("unexpected_count", details.get("observed_value", "")),
                "sample": details.get("partial_unexpected_list", [])[:SAMPLE_ROWS],
                # What the expectation guards against, in words an operator acts on (its `meta`).
                "why": (result.expectation_config.meta or {}).get("why", ""),
            }
        )
    return QualityResult(module.NAME, bool(outcome.success), rows)


def _refuse_unrun(suite: str, results) -> None:
    for result in results:
        info = result.exception_info or {}
        raised = (
            [info]
            if "raised_exception" in info
            else [v for v in info.values() if isinstance(v, dict)]
        )
        for one in raised:
            if one.get("raised_exception"):
                message = (one.get("exception_message") or "").strip().splitlines()
                raise SuiteCouldNotRun(
                    f"quality suite {suite} could not run {result.expectation_config.type}: "
                    f"{message[0] if message else 'an error'}"
                )


def close_engines(source: Any) -> None:
    """A GX SQL datasource holds two engines, each with a pool: its own (`get_engine`) and its
    execution engine's, the one validations run on. Left to the garbage collector, a process
    validating night after night would hold their connections open."""
    source.get_execution_engine().engine.dispose()
    source.get_engine().dispose()


def quiet_context():
    """An in-memory GX context without progress bars (one per metric batch otherwise)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def datasource(gx_context, db: Database):
    """A GX SQL datasource whose connections are made like `db`'s own (see the module doc)."""
    dialect = db.engine.dialect
    connect_args, connect_kwargs = dialect.create_connect_args(db.engine.url)
    connect_kwargs = {**connect_kwargs, "application_name": "cangflow-quality"}

    def connection():
        made = dialect.connect(*connect_args, **connect_kwargs)
        db.act_as_role(made)  # the suites read as `db`'s role (the reader), as its own engine does
        return made

    with warnings.catch_warnings():
        # GX suggests its Postgres datasource for a postgresql URL; that one insists on a host.
        warnings.filterwarnings("ignore", message=".*more specific PostgresDatasource.*")
        return gx_context.data_sources.add_sql(
            f"cangflow-{uuid.uuid4().hex[:8]}",
            connection_string=f"{db.url.drivername}://",
            kwargs={"creator": connection},
        )
