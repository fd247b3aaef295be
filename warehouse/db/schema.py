"""Bring a database to the current schema with Alembic, then premake ledger partitions."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from warehouse.db import raw_sql, roles
from warehouse.db.engine import Database
from warehouse.errors import SchemaNotCurrent
from warehouse.history import partitions

MIGRATIONS = Path(__file__).parent / "migrations"
# Concurrent `db upgrade` runs (two workers starting at once) take turns on this lock.
_UPGRADE_LOCK = 0x63616E67  # "cang"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # None only for a migrations folder without revisions; ours has them
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_current(db: Database) -> None:
    """Refuse to work on a database the migrations have not brought to this code's schema."""
    current, head = current_revision(db), head_revision()
    if current != head:
        found = "has no cangflow schema" if current is None else f"is at revision {current}"
        raise SchemaNotCurrent(
            f"the database {found}; this code needs {head}: run `cangflow db upgrade`"
        )


def upgrade(db: Database, revision: str = "head", *, premake_months: int = 3) -> str | None:
    """Run the migrations up to `revision`, settle the business time zone (adopted by a database
    without history, refused when it differs from that of the history there is), and make sure
    this month's partitions exist."""
    config = alembic_config()
    with db.engine.connect() as connection:
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({_UPGRADE_LOCK})")
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_UPGRADE_LOCK})")
            connection.commit()
    db.check_business_zone(force=True)  # before partitions are made with its month bounds
    if revision == "head":
        with db.session() as session:
            partitions.premake(session, months_back=1, months_ahead=premake_months)
    grant_roles(db)
    return current_revision(db)


def grant_roles(db: Database) -> bool:
    """On a database with the three roles, give the app and the reader their privileges on
    what the migrations just made (`warehouse.db.roles.grant`); whether it did."""
    with db.engine.connect() as connection:
        raw = raw_sql.driver_of(connection)
        done = roles.grant_if_converted(raw, roles.RoleNames.from_settings())
        raw.commit()
    return done
