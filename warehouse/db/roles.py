"""Three database roles, so the ledger is append-only by privilege as well as by trigger.

- the owner owns every table, sequence, function and schema of cangflow: it runs the migrations
  and the DDL of partitions, closing and retention;
- the app role moves stock and runs the flows' data steps: SELECT everywhere, INSERT on the
  ledger, and only the INSERT/UPDATE/DELETE each other table's statements need (`APP_WRITES`).
  It owns nothing in the schemas of record, so it can neither TRUNCATE, ALTER (a trigger
  included) nor DROP anything there; its only DDL is scratch tables in `cangflow_staging` (the
  reconciliation's feed is COPYed into one per attempt);
- the reader may SELECT and nothing else (reports, the quality suites, reads as of a day).

Privileges are checked on the partitioned table a statement names, so the DML grants sit on the
parents; partitions get SELECT only (default privileges make new months follow), and a closed
month's rows stay refused through the parent by the history triggers, which only an owner could
disable. `convert` (the `cangflow db roles` command) is idempotent and converts a single-role
database in place: ownership moves, grants are set, no row is touched.

A connection opened as another user who may become the command's role (a superuser, or a member:
a single CANGFLOW_DATABASE_URL) runs `SET ROLE` to it once the roles exist (`become`), so even a
one-URL install works under least privilege after `cangflow db roles`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

logger = logging.getLogger(__name__)

Role = Literal["owner", "app", "reader"]
_CONVERT_LOCK = 0x726F6C65  # "role"
ROLES: tuple[Role, ...] = ("owner", "app", "reader")
# Schemas of record, whose every table the owner owns.
RECORD_SCHEMAS = ("public", "archive")
# Scratch tables of the app role (reconciliation staging); dropped by their run.
STAGING_SCHEMA = "cangflow_staging"

# What the app role may write, table by table, beyond SELECT on everything. Absent: read-only.
# The ledger takes INSERT only; snapshots of a day are rebuilt (DELETE + INSERT) while its month
# is open, and the history triggers refuse both once it is closed.
APP_WRITES: dict[str, tuple[str, ...]] = {
    "warehouse": ("INSERT",),
    "location": ("INSERT",),
    "sku": ("INSERT",),
    "lot": ("INSERT",),
    "stock_balance": ("INSERT", "UPDATE"),
    "stock_movement": ("INSERT",),
    "idempotency_key": ("INSERT", "UPDATE", "DELETE"),
    "outbox_message": ("INSERT", "UPDATE", "DELETE"),
    "consumed_message": ("INSERT", "DELETE"),
    "stock_snapshot": ("INSERT", "DELETE"),
    "snapshot_day": ("INSERT", "UPDATE"),
    "snapshot_dirty": ("INSERT", "UPDATE", "DELETE"),
    "books_check": ("INSERT",),
    "reconciliation_run": ("INSERT", "UPDATE"),
    "reconciliation_difference": ("INSERT", "UPDATE", "DELETE"),
    "reconciliation_tolerance": ("INSERT", "UPDATE"),
    "adjustment_order": ("INSERT", "UPDATE"),
    "adjustment_order_line": ("INSERT", "UPDATE"),
}


@dataclass(frozen=True)
class RoleNames:
    owner: str
    app: str
    reader: str

    def of(self, role: Role) -> str:
        return getattr(self, role)

    @classmethod
    def from_settings(cls) -> RoleNames:
        from warehouse.settings import get_settings

        settings = get_settings()
        return cls(settings.owner_role, settings.app_role, settings.reader_role)


@dataclass(frozen=True)
class Conversion:
    created: list[str]  # roles made by this run
    owned: int  # objects whose owner changed
    ownership_before: dict[str, int]  # who owned them, and how many

    def lines(self) -> list[str]:
        made = ", ".join(self.created) or "none (they exist)"
        before = ", ".join(
            f"{count} of {name}" for name, count in sorted(self.ownership_before.items())
        )
        return [
            f"roles created: {made}",
            f"ownership moved: {self.owned} objects" + (f" ({before})" if before else ""),
        ]


def convert_database(
    url: str,
    names: RoleNames,
    passwords: dict[Role, str | None] | None = None,
    *,
    unless_converted: bool = False,
) -> Conversion | None:
    """`convert` the database of `url` (an admin's: `cangflow db roles`, the embedded server's
    first start, a test database) in one transaction; with `unless_converted`, nothing (None)
    when it already is."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as admin:
        if unless_converted and converted(admin, names):
            return None
        return convert(admin, names, passwords)


