import contextlib
import os
import socket
import uuid

import psycopg
import pytest

from tests.conftest import ADMIN_URL, _database


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for every flow test of the run, on a PostgreSQL database of
    its own (created here, dropped after), as Prefect recommends for a server under load.

    What `prefect.testing.utilities.prefect_test_harness` does, with two differences measured on
    the nightly flow (4.1 s a night with the harness, 1.0 s with this):
    - PostgreSQL instead of SQLite. On SQLite, writes of the API and of the server's own
      services collide ("database is locked"); the API answers 503 and the client retries
      after 2 s, about once a night.
    - Flow-run heartbeats are off in this process: Prefect (3.9) joins its heartbeat thread when
      a flow run ends, and that thread sleeps in whole seconds, so each flow and subflow run
      waited up to a second for nothing. Heartbeats serve crash detection by a server watching
      long runs; the flows run by `cangflow` in a subprocess, as a user runs them, keep them.
    """
    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )
    from prefect.utilities.asyncutils import run_coro_as_sync

    name = f"prefect_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    url = (
        f"postgresql+asyncpg://{admin.get('user', 'postgres')}@{admin.get('host', '127.0.0.1')}:"
        f"{admin.get('port', '5432')}/{name}"
    )
    with (
        _database(name),
        temporary_database_interface(),
        temporary_settings(
            {PREFECT_SERVER_DATABASE_CONNECTION_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        ),
    ):
        server = SubprocessASGIServer(port=_free_port())
        # Prefect code that asks for "the" local server during a run gets this one.
        prior = SubprocessASGIServer._instances.get(None)
        SubprocessASGIServer._instances[None] = server
        server.start(timeout=180)
        try:
            with (
                temporary_settings({PREFECT_API_URL: server.api_url}),
                prefect.context._temporary_global_settings_context(
                    prefect.context.get_settings_context()
                ),
            ):
                yield

                async def drain() -> None:  # logs and events in flight, before the server goes
                    for drained in (APILogWorker.instance().drain(), EventsWorker.drain_all()):
                        if hasattr(drained, "__await__"):
                            await drained

                with contextlib.suppress(RuntimeError):  # a worker that never started
                    run_coro_as_sync(drain())
        finally:
            server.stop()
            if prior is not None:
                SubprocessASGIServer._instances[None] = prior
            else:
                SubprocessASGIServer._instances.pop(None, None)


@pytest.fixture(autouse=True)
def reconciliation_brake_off_unless_tested(request, monkeypatch):
    """The blast-radius brake's defaults (5% of rows, 2% of stock, no SKU zeroed) hold almost any
    run of a test's handful of SKUs; the tests of other behaviour lift it, the brake's own tests
    (marked `brake`) keep the defaults."""
    from warehouse.settings import get_settings

    if request.node.get_closest_marker("brake"):
        yield
        return

    monkeypatch.setenv("CANGFLOW_RECONCILE_MAX_DIFFERING_PCT", "100")
    monkeypatch.setenv("CANGFLOW_RECONCILE_MAX_DELTA_PCT", "100")
    monkeypatch.setenv("CANGFLOW_RECONCILE_ZEROING_MIN_QTY", str(10**12))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
