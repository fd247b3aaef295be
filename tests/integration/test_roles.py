"""Least privilege (warehouse.db.roles): each role logged in on its own, what it may do and what
PostgreSQL refuses it, against an open month and a closed one; a single-role database with
stock converted by `cangflow db roles` without losing a row, and a rerun that changes nothing.

Every refusal has its control: the same statement, run by the superuser in a transaction that is
rolled back, goes through (on the open month), so a refusal is the role's and not a typo's."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text as sqlalchemy_text

import warehouse
from tests.builders import World
from tests.conftest import RUN_TAG, _database
from tests.services import cangflow_run
from warehouse import snapshots, stock
from warehouse.db import roles, schema
from warehouse.history import closing as history
from warehouse.history import partitions
from warehouse.history.calendar import today
from warehouse.history.partitions import add_months, month_start, partition_name

pytestmark = pytest.mark.integration

NAMES = roles.RoleNames(f"{RUN_TAG}_owner", f"{RUN_TAG}_app", f"{RUN_TAG}_reader")
OPEN = month_start(today())
CLOSED = add_months(OPEN, -3)
INSUFFICIENT_PRIVILEGE = "42501"
HISTORY_CLOSED = "CGH01"


def mid(month) -> datetime:
    return datetime(month.year, month.month, 15, 12, tzinfo=UTC)


def login(url: str, role: str | None) -> str:
    """A libpq DSN logged in as `role` itself (the test server trusts 127.0.0.1), or as the
    URL's superuser for None."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    if role is None:
        return dsn
    user = psycopg.conninfo.conninfo_to_dict(dsn)["user"]
    return dsn.replace(f"//{user}@", f"//{NAMES.of(role)}@", 1)


@pytest.fixture(scope="module")
def closed_world(own_database_url, own_db):
    """Stock received in an open month and in a month three back, closed by the owner."""
    owner = warehouse.connect(own_database_url, role="owner", pool_size=1)
    with owner.session() as s:
        for table in partitions.PARTITIONED_TABLES:
            partitions.ensure_month(s, table, CLOSED)
    world = World.create(own_db, bins=1)
    sku = world.add_sku()
    for occurred_at in (mid(CLOSED), None):  # three months back, and now
        with own_db.session() as s:
            stock.receive(
                s,
                warehouse=world.warehouse,
                sku=sku,
                qty=5,
                location=world.locations[0],
                occurred_at=occurred_at,
            )
    with own_db.session() as s:
        snapshots.build_checked_day(s, history.last_day(CLOSED))
    with owner.session() as s:
        assert history.close_month(s, CLOSED), "the month closes"
    owner.dispose()
    return {"url": own_database_url, "world": world, "sku": sku}


def attempt(dsn: str, statement: str, parameters=None) -> str | None:
    """Run `statement` in a transaction that is rolled back; the SQLSTATE it failed with, or None."""
    with psycopg.connect(dsn) as connection:
        try:
            connection.execute(statement, parameters)
            return None
        except psycopg.Error as error:
            return error.sqlstate
        finally:
            connection.rollback()


REFUSED_TO_APP = {
    "update-ledger-parent": "UPDATE stock_movement SET qty = qty + 1 WHERE occurred_at >= %(lower)s AND occurred_at < %(upper)s",
    "delete-ledger-parent": "DELETE FROM stock_movement WHERE occurred_at >= %(lower)s AND occurred_at < %(upper)s",
    "update-ledger-partition": "UPDATE {movements} SET qty = qty + 1",
    "delete-ledger-partition": "DELETE FROM {movements}",
    "insert-ledger-partition": "INSERT INTO {movements} SELECT * FROM {movements} LIMIT 0",
    "truncate-ledger-partition": "TRUNCATE {movements}",
    "truncate-ledger": "TRUNCATE stock_movement",
    "disable-trigger": "ALTER TABLE {movements} DISABLE TRIGGER USER",
    "drop-partition": "DROP TABLE {movements}",
    "detach-partition": "ALTER TABLE stock_movement DETACH PARTITION {movements}",
    "update-snapshot-parent": "UPDATE stock_snapshot SET on_hand = on_hand + 1 WHERE snapshot_date >= %(lower)s",
    "delete-snapshot-partition": "DELETE FROM {snapshots}",
    "create-in-public": "CREATE TABLE public.app_was_here (id int)",
    "drop-schema": "DROP SCHEMA archive CASCADE",
}


