"""Shared fixtures. Integration tests run against a real PostgreSQL in a database created for
this test run and dropped after it; each test builds its own uniquely named items, so tests
never see each other's stock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.day_boundary import wait_for_a_whole_day

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# `.ci/run` sets CI=1: there a skipped test is a promise nobody checked, so it fails the run.
SKIPS_FAIL = os.environ.get("CI", "") not in ("", "0", "false")


# The suite runs on two xdist workers, each test file whole on one of them
# (`-n 2 --dist loadfile` in pyproject.toml), files handed out in collection order as a worker
# frees up. These files take the longest (seconds of each, serially, on 2026-12-06: 195, 110, 67,
# 51, 48, 39, 35, 31, 30); handed out first, none of them starts last and leaves one worker
# running alone at the end (513 s in all that day as xdist orders them, 852 s serially).
LONGEST_FIRST = (
    "tests/flows/test_first_five_minutes.py",
    "tests/flows/test_lifecycle.py",
    "tests/flows/test_automations.py",
    "tests/flows/test_snapshot_flows.py",
    "tests/flows/test_reconcile_kill.py",
    "tests/flows/test_deployments.py",
    "tests/flows/test_snapshot_kill.py",
    "tests/flows/test_reconcile_feeds.py",
    "tests/flows/test_cli_arguments.py",
)


# In CI, a run started this close to the end of the business day first waits for the next day.
# Tests that build history relative to "today" (snapshots up to yesterday, the demo's days) read
# the date when their module is imported and again when the flow runs; a run crossing midnight
# saw two different days and failed (a run begun at 23:57 UTC: 8 failures). The suite takes
# about 15 minutes here; the margin leaves room for a slower machine.
MIDNIGHT_MARGIN = timedelta(minutes=25)


def pytest_configure(config):
    """Before the workers start (in the controlling process): in CI, a run that could cross the
    business day's midnight waits for it (`wait_for_a_whole_day`); and, run as root, pgserver
    hands its servers to a system user it makes with `useradd` on its first start, and two
    workers making it at once on a fresh machine would fail one of them ("user already exists")."""
    if hasattr(config, "workerinput"):
        return
    if SKIPS_FAIL:
        wait_for_a_whole_day(MIDNIGHT_MARGIN)
    if os.geteuid() != 0:
        return
    from pgserver.utils import ensure_user_exists

    from warehouse.db.embedded import PGSERVER_USER

    ensure_user_exists(PGSERVER_USER)


def pytest_collection_modifyitems(config, items):
    gone = [path for path in LONGEST_FIRST if not (config.rootpath / path).is_file()]
    if gone:  # a renamed file would quietly fall back to collection order
        raise pytest.UsageError(f"LONGEST_FIRST in tests/conftest.py names no file at {gone}")
    rank = {path: place for place, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if SKIPS_FAIL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=1, which counts as a failure: {reason}"


# The whole suite runs under least privilege (warehouse.db.roles): every test database is converted
# to three roles of this run's own (roles are global to the server; these are dropped at the end),
# and `warehouse.connect` acts as the app role there unless told otherwise.
RUN_TAG = f"ct{os.getpid()}_{uuid.uuid4().hex[:6]}"
for _role in ("owner", "app", "reader"):
    os.environ[f"CANGFLOW_{_role.upper()}_ROLE"] = f"{RUN_TAG}_{_role}"

TEST_REDIS_URL = os.environ.get("CANGFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get(
    "CANGFLOW_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True)


@contextmanager
def _database(name: str) -> Iterator[None]:
    """A database created for the block and dropped after it."""
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield
    finally:
        with _admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _migrated(url: str):
    """Convert the new database to the roles (as `cangflow db roles` does), migrate it as the
    owner; the app role's Database."""
    import warehouse
    from warehouse.db import roles, schema

    roles.convert_database(url, roles.RoleNames.from_settings())
    owner = warehouse.connect(url, pool_size=2, role="owner")
    schema.upgrade(owner)
    owner.dispose()
    return warehouse.connect(url, pool_size=4)


