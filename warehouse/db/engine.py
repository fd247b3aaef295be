"""The one place that builds the engine: `connect()` and `Database.session()`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from warehouse.db import roles, slow_queries
from warehouse.db.direct_lane import DirectLane
from warehouse.db.id_cache import IdCache
from warehouse.db.roles import Role
from warehouse.errors import InvalidArgument
from warehouse.history import calendar
from warehouse.settings import Settings, get_settings

logger = logging.getLogger(__name__)
# Connections older than this are replaced (a server-side idle timeout or a failover otherwise
# leaves dead ones behind); a caller waits this long for a free one, then fails.
POOL_RECYCLE_S = 1800
POOL_TIMEOUT_S = 30.0
# session.info key: (warehouse, sku) pairs whose stock the transaction changed.
TOUCHED_STOCK = "touched_stock"


def postgres_url(url: str) -> URL:
    """`url` as a postgresql+psycopg URL; ValueError (never showing the password) for a URL of
    another kind, or for something that is not a URL at all."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("is not a database URL (postgresql://user@host/database)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise ValueError(f"cangflow needs a postgresql+psycopg:// URL, got {parsed.drivername}://")
    return parsed


class Database:
    """An engine plus a session factory. Create it with `warehouse.connect()`."""

    def __init__(
        self, url: str, *, pool_size: int = 5, echo: bool = False, role: Role | None = None
    ):
        parsed = postgres_url(url)
        self.url = parsed
        self.engine: Engine = create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No ping per checkout (a round trip on every transaction); connections are
            # recycled instead, and a dead one fails its transaction, which callers retry.
            pool_recycle=POOL_RECYCLE_S,
            pool_timeout=POOL_TIMEOUT_S,
            echo=echo,
            # Server-side prepared statements after 2 runs: the stock statements are long CTEs
            # whose planning would otherwise cost more than their execution.
            connect_args={"prepare_threshold": 2, "application_name": "cangflow"},
        )
        event.listen(self.engine, "connect", set_session_defaults)
        # The role this engine's work needs (warehouse.db.roles): taken with SET ROLE when the URL
        # logs in as a user who may act as it, on a database `cangflow db roles` converted.
        self.role = role
        self._role_names = roles.RoleNames.from_settings()
        event.listen(
            self.engine, "connect", lambda connection, _record: self.act_as_role(connection)
        )
        slow_queries.install(self.engine, get_settings().slow_query_s)
        self.ids = IdCache()
        self._sessions = sessionmaker(
            self.engine, expire_on_commit=False, info={"id_cache": self.ids}
        )
        event.listen(self._sessions, "after_commit", _keep_resolved_ids)
        event.listen(self._sessions, "after_rollback", _drop_resolved_ids)
        self._stock_hooks: list[Callable[[set[tuple[str, str]]], None]] = []
        event.listen(self._sessions, "after_commit", self._after_stock_commit)
        event.listen(self._sessions, "after_rollback", _drop_touched_stock)
        # The CANGFLOW_BUSINESS_TIMEZONE last found to agree with the database's zone.
        self._zone_checked: str | None = None
        self._zone_lock = threading.Lock()
        # The direct path's autocommit connections, apart from the Sessions' pool and bounded
        # as it is (so a process may hold up to twice the pool's connections in all).
        self._direct_lane = DirectLane(
            self.engine,
            limit=2 * pool_size,
            keep=pool_size,
            recycle=POOL_RECYCLE_S,
            timeout=POOL_TIMEOUT_S,
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit when the block ends, roll back when it raises. The first
        one (and the first after the setting changed) checks the business time zone first."""
        self.ensure_business_zone()
        with self._sessions() as session, session.begin():
            yield session

    def ensure_business_zone(self) -> None:
        """`check_business_zone` unless this process checked the zone in force already."""
        if self._zone_checked != calendar.zone_name():
            self.check_business_zone()

    def direct_connection(self) -> AbstractContextManager[psycopg.Connection]:
        """`with db.direct_connection() as connection:` a psycopg connection in autocommit, held
        outside any Session, for work that is one statement and its commit (the direct stock
        path): one of the direct lane's (`warehouse.db.direct_lane`), set up like every
        connection of the engine (role, time zone, plan cache)."""
        self.ensure_business_zone()
        return self._direct_lane.connection()

    def check_business_zone(self, *, force: bool = False) -> str | None:
        """Adopt CANGFLOW_BUSINESS_TIMEZONE on a database without history, or raise
        BusinessZoneChanged when it differs from the zone of the history there is (see
        `warehouse.history.zone`), in a transaction of its own; the zone in force, None on a
        database not migrated to revision 0009 yet (`schema.upgrade` checks again after it)."""
        from warehouse.history import zone as business_zone

        with self._zone_lock:
            configured = calendar.zone_name()
            if not force and self._zone_checked == configured:
                return configured
            with self._sessions() as session, session.begin():
                stored = business_zone.ensure(session)
            self._zone_checked = configured
            return stored

    def on_stock_committed(
        self, hook: Callable[[set[tuple[str, str]]], None]
    ) -> Callable[[], None]:
        """Call `hook` with the (warehouse, sku) pairs a committed transaction changed (the
        cache's best-effort invalidation); returns a function that removes the hook."""
        self._stock_hooks.append(hook)
        return lambda: self._stock_hooks.remove(hook) if hook in self._stock_hooks else None

    def _after_stock_commit(self, session: Session) -> None:
        touched = session.info.pop(TOUCHED_STOCK, None)
        if touched:
            self.stock_committed(touched)

    def stock_committed(self, touched: set[tuple[str, str]]) -> None:
        """Tell the `on_stock_committed` hooks which (warehouse, sku) pairs a commit changed."""
        for hook in list(self._stock_hooks):
            try:
                hook(touched)
            except Exception:  # best effort by design: the outbox relay is the guaranteed path
                logger.warning("a stock commit hook failed", exc_info=True)

    def bound_statements(self, timeout_s: float) -> None:
        """Every new connection of this engine gets `statement_timeout` (0: none): PostgreSQL
        cancels a statement stuck on a lock or running away (the flows' engine, not a WMS's)."""
        timeout_ms = int(timeout_s * 1000)

        def bound(dbapi_connection, _record) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = {timeout_ms}")
            dbapi_connection.commit()

        event.listen(self.engine, "connect", bound)

    def act_as_role(self, dbapi_connection) -> None:
        """Make a new DBAPI connection act as this Database's role (`roles.become`); for the
        engine's own connections and those made outside it (the quality suites' GX engine)."""
        if self.role is None:
            return
        roles.become(dbapi_connection, self._role_names, self.role)
        dbapi_connection.commit()  # a SET inside a transaction rolled back would be undone

    def acting_role(self) -> str:
        """The database role this engine's sessions act as (`current_user`)."""
        with self.engine.connect() as connection:
            return connection.exec_driver_sql("SELECT current_user").scalar_one()

    def dispose(self) -> None:
        self._direct_lane.close()
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)})"