def _statement(template: str, month) -> tuple[str, dict]:
    text = template.format(
        movements=partition_name("stock_movement", month),
        snapshots=partition_name("stock_snapshot", month),
    )
    lower, upper = partitions.bounds("stock_movement", month)
    return text, {"lower": lower, "upper": upper}


@pytest.mark.parametrize("month", [OPEN, CLOSED], ids=["open-month", "closed-month"])
@pytest.mark.parametrize("name", sorted(REFUSED_TO_APP))
def test_the_app_role_cannot_change_or_remove_history_and_the_superuser_control_can(
    closed_world, name, month
):
    statement, parameters = _statement(REFUSED_TO_APP[name], month)
    assert (
        attempt(login(closed_world["url"], "app"), statement, parameters) == INSUFFICIENT_PRIVILEGE
    )
    control = attempt(login(closed_world["url"], None), statement, parameters)
    # The control goes through, except where the closed month's own triggers refuse everybody
    # (a TRUNCATE of the whole ledger reaches the closed month too).
    closed_too = month == CLOSED or name == "truncate-ledger"
    assert control in ((None, HISTORY_CLOSED) if closed_too else (None,)), control


def test_through_the_parent_a_closed_month_refuses_the_app_roles_snapshot_delete_by_trigger(
    closed_world,
):
    """The app may rebuild snapshots of open days (DELETE on the parent); a closed month's
    trigger, which only an owner could disable, refuses it there."""
    app = login(closed_world["url"], "app")
    delete = "DELETE FROM stock_snapshot WHERE snapshot_date = %(day)s"
    assert attempt(app, delete, {"day": history.last_day(CLOSED)}) == HISTORY_CLOSED
    assert attempt(app, delete, {"day": history.last_day(OPEN)}) is None


def test_the_app_role_moves_stock_builds_snapshots_and_stages_feeds(closed_world):
    app = warehouse.connect(login(closed_world["url"], "app"), role="app", pool_size=1)
    try:
        assert app.acting_role() == NAMES.app
        world, sku = closed_world["world"], closed_world["sku"]
        with app.session() as s:
            stock.receive(s, warehouse=world.warehouse, sku=sku, qty=3, location=world.locations[0])
            stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2)
        with app.session() as s:
            assert stock.on_hand(s, warehouse=world.warehouse, sku=sku) == 5 + 5 + 1
        staging = f"{roles.STAGING_SCHEMA}.erp_feed_0_{uuid.uuid4().hex[:8]}"
        assert (
            attempt(login(closed_world["url"], "app"), f"CREATE UNLOGGED TABLE {staging} (x int)")
            is None
        )
    finally:
        app.dispose()


def test_the_app_role_owns_nothing_but_its_scratch_tables(closed_world):
    with psycopg.connect(login(closed_world["url"], None)) as admin:
        owned = admin.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %(app)s) AND n.nspname <> %(staging)s "
            "UNION ALL SELECT nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = %(app)s) "
            "UNION ALL SELECT proname FROM pg_proc WHERE proowner = (SELECT oid FROM pg_roles WHERE rolname = %(app)s)",
            {"app": NAMES.app, "staging": roles.STAGING_SCHEMA},
        ).fetchall()
        attributes = admin.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = %s",
            (NAMES.app,),
        ).fetchone()
    assert owned == []
    assert attributes == (False, False, False, False)