def convert(
    connection: psycopg.Connection,
    names: RoleNames,
    passwords: dict[Role, str | None] | None = None,
) -> Conversion:
    """Make the roles (or set their passwords), give the owner everything, grant the others
    their share; in the caller's transaction. The caller must be able to create roles and
    to act as the present owner (a superuser, or a CREATEROLE member of it)."""
    passwords = passwords or {}
    # Two first starts at once take turns.
    connection.execute("SELECT pg_advisory_xact_lock(%s)", (_CONVERT_LOCK,))
    created = [
        names.of(role)
        for role in ROLES
        if _ensure_role(connection, names.of(role), passwords.get(role))
    ]
    superuser = _one_row(
        connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    )[0]
    if not superuser:
        # ALTER ... OWNER TO and FOR ROLE need the owner's and the app's membership; and an
        # admin who keeps one URL for everything acts as each role by SET ROLE (`become`), the
        # reader included (else its reads would run as the admin, who may write anything).
        connection.execute(
            sql.SQL("GRANT {} TO CURRENT_USER").format(
                sql.SQL(", ").join(sql.Identifier(names.of(role)) for role in ROLES)
            )
        )
    for schema in ("archive", STAGING_SCHEMA):
        connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    before = _transfer_ownership(connection, names.owner)
    _hand_staging_to_app(connection, names.app)
    _grant_database(connection, names)
    if superuser:  # the snapshot builder sees other sessions' open transactions (settings.py)
        connection.execute(
            sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(names.app))
        )
    # The reader checks staged feeds (the erp_feed suite): the app's scratch tables are readable.
    connection.execute(
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}"
        ).format(
            sql.Identifier(names.app), sql.Identifier(STAGING_SCHEMA), sql.Identifier(names.reader)
        )
    )
    with_owner = sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(names.owner))
    connection.execute(with_owner)  # default privileges are the owner's: set them as it
    try:
        _default_privileges(connection, names)
        grant(connection, names)
    finally:
        connection.execute("RESET ROLE")
    return Conversion(created, sum(before.values()), before)


def grant(connection: psycopg.Connection, names: RoleNames) -> None:
    """Set the app's and the reader's privileges on every table of record to exactly the
    intended ones (what drifted is revoked). Run as the owner; `schema.upgrade` runs it after
    new migrations, whose tables the default privileges alone would leave read-only."""
    ident = sql.Identifier
    app, reader = ident(names.app), ident(names.reader)
    tables = connection.execute(
        "SELECT n.nspname, c.relname, c.relispartition FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm')",
        (list(RECORD_SCHEMAS),),
    ).fetchall()
    for schema, table, is_partition in tables:
        target = sql.SQL("{}.{}").format(ident(schema), ident(table))
        connection.execute(sql.SQL("REVOKE ALL ON {} FROM {}, {}").format(target, app, reader))
        connection.execute(sql.SQL("GRANT SELECT ON {} TO {}, {}").format(target, app, reader))
        writes = APP_WRITES.get(table, ()) if schema == "public" and not is_partition else ()
        if writes:
            connection.execute(
                sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(", ").join(map(sql.SQL, writes)), target, app
                )
            )
    for schema in RECORD_SCHEMAS:
        in_schema = ident(schema)
        connection.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}").format(in_schema, app, reader)
        )
        connection.execute(
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                in_schema, app
            )
        )
        connection.execute(
            sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(in_schema, reader)
        )
    staging = ident(STAGING_SCHEMA)
    connection.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(staging, app))
    connection.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(staging, reader))


def grant_if_converted(connection: psycopg.Connection, names: RoleNames) -> bool:
    """`grant` on a converted database, when this connection acts as the owner; whether it ran."""
    if not converted(connection, names):
        return False
    acting = _one_row(connection.execute("SELECT current_user"))[0]
    if acting != names.owner:
        logger.warning(
            "the roles exist but the migrations ran as %s, not %s: run `cangflow db roles`",
            acting,
            names.owner,
        )
        return False
    grant(connection, names)
    return True


# Whether this session should SET ROLE to the role: it exists, the session's user is not it but
# may act as it, and this database was converted (its staging schema belongs to the owner role).
_CONVERTED = """EXISTS (SELECT 1 FROM pg_namespace n JOIN pg_roles o ON o.oid = n.nspowner
                      WHERE n.nspname = %(staging)s AND o.rolname = %(owner)s)"""
_BECOME = f"""
SELECT current_user, r.rolname FROM (SELECT 1) one
LEFT JOIN pg_roles r ON r.rolname = %(role)s AND r.rolname <> current_user
    AND pg_has_role(current_user, r.oid, 'MEMBER') AND {_CONVERTED}
"""


def become(connection: psycopg.Connection, names: RoleNames, role: Role) -> str:
    """SET ROLE to `role`'s name when `_BECOME` says so; the role the session then acts as.
    Left in the session (the caller commits it)."""
    acting, target = _one_row(
        connection.execute(
            _BECOME, {"role": names.of(role), "staging": STAGING_SCHEMA, "owner": names.owner}
        )
    )
    if target is None:
        return acting
    connection.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(target)))
    return target


