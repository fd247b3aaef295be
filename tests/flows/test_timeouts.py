"""No flow or long task runs forever: each flow has a timeout (the relay's follow mode is a
service, bounded by its tasks), the long tasks have their own, and a hung run ends as a failed
run (TimedOut) instead of holding the queue behind it."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def test_every_flow_has_a_timeout_and_no_inline_task_has_one_that_would_swallow_it():
    """Prefect times a flow, and a task called inline in it, with SIGALRM in the same thread:
    a task timeout nested in the flow's takes the flow's alarm for its own, and the task's
    retries then run the hung step again (measured: a 2 s flow timeout ended a 20 s task
    completed after 23.6 s). So the flow's timeout bounds its inline tasks; only a task mapped
    into the runner's threads (reconcile-apply) has its own."""
    from flows.cache_warmup import warmup_flow
    from flows.nightly import nightly_flow
    from flows.partition_rollover import rollover_flow
    from flows.reconcile import reconcile_flow
    from flows.relay import relay_flow
    from flows.snapshot import snapshot_flow
    from tasks import cache, quality, reconcile, rollover, snapshot

    for flow in (nightly_flow, snapshot_flow, rollover_flow, reconcile_flow, warmup_flow):
        assert flow.timeout_seconds and flow.timeout_seconds <= 6 * 3600, flow.name
    assert (
        relay_flow.timeout_seconds is None
    )  # --follow runs until stopped (a service); see the README
    inline = [
        getattr(module, name)
        for module in (cache, quality, reconcile, rollover, snapshot)
        for name in dir(module)
        if hasattr(getattr(module, name), "timeout_seconds")
        and hasattr(getattr(module, name), "task_run_name")
    ]
    assert inline and {t.name for t in inline if t.timeout_seconds} == {"reconcile-apply"}


def test_a_hung_step_ends_the_run_timed_out_instead_of_holding_the_queue(
    tasks_db, prefect_api, monkeypatch
):
    from flows.cache_warmup import warmup_flow
    from tasks import cache

    monkeypatch.setattr(
        cache, "hot_set", lambda *args, **kwargs: time.sleep(30)
    )  # a statement that never returns
    started = time.monotonic()
    state = warmup_flow.with_options(timeout_seconds=2)(top=10, return_state=True)
    assert state.is_failed() and state.name == "TimedOut", state
    assert time.monotonic() - started < 15


def test_a_statement_stuck_in_a_flow_step_is_cancelled_by_the_job_statement_timeout(
    tasks_db, monkeypatch
):
    """The flows' engine (tasks.database) bounds every statement; a WMS service's engine is not touched."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from tasks import database
    from warehouse.settings import get_settings

    monkeypatch.setenv("CANGFLOW_JOB_STATEMENT_TIMEOUT_S", "1")
    get_settings.cache_clear()
    database.forget()
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="statement timeout"):
            with database.database().session() as session:
                session.execute(text("SELECT pg_sleep(30)"))
        assert time.monotonic() - started < 10
        with tasks_db.session() as session:  # not the flows' engine: no such bound
            assert session.execute(text("SHOW statement_timeout")).scalar() == "0"
    finally:
        monkeypatch.delenv("CANGFLOW_JOB_STATEMENT_TIMEOUT_S")
        get_settings.cache_clear()
        database.forget()