READER_REFUSED = {
    "insert-ledger": "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, "
    "location_id, sku_id, qty) SELECT now(), 'adjustment', 0, id, warehouse_id, location_id, sku_id, 1 "
    "FROM stock_balance LIMIT 1",
    "update-balance": "UPDATE stock_balance SET on_hand = on_hand",
    "delete-outbox": "DELETE FROM outbox_message",
    "insert-catalog": "INSERT INTO sku (code) VALUES ('reader-was-here')",
    "create-staging": f"CREATE TABLE {roles.STAGING_SCHEMA}.erp_feed_0_deadbeef (x int)",
    "lock-balance": "SELECT 1 FROM stock_balance LIMIT 1 FOR UPDATE",
}


@pytest.mark.parametrize("name", sorted(READER_REFUSED))
def test_the_reader_may_only_read(closed_world, name):
    assert (
        attempt(login(closed_world["url"], "reader"), READER_REFUSED[name])
        == INSUFFICIENT_PRIVILEGE
    )
    assert attempt(login(closed_world["url"], None), READER_REFUSED[name]) is None


def test_the_reader_reads_stock_as_of_a_day_and_the_history(closed_world):
    reader = warehouse.connect(login(closed_world["url"], "reader"), role="reader", pool_size=1)
    try:
        world, sku = closed_world["world"], closed_world["sku"]
        with reader.session() as s:
            assert (
                stock.on_hand(
                    s, warehouse=world.warehouse, sku=sku, as_of=mid(CLOSED) + timedelta(days=1)
                )
                == 5
            )
            assert CLOSED in history.closed_months(s)
        with pytest.raises(Exception) as refused, reader.session() as s:
            stock.receive(s, warehouse=world.warehouse, sku=sku, qty=1, location=world.locations[0])
        assert "permission denied" in str(refused.value)
    finally:
        reader.dispose()


def test_the_owner_makes_partitions_and_may_alter_their_triggers(closed_world):
    owner = login(closed_world["url"], "owner")
    later = add_months(OPEN, 30)
    lower, upper = partitions.bounds("stock_movement", later)
    assert (
        attempt(
            owner,
            f"CREATE TABLE {partition_name('stock_movement', later)} PARTITION OF stock_movement "
            f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')",
        )
        is None
    )
    assert (
        attempt(
            owner, f"ALTER TABLE {partition_name('stock_movement', CLOSED)} DISABLE TRIGGER USER"
        )
        is None
    )


# -- converting a single-role database -------------------------------------------------------------


def fingerprint(dsn: str) -> list:
    """Owners and privileges of every object of record, the default privileges, the roles'
    memberships and attributes: what a rerun of `db roles` must leave as it was."""
    with psycopg.connect(dsn) as connection:
        return connection.execute(
            """
            SELECT 'rel', n.nspname || '.' || c.relname, pg_get_userbyid(c.relowner), c.relacl::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('public', 'archive', 'cangflow_staging') AND c.relkind IN ('r', 'p', 'S', 'v')
            UNION ALL SELECT 'schema', nspname, pg_get_userbyid(nspowner), nspacl::text FROM pg_namespace
            WHERE nspname IN ('public', 'archive', 'cangflow_staging')
            UNION ALL SELECT 'function', proname, pg_get_userbyid(proowner), proacl::text FROM pg_proc
            WHERE pronamespace = 'public'::regnamespace
            UNION ALL SELECT 'default', defaclnamespace::regnamespace::text || ' ' || defaclobjtype::text,
                             pg_get_userbyid(defaclrole), defaclacl::text FROM pg_default_acl
            UNION ALL SELECT 'database', datname, pg_get_userbyid(datdba), datacl::text FROM pg_database
            WHERE datname = current_database()
            UNION ALL SELECT 'member', r.rolname, m.rolname, NULL FROM pg_auth_members a
            JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member WHERE m.rolname LIKE %s
            ORDER BY 1, 2, 3, 4""",
            (f"{RUN_TAG}%",),
        ).fetchall()


