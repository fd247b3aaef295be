import pytest


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API (and database) for every flow test of the run.

    Flow-run heartbeats are off in this process: Prefect (3.9) joins its heartbeat thread when a
    flow run ends, and that thread sleeps in whole seconds, so every flow and subflow run here
    waited up to a second for nothing (a nightly: about 3 s of its 4). Heartbeats serve crash
    detection by a server watching long runs; the flows run by `cangflow` in a subprocess, as
    a user runs them, keep them."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
