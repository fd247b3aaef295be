"""Month 25, made quick: with CANGFLOW_RETENTION_MONTHS=2 the nightly flow retires months, and
afterwards `cangflow check` still exits 0, the next nightly completes, and a receipt dated in a
retired month is refused by the API and by the database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from flows.nightly import nightly_flow
from tests.builders import World
from warehouse import stock
from warehouse.errors import HistoryClosed
from warehouse.history.calendar import today
from warehouse.history.partitions import add_months, month_start
from warehouse.settings import get_settings

pytestmark = pytest.mark.integration

MONTHS_OF_HISTORY = 5


def month(offset: int):
    return add_months(month_start(today()), offset)


def tenth(offset: int) -> datetime:
    first = month(offset)
    return datetime(first.year, first.month, 10, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def retired(tasks_db, prefect_api, own_database_url):
    world = World.create(tasks_db, bins=1)
    sku = world.add_sku()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CANGFLOW_RETENTION_MONTHS", "12")  # written in their own time, as it were
        get_settings.cache_clear()
        for offset in range(-MONTHS_OF_HISTORY, 0):
            with tasks_db.session() as s:
                stock.receive(
                    s,
                    warehouse=world.warehouse,
                    sku=sku,
                    qty=10,
                    location=world.locations[0],
                    occurred_at=tenth(offset),
                )
        patch.setenv("CANGFLOW_RETENTION_MONTHS", "2")
        get_settings.cache_clear()
        first = nightly_flow()
        yield {"world": world, "sku": sku, "first": first, "db": tasks_db, "url": own_database_url}
    get_settings.cache_clear()


def test_the_nightly_retires_months_and_the_books_still_add_up(retired):
    assert retired["first"]["snapshot"]["ok"]
    with retired["db"].session() as s:
        states = dict(s.execute(text("SELECT month, state FROM history_month")).all())
    assert states.get(month(-3)) == "archived", states
    env = {**os.environ, "CANGFLOW_DATABASE_URL": retired["url"], "CANGFLOW_RETENTION_MONTHS": "2"}
    check = subprocess.run(
        [sys.executable, "-m", "flows.cli", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "books check (full): ok" in check.stdout


def test_the_next_nightly_completes(retired):
    again = nightly_flow()
    assert again["snapshot"]["ok"]
    assert retired["world"].on_hand(retired["sku"]) == 10 * MONTHS_OF_HISTORY


def test_a_receipt_in_a_retired_month_is_refused_by_the_api_and_by_the_database(retired):
    world = retired["world"]
    with world.db.session() as s, pytest.raises(HistoryClosed):
        stock.receive(
            s,
            warehouse=world.warehouse,
            sku=retired["sku"],
            qty=1,
            location=world.locations[0],
            occurred_at=tenth(-4),
        )
    with pytest.raises(DBAPIError) as refused:
        with world.db.session() as s:
            s.execute(
                text(
                    "INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, "
                    "location_id, sku_id, qty) SELECT :at, 'receipt', 0, id, warehouse_id, location_id, sku_id, 1 "
                    "FROM stock_balance WHERE sku_id = (SELECT id FROM sku WHERE code = :sku)"
                ),
                {"at": tenth(-4), "sku": retired["sku"]},
            )
    assert refused.value.orig.sqlstate == "CGH02"
