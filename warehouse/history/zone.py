"""The business time zone as the database keeps it (`business_calendar`, migration 0009).

Days and months are those of CANGFLOW_BUSINESS_TIMEZONE (`warehouse.history.calendar`), and the
database's history is cut along them: snapshot days, the bounds of the ledger partitions, closed
and retired months. So the zone is fixed once there is history. `ensure` compares the setting
with the stored zone: equal, nothing happens; different on a database without history (no
movement, no snapshot day, no month closed or retired), the database adopts the setting and its
ledger partitions, all empty, are made again with the new zone's month bounds; different on a
database with history, `BusinessZoneChanged` says which zones and what to do.

`Database.session()` runs it once per Database and zone (a comparison of two strings per
session after that), and `schema.upgrade` runs it after the migrations, before it makes
partitions: every entry point goes through one or the other.
"""

from __future__ import annotations

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.errors import BusinessZoneChanged, InvalidArgument
from warehouse.history import calendar, partitions

_TABLE = text("SELECT to_regclass('business_calendar') IS NOT NULL")
_STORED = text("SELECT zone FROM business_calendar")
_STORED_LOCKED = text("SELECT zone FROM business_calendar FOR UPDATE")
_HISTORY = text(
    "SELECT EXISTS (SELECT 1 FROM stock_movement) OR EXISTS (SELECT 1 FROM snapshot_day) "
    "OR EXISTS (SELECT 1 FROM history_month)"
)
_ADOPT = text("UPDATE business_calendar SET zone = :zone, changed_at = now()")
# Adopting remakes partitions: the owner's (or a superuser's) DDL, never the app role's.
_MAY_ADOPT = text(
    "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = 'stock_movement'::regclass"
)
_KNOWN = text("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = :zone)")


def stored_zone(session: Session) -> str | None:
    """The zone the database's history is in; None before migration 0009."""
    if not session.execute(_TABLE).scalar():
        return None
    return session.execute(_STORED).scalar_one()


def has_history(session: Session) -> bool:
    return bool(session.execute(_HISTORY).scalar())


def ensure(session: Session) -> str | None:
    """Adopt CANGFLOW_BUSINESS_TIMEZONE on a database without history, or refuse a setting that
    differs from the zone of the history there is; the zone in force (None before 0009)."""
    configured = calendar.zone_name()
    calendar.zone()  # an unknown name is refused here, before the database is asked
    stored = stored_zone(session)
    if stored is None or stored == configured:
        return stored
    if not session.execute(_KNOWN, {"zone": configured}).scalar():
        raise InvalidArgument(
            f"CANGFLOW_BUSINESS_TIMEZONE={configured!r} is not a time zone this PostgreSQL "
            "server knows (pg_timezone_names); its days could not be computed in SQL"
        )
    # History, once there, stays: refusing needs no lock (and no privilege beyond reading).
    if has_history(session):
        raise BusinessZoneChanged(stored=stored, configured=configured)
    if not session.execute(_MAY_ADOPT).scalar():
        raise InvalidArgument(
            f"CANGFLOW_BUSINESS_TIMEZONE={configured!r} differs from this database's {stored!r}; it has no history "
            "yet and may adopt the new zone, which remakes its ledger partitions: only its owner role may, so run "
            "`cangflow db upgrade`"
        )
    # Writers wait until the zone is settled: nothing can be recorded between the look for
    # history and the new partitions.
    partitions.rollover_lock(session)
    session.execute(
        text("LOCK TABLE stock_movement, snapshot_day, history_month IN ACCESS EXCLUSIVE MODE")
    )
    stored = session.execute(_STORED_LOCKED).scalar_one()
    if stored == configured:  # adopted by another process meanwhile
        return stored
    if has_history(session):
        raise BusinessZoneChanged(stored=stored, configured=configured)
    session.execute(_ADOPT, {"zone": configured})
    _remake_ledger_partitions(session)
    return configured


def _remake_ledger_partitions(session: Session) -> None:
    """The ledger's monthly partitions again, with the bounds of the (new) business zone. They
    are empty: the caller found no movement under an exclusive lock."""
    months = [
        (p.name, p.month)
        for p in partitions.attached(session, "stock_movement")
        if p.month is not None
    ]
    for name, _ in months:
        partitions.execute_ddl(session, sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    for _, month in months:
        partitions.ensure_month(session, "stock_movement", month)