def _keep_resolved_ids(session: Session) -> None:
    pending = session.info.pop("pending_ids", None)
    if pending:
        session.info["id_cache"].update(pending)


def _drop_resolved_ids(session: Session) -> None:
    session.info.pop("pending_ids", None)


def _drop_touched_stock(session: Session) -> None:
    session.info.pop(TOUCHED_STOCK, None)


def touch_stock(session: Session, pairs) -> None:
    """Record (warehouse, sku) pairs this transaction changed, for the commit hooks."""
    session.info.setdefault(TOUCHED_STOCK, set()).update(pairs)


def set_session_defaults(dbapi_connection, _record=None) -> None:
    """The session settings every connection of the engine gets (a "connect" event); also for a
    connection made outside it that must behave the same (bench.deduction's Python floor)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        # Dates and timestamps in ISO text, as `warehouse.db.prepared` reads them.
        cursor.execute("SET DateStyle = 'ISO, MDY'")
        # Statements we prepare (psycopg prepares a statement on its second run) keep one
        # generic plan. Left to choose, the server flipped the as-of read to re-planning every
        # partition on each call once the ledger was large (~2 ms a call at 10M movements);
        # their partition bounds are pruned at executor start either way.
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    dbapi_connection.commit()


_DATABASE_SETTINGS = (
    "database_url",
    "owner_database_url",
    "app_database_url",
    "reader_database_url",
    "database_secret_block",
    "owner_database_secret_block",
    "app_database_secret_block",
    "reader_database_secret_block",
)


def resolve_url(
    url: str | None = None, settings: Settings | None = None, *, role: Role | None = "app"
) -> str:
    """`url`, else the role's CANGFLOW_<ROLE>_DATABASE_URL, else CANGFLOW_DATABASE_URL, else the
    embedded PostgreSQL (logged in as the role)."""
    settings = settings or get_settings()
    if url:
        return url
    own = getattr(settings, f"{role}_database_url") if role else None
    configured_url = own or settings.database_url
    if configured_url:
        return configured_url
    configured = [name for name in _DATABASE_SETTINGS if getattr(settings, name)]
    # A server is configured, only not for this role: never fall back to an embedded one.
    if configured:
        wanted = f"CANGFLOW_{role.upper()}_DATABASE_URL or " if role else ""
        raise InvalidArgument(
            f"this step needs {wanted}CANGFLOW_DATABASE_URL (or their Secret blocks); "
            f"set: {', '.join('CANGFLOW_' + name.upper() for name in configured)}"
        )
    from warehouse.db.embedded import postgres_url

    return postgres_url(settings.home, role=role)


def connect(url: str | None = None, *, pool_size: int = 5, role: Role | None = "app") -> Database:
    """A Database for `url`, else the role's URL, else CANGFLOW_DATABASE_URL, else the embedded
    PostgreSQL; acting as `role` (`warehouse.db.roles`: stock work needs the app role; None: as
    the URL's user, for administration)."""
    return Database(resolve_url(url, role=role), pool_size=pool_size, role=role)