def converted(connection: psycopg.Connection, names: RoleNames) -> bool:
    """Whether `cangflow db roles` converted this database (for these role names)."""
    return bool(
        _one_row(
            connection.execute(
                f"SELECT {_CONVERTED}", {"staging": STAGING_SCHEMA, "owner": names.owner}
            )
        )[0]
    )


def _one_row(cursor: psycopg.Cursor[TupleRow]) -> TupleRow:
    """The row of a query that always returns one: a SELECT of expressions (no FROM, or a
    LEFT JOIN to one), or the session's own role in pg_roles."""
    row = cursor.fetchone()
    assert row is not None  # see above: such a query never returns zero rows
    return row


def _ensure_role(connection: psycopg.Connection, name: str, password: str | None) -> bool:
    exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    role = sql.Identifier(name)
    if not exists:
        connection.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
            ).format(role)
        )
    if password:
        connection.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))
    return not exists


_NOT_OWNED = """
SELECT kind, schema, name, args, r.rolname FROM (
    SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                ELSE 'TABLE' END AS kind, n.nspname AS schema, c.relname AS name, NULL AS args,
           c.relowner AS owner_id
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
      AND NOT (c.relkind = 'S' AND EXISTS (  -- a table's own sequence follows its table
          SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0))
    UNION ALL
    SELECT 'FUNCTION', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.proowner
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = ANY(%(schemas)s)
    UNION ALL
    SELECT 'SCHEMA', NULL, n.nspname, NULL, n.nspowner FROM pg_namespace n
    WHERE n.nspname = ANY(%(own_schemas)s)
) o JOIN pg_roles r ON r.oid = o.owner_id
WHERE r.rolname <> %(owner)s
ORDER BY kind = 'SCHEMA' DESC, schema, name
"""


def _transfer_ownership(connection: psycopg.Connection, owner: str) -> dict[str, int]:
    """Every object of record the owner does not own yet becomes its (public's own owner,
    pg_database_owner, stays: the owner gets CREATE there instead)."""
    rows = connection.execute(
        _NOT_OWNED,
        {
            "schemas": list(RECORD_SCHEMAS),
            "own_schemas": ["archive", STAGING_SCHEMA],
            "owner": owner,
        },
    ).fetchall()
    before: dict[str, int] = {}
    new_owner = sql.Identifier(owner)
    # ALTER ... OWNER TO checks that the new owner may CREATE in the object's schema (superusers
    # skip the check; a managed server's CREATEROLE admin does not): public's grant comes first.
    connection.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(new_owner))
    for kind, schema, name, args, previous in rows:
        target: sql.Composable
        if kind == "SCHEMA":
            target = sql.Identifier(name)
        elif kind == "FUNCTION":
            target = sql.SQL("{}.{}({})").format(
                sql.Identifier(schema), sql.Identifier(name), sql.SQL(args)
            )
        else:
            target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        connection.execute(
            sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), target, new_owner)
        )
        before[previous] = before.get(previous, 0) + 1
    return before


def _hand_staging_to_app(connection: psycopg.Connection, app: str) -> None:
    """Staging tables a killed run left before the conversion: the app's runs sweep them, and
    only their owner (or the schema's) may drop them."""
    leftovers = connection.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "AND c.relkind = 'r' AND pg_get_userbyid(c.relowner) <> %s",
        (STAGING_SCHEMA, app),
    ).fetchall()
    for (name,) in leftovers:
        connection.execute(
            sql.SQL("ALTER TABLE {}.{} OWNER TO {}").format(
                sql.Identifier(STAGING_SCHEMA), sql.Identifier(name), sql.Identifier(app)
            )
        )


def _grant_database(connection: psycopg.Connection, names: RoleNames) -> None:
    database = _one_row(connection.execute("SELECT current_database()"))[0]
    connection.execute(
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}, {}, {}").format(
            sql.Identifier(database), *(sql.Identifier(names.of(role)) for role in ROLES)
        )
    )
    # The owner makes schemas (migrations: `archive`, `cangflow_staging`).
    connection.execute(
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(database), sql.Identifier(names.owner)
        )
    )


def _default_privileges(connection: psycopg.Connection, names: RoleNames) -> None:
    """What the owner creates later (monthly partitions, archived months, new tables) is
    readable by both and writable by neither, until `grant` says otherwise."""
    app, reader = sql.Identifier(names.app), sql.Identifier(names.reader)
    for schema in RECORD_SCHEMAS:
        prefix = sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} ").format(sql.Identifier(schema))
        connection.execute(prefix + sql.SQL("GRANT SELECT ON TABLES TO {}, {}").format(app, reader))
        connection.execute(prefix + sql.SQL("GRANT USAGE, SELECT ON SEQUENCES TO {}").format(app))
        connection.execute(prefix + sql.SQL("GRANT SELECT ON SEQUENCES TO {}").format(reader))