def _drop_roles() -> None:
    from warehouse.db import roles

    with _admin() as admin:
        for role in roles.ROLES:
            try:
                admin.execute(
                    sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(f"{RUN_TAG}_{role}"))
                )
            except psycopg.Error as error:  # still owns something in a database a test left behind
                print(f"role {RUN_TAG}_{role} kept: {error}")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"cangflow_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        _admin().close()
    except psycopg.OperationalError as error:  # a clear message beats 100 connection errors
        pytest.exit(f"PostgreSQL is not reachable at {ADMIN_URL}: {error}", returncode=3)
    base = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    user = base.get("user", "postgres")
    host = base.get("host", "127.0.0.1")
    port = base.get("port", "5432")
    try:
        with _database(name):
            yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        _drop_roles()


@pytest.fixture(scope="session")
def db(database_url):
    database = _migrated(database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def admin_db(db, database_url):
    """The test database as its superuser, not acting as any role: for tests that corrupt data
    on purpose (what no cangflow role may do) or look at the catalog."""
    import warehouse

    database = warehouse.connect(database_url, pool_size=2, role=None)
    yield database
    database.dispose()


@pytest.fixture
def admin_dsn(database_url) -> str:
    """The test database as its superuser (libpq DSN): for controls on scratch tables of their
    own, which no cangflow role may create."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def raw_dsn(database_url) -> str:
    """The same database as a plain libpq DSN logged in as the app role (the server trusts
    127.0.0.1), for tests that drive psycopg directly."""
    user = psycopg.conninfo.conninfo_to_dict(ADMIN_URL).get("user", "postgres")
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1).replace(
        f"//{user}@", f"//{RUN_TAG}_app@", 1
    )


@pytest.fixture
def one_connection(database_url):
    """A Database with a pool of one connection (and a direct lane of up to two): every call
    of a kind reuses the same one."""
    import warehouse

    database = warehouse.connect(database_url, pool_size=1)
    yield database
    database.dispose()


@pytest.fixture
def recorded_metrics():
    from warehouse.metrics import sinks as metrics

    with metrics.use(metrics.RecordingMetrics()) as sink:
        yield sink


@pytest.fixture
def world(db):
    """A fresh, uniquely named warehouse with helpers to add bins, SKUs, lots and stock."""
    from tests.builders import World

    return World.create(db)


@pytest.fixture(scope="module")
def own_database_url(database_url) -> Iterator[str]:
    """A migrated database of this test module's own, for tests of whole-database jobs
    (snapshots cover every warehouse; closing history makes months read-only for everyone)."""
    name = f"{database_url.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:6]}"
    with _database(name):
        yield f"{database_url.rsplit('/', 1)[0]}/{name}"


@pytest.fixture(scope="module")
def own_db(own_database_url):
    database = _migrated(own_database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def own_admin_db(own_database_url, own_db):
    """`own_db`'s database as its superuser (see `admin_db`)."""
    import warehouse

    database = warehouse.connect(own_database_url, pool_size=2, role=None)
    yield database
    database.dispose()


@contextmanager
def flows_pointed_at(database_url: str, home: Path, **settings: str) -> Iterator[None]:
    """The settings (and so the flows' tasks) pointed at `database_url`, at the test Redis
    under a namespace of its own and at `home`, plus any other CANGFLOW_* `settings`; the
    tasks' databases and caches are forgotten on the way in and on the way out."""
    from tasks import cache as cache_tasks
    from tasks.database import forget
    from warehouse.settings import get_settings

    def forget_all():
        cache_tasks.forget()
        forget()

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CANGFLOW_DATABASE_URL", database_url)
            patch.setenv("CANGFLOW_REDIS_URL", TEST_REDIS_URL)
            patch.setenv("CANGFLOW_REDIS_NAMESPACE", f"test-{uuid.uuid4().hex[:10]}")
            patch.setenv("CANGFLOW_HOME", str(home))
            for name, value in settings.items():
                patch.setenv(name, value)
            get_settings.cache_clear()
            forget_all()
            try:
                yield
            finally:
                forget_all()
    finally:
        get_settings.cache_clear()
        forget_all()


@pytest.fixture(scope="module")
def tasks_db(own_database_url, own_db, tmp_path_factory):
    """`own_db`, with the settings (and so the flows' tasks) pointed at it, and at the test
    Redis under a namespace of this module's own."""
    with flows_pointed_at(own_database_url, tmp_path_factory.mktemp("cangflow-home")):
        yield own_db
