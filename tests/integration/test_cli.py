"""The `cangflow` command as an engineer runs it: exit codes and messages."""

import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from warehouse.db import schema

pytestmark = pytest.mark.integration


def cangflow(database_url, *arguments, input_bytes=None):
    env = {**os.environ, "CANGFLOW_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_upgrade_reports_the_revision(database_url, db):
    result = cangflow(database_url, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert f"at revision {schema.head_revision()}" in result.stdout


def test_check_passes_on_consistent_books_and_fails_naming_a_broken_balance(database_url, world):
    sku = world.stocked_sku(5)
    clean = cangflow(database_url, "check")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "books check (full): ok" in clean.stdout
    balance_of = (
        "(SELECT id FROM stock_balance WHERE sku_id = (SELECT id FROM sku WHERE code = :sku))"
    )
    with world.db.session() as s:  # a write that bypasses the ledger
        balance_id = s.execute(text(f"SELECT {balance_of}"), {"sku": sku}).scalar()
        s.execute(
            text(f"UPDATE stock_balance SET on_hand = on_hand + 1 WHERE id = {balance_of}"),
            {"sku": sku},
        )
    try:
        broken = cangflow(database_url, "check")
        assert broken.returncode == 1
        assert f"balance_equals_ledger: balance {balance_id}: on_hand=6" in broken.stdout
    finally:
        with world.db.session() as s:
            s.execute(
                text(f"UPDATE stock_balance SET on_hand = on_hand - 1 WHERE id = {balance_of}"),
                {"sku": sku},
            )


def test_catalog_import_rejects_a_bad_file_with_the_reason_on_stderr(database_url, db, tmp_path):
    bad = tmp_path / "skus.csv"
    bad.write_text("code,name,category\nOK-1,Milk,dairy\n BAD,Bread,\n")
    result = cangflow(database_url, "catalog", "import", "skus", str(bad))
    assert result.returncode == 1  # a refused input file, as a refused feed
    assert "line 3, column code" in result.stderr and "nothing imported" in result.stderr


def test_a_bad_database_url_fails_with_a_readable_error(tmp_path):
    result = cangflow("mysql://nobody@127.0.0.1/none", "check")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: CANGFLOW_DATABASE_URL: cangflow needs a postgresql+psycopg:// URL, got mysql://"
    ]


def test_an_unreachable_database_is_one_line_and_exit_3_and_debug_adds_the_traceback():
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    quiet = cangflow(url, "check")
    assert quiet.returncode == 3
    assert len(quiet.stderr.strip().splitlines()) == 1 and quiet.stderr.startswith(
        "error: cannot open the database:"
    )
    loud = cangflow(url, "--debug", "check")
    assert loud.returncode == 3
    assert (
        "Traceback" in loud.stderr and loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip()
    )


def test_commands_refuse_an_unmigrated_database_with_a_clear_error(database_url):
    import psycopg
    from psycopg import sql

    from tests.conftest import ADMIN_URL

    name = "cangflow_empty_" + database_url.rsplit("_", 1)[-1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        result = cangflow(database_url.rsplit("/", 1)[0] + "/" + name, "check")
        assert result.returncode == 3  # the command cannot run until the database is set up
        assert "has no cangflow schema" in result.stderr and "cangflow db upgrade" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