def books(dsn: str) -> tuple:
    with psycopg.connect(dsn) as connection:
        return connection.execute(
            "SELECT (SELECT count(*) FROM stock_movement), (SELECT sum(qty) FROM stock_movement), "
            "(SELECT count(*) FROM stock_balance), (SELECT sum(on_hand) FROM stock_balance), "
            "(SELECT count(*) FROM outbox_message), (SELECT count(*) FROM sku)"
        ).fetchone()


def cangflow(url: str, *arguments: str) -> subprocess.CompletedProcess:
    return cangflow_run({**os.environ, "CANGFLOW_DATABASE_URL": url}, *arguments)


def test_db_roles_converts_a_single_role_database_with_stock_and_a_rerun_changes_nothing(
    database_url,
):
    name = f"{database_url.rsplit('/', 1)[1]}_single"
    with _database(name):
        url = f"{database_url.rsplit('/', 1)[0]}/{name}"
        single = warehouse.connect(
            url, role="app", pool_size=1
        )  # not converted: acts as its own user
        try:
            assert single.acting_role() == "postgres"
            schema.upgrade(single)
            world = World.create(single, bins=2)
            sku = world.stocked_sku(40)
            with single.session() as s:
                stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=15)
        finally:
            single.dispose()
        dsn = login(url, None)
        leftover = f"{roles.STAGING_SCHEMA}.erp_feed_999_deadbeef"  # a killed run's, from before
        with psycopg.connect(dsn) as admin:
            admin.execute(f"CREATE TABLE {leftover} (x int)")
        before = books(dsn)

        converted = cangflow(url, "db", "roles")
        assert converted.returncode == 0, converted.stderr
        assert "ownership moved: 0 objects" not in converted.stdout
        assert books(dsn) == before
        first = fingerprint(dsn)
        owners = {row[1]: row[2] for row in first if row[0] in ("rel", "function")}
        assert owners.pop(leftover) == NAMES.app  # its runs sweep it
        assert set(owners.values()) == {NAMES.owner}

        again = cangflow(url, "db", "roles")
        assert again.returncode == 0, again.stderr
        assert "roles created: none (they exist)" in again.stdout
        assert "ownership moved: 0 objects" in again.stdout
        assert fingerprint(dsn) == first
        assert books(dsn) == before

        app = warehouse.connect(
            url, role="app", pool_size=1
        )  # the same URL now acts as the app role
        try:
            assert app.acting_role() == NAMES.app
            with app.session() as s:
                assert stock.on_hand(s, warehouse=world.warehouse, sku=sku) == 25
                stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=5)
            assert (
                attempt(login(url, "app"), "DELETE FROM stock_movement") == INSUFFICIENT_PRIVILEGE
            )
        finally:
            app.dispose()
        upgraded = cangflow(
            url, "db", "upgrade"
        )  # as the owner, and grants what new migrations made
        assert upgraded.returncode == 0, upgraded.stderr
        assert fingerprint(dsn) == first


def test_the_quality_suites_read_as_the_reader_on_a_shared_url(closed_world):
    """GX makes its own connections (warehouse.quality.suites): they act as the reader too."""
    from sqlalchemy import text

    from warehouse.quality import suites as quality

    reader = warehouse.connect(
        closed_world["url"], role="reader", pool_size=1
    )  # the superuser's URL
    try:
        source = quality.datasource(quality.quiet_context(), reader)
        try:
            with source.get_engine().connect() as connection:
                assert connection.execute(text("SELECT current_user")).scalar_one() == NAMES.reader
        finally:
            quality.close_engines(source)
    finally:
        reader.dispose()


