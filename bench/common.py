"""What every benchmark does the same way: a database of its own, created and dropped."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database to create and drop the bench database from",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the bench database for inspection"
    )


def database_url(bench: str, admin_url: str) -> tuple[str, str]:
    """(name, postgresql+psycopg URL) of this process's bench database."""
    name = f"cangflow_bench_{bench}_{os.getpid()}"
    url = (
        make_url(admin_url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )
    return name, url


@contextmanager
def bench_database(bench: str, admin_url: str, *, keep: bool, log) -> Iterator[str]:
    """Create the bench database, yield its URL, drop it afterwards (unless `keep`)."""
    name, url = database_url(bench, admin_url)
    admin_dsn = (
        make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
