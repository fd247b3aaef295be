import pytest


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API (and database) for every flow test of the run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