def test_a_role_without_a_url_never_falls_back_to_an_embedded_server_when_another_is_configured(
    tmp_path,
):
    from warehouse.db.engine import resolve_url
    from warehouse.errors import InvalidArgument
    from warehouse.settings import Settings

    only_app = Settings(
        _env_file=None,
        database_url=None,
        app_database_url="postgresql+psycopg://app@db/wms",
        home=tmp_path,
    )
    assert resolve_url(settings=only_app, role="app") == "postgresql+psycopg://app@db/wms"
    with pytest.raises(
        InvalidArgument,
        match=r"CANGFLOW_OWNER_DATABASE_URL or CANGFLOW_DATABASE_URL.*CANGFLOW_APP_DATABASE_URL",
    ):
        resolve_url(settings=only_app, role="owner")
    shared = Settings(
        _env_file=None, database_url="postgresql+psycopg://admin@db/wms", home=tmp_path
    )
    assert resolve_url(settings=shared, role="reader") == "postgresql+psycopg://admin@db/wms"
    assert not (tmp_path / "pg").exists()  # no embedded server was started


def test_db_roles_by_an_admin_who_may_create_roles_but_is_no_superuser(database_url, monkeypatch):
    """A managed PostgreSQL gives its admin CREATEROLE and CREATEDB, never SUPERUSER. That admin
    makes the database, migrates it as a single role, converts it with `cangflow db roles`, and
    then keeps its one URL for everything: each role's sessions must act as that role, the
    reader's included (acting as the admin itself, the reader could write anything)."""
    from warehouse.settings import get_settings

    tag = f"{RUN_TAG}_m"
    admin_role = f"{tag}_admin"
    names = roles.RoleNames(f"{tag}_owner", f"{tag}_app", f"{tag}_reader")
    for role in roles.ROLES:
        monkeypatch.setenv(f"CANGFLOW_{role.upper()}_ROLE", names.of(role))
    get_settings.cache_clear()
    server, database = database_url.rsplit("/", 1)
    name = f"{database}_managed"
    superuser = login(database_url, None).rsplit("/", 1)[0] + "/postgres"
    user = psycopg.conninfo.conninfo_to_dict(superuser)["user"]
    url = f"{server.replace(f'//{user}@', f'//{admin_role}@', 1)}/{name}"
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(superuser, autocommit=True) as root:
        root.execute(f'CREATE ROLE "{admin_role}" LOGIN CREATEROLE CREATEDB NOSUPERUSER')
    try:
        with psycopg.connect(dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')  # the admin's own, as on a managed server
        upgraded = cangflow(url, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        single = warehouse.connect(url, role="app", pool_size=1)
        try:
            assert single.acting_role() == admin_role  # not converted yet: its own user
            world = World.create(single, bins=1)
            sku = world.stocked_sku(40)
        finally:
            single.dispose()

        converted = cangflow(url, "db", "roles")
        assert converted.returncode == 0, converted.stderr
        assert f"roles created: {names.owner}, {names.app}, {names.reader}" in converted.stdout
        first = fingerprint(dsn)
        owners = {row[2] for row in first if row[0] in ("rel", "function")}
        assert owners == {names.owner}, first
        again = cangflow(url, "db", "roles")
        assert again.returncode == 0, again.stderr
        assert "ownership moved: 0 objects" in again.stdout
        assert fingerprint(dsn) == first

        for role in roles.ROLES:  # the admin's one URL, acting as each role in turn
            acting = warehouse.connect(url, role=role, pool_size=1)
            try:
                assert acting.acting_role() == names.of(role)
            finally:
                acting.dispose()
        app = warehouse.connect(url, role="app", pool_size=1)
        reader = warehouse.connect(url, role="reader", pool_size=1)
        try:
            with app.session() as s:
                stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=15)
            with reader.session() as s:
                assert stock.on_hand(s, warehouse=world.warehouse, sku=sku) == 25
                with pytest.raises(Exception, match="permission denied"):
                    s.execute(sqlalchemy_text("DELETE FROM outbox_message"))
        finally:
            app.dispose()
            reader.dispose()
        again = cangflow(url, "db", "upgrade")  # as the owner, through the admin's membership
        assert again.returncode == 0, again.stderr
        assert fingerprint(dsn) == first
    finally:
        with psycopg.connect(superuser, autocommit=True) as root:
            root.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for role in (*(names.of(role) for role in roles.ROLES), admin_role):
                root.execute(f'DROP ROLE IF EXISTS "{role}"')
        get_settings.cache_clear()
