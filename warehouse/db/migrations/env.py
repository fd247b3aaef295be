"""Alembic environment: runs on the connection handed in by `warehouse.db.schema.upgrade`."""

from alembic import context

from warehouse.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection, target_metadata=target_metadata, transaction_per_migration=True
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("cangflow migrations run online only: use `cangflow db upgrade`")
run_migrations_online()
