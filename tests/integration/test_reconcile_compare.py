"""The diff: every kind of key against its WMS side; and its second statement, on the path of
a second night: lines the ERP has not acknowledged stay open, night after night, and each
compare checks them against the feed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from warehouse import stock
from warehouse.db.roles import STAGING_SCHEMA
from warehouse.reconcile import compare

pytestmark = pytest.mark.integration

OPEN_LINES = 200
FEED_ROWS = 100_000


def test_open_lines_of_earlier_runs_meet_the_feed_in_one_pass_however_many_they_are(world):
    """Each open line whose item the new feed covers without a difference is superseded, in a
    plan that reads the feed once: probed once per line (a nested loop over the lines), a
    million-row feed was read once for each of 1,000 open lines, minutes on a second night."""
    skus = [world.stocked_sku(10) for _ in range(OPEN_LINES)]
    staging = f"erp_feed_{datetime.now(UTC):%H%M%S%f}_0c0ffee0"
    with world.db.session() as s:
        warehouse_id = s.execute(
            text("SELECT id FROM warehouse WHERE code = :code"), {"code": world.warehouse}
        ).scalar_one()
        runs = [
            s.execute(
                text(
                    "INSERT INTO reconciliation_run (run_key, feed_name, feed_sha256, truth, settings, status) "
                    "VALUES (md5(random()::text), 'night.csv', repeat('0', 64), 'wms', '{}', :status) RETURNING id"
                ),
                {"status": status},
            ).scalar_one()
            for status in ("done", "loading")
        ]
        order = s.execute(
            text(
                "INSERT INTO adjustment_order (run_id, warehouse_id, truth) VALUES (:run, :w, 'wms') RETURNING id"
            ),
            {"run": runs[0], "w": warehouse_id},
        ).scalar_one()
        s.execute(
            text(
                """INSERT INTO adjustment_order_line (order_id, warehouse_id, sku_id, wms_qty, erp_qty, delta, status, reason)
                SELECT :order, :w, s.id, 10, 12, 2, 'for_erp', 'night 1' FROM sku s WHERE s.code = ANY(:skus)"""
            ),
            {"order": order, "w": warehouse_id, "skus": skus},
        )
        table = f'"{STAGING_SCHEMA}"."{staging}"'
        s.execute(
            text(
                f"CREATE TABLE {table} (warehouse text, sku text, lot text, quantity text, as_of text)"
            )
        )
        s.execute(  # the second night's feed: ERP and WMS agree on every item now
            text(f"INSERT INTO {table} SELECT :wh, unnest(CAST(:skus AS text[])), '', '10', 'x'"),
            {"wh": world.warehouse, "skus": skus},
        )
        s.execute(  # and a feed of real size around them: other warehouses' rows, never analyzed
            text(
                f"INSERT INTO {table} SELECT 'OTHER-' || (n % 50), 'SKU-' || n, '', '1', 'x' "
                "FROM generate_series(1, :rows) n"
            ),
            {"rows": FEED_ROWS},
        )
    try:
        with world.db.session() as s:
            compared = compare.compare(
                s,
                runs[1],
                staging,
                as_of=datetime.now(UTC),
                tolerance_abs=0,
                tolerance_pct=0.0,
                feed_rows=OPEN_LINES,
                warehouse_ids=[warehouse_id],
            )
            # The plan it ran with (after the compare, so the tables hold what it saw).
            for name, value in compare.AGREED_NOW_PLANNER.items():
                s.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
            plan = "\n".join(
                s.execute(
                    text(
                        "EXPLAIN "
                        + compare._AGREED_NOW.format(table=table)
                        .replace("%(", ":")
                        .replace(")s", "")
                    ),
                    {"run": runs[1], "warehouses": [warehouse_id]},
                ).scalars()
            )
            superseded = s.execute(
                text(
                    "SELECT count(*) FROM adjustment_order_line WHERE order_id = :order "
                    "AND status = 'superseded' AND superseded_by_run = :run"
                ),
                {"order": order, "run": runs[1]},
            ).scalar_one()
    finally:
        with world.db.session() as s:
            s.execute(text(f"DROP TABLE {table}"))
    assert compared.differences == 0
    assert superseded == OPEN_LINES
    feed_side = [line for line in plan.splitlines() if staging in line]
    assert len(feed_side) == 1 and "Seq Scan" in feed_side[0], plan
    assert "Nested Loop" not in plan and "SubPlan" not in plan, plan


@pytest.mark.parametrize(
    "booked_by_lot", [True, False], ids=["feed-with-lots", "feed-without-lots"]
)
def test_every_kind_of_key_meets_its_wms_side_as_of_the_feed(world, booked_by_lot):
    """The diff per key: a SKU in several bins is summed; a SKU the feed books by lot compares
    lot by lot (a lot missing on either side is named); a SKU booked without lots compares with
    its lots summed; stock missing from the feed, or a feed row without stock, is named; an
    empty balance missing from the feed is no difference; stock received after the feed's
    as_of is not. A feed without any lot (the usual one) takes the diff's other keying."""
    bins = world.locations
    in_two_bins, differs_in_two_bins = world.add_sku(), world.add_sku()
    for sku, first, second in ((in_two_bins, 10, 5), (differs_in_two_bins, 4, 6)):
        world.receive(sku, first, location=bins[0])
        world.receive(sku, second, location=bins[1])
    by_lot = world.add_sku(lots={"L1": None, "L2": None, "L3": None})
    world.receive(by_lot, 7, lot="L1")
    world.receive(by_lot, 3, lot="L2", location=bins[1])
    lots_summed = world.add_sku(lots={"L1": None, "L2": None})
    world.receive(lots_summed, 4, lot="L1")
    world.receive(lots_summed, 5, lot="L2")
    not_in_feed = world.stocked_sku(8)
    no_stock = world.add_sku()
    emptied = world.stocked_sku(6)
    with world.db.session() as s:
        stock.deduct(s, warehouse=world.warehouse, sku=emptied, qty=6)
    received_later = world.stocked_sku(5)
    as_of = datetime.now(UTC)
    world.receive(received_later, 3)
    feed = [
        (in_two_bins, "", 15),
        (differs_in_two_bins, "", 12),
        *([(by_lot, "L1", 7), (by_lot, "L3", 2)] if booked_by_lot else [(by_lot, "", 12)]),
        (lots_summed, "", 9),
        (no_stock, "", 4),
        (received_later, "", 5),
    ]
    staging = f"erp_feed_{datetime.now(UTC):%H%M%S%f}_0d1ff000"
    table = f'"{STAGING_SCHEMA}"."{staging}"'
    with world.db.session() as s:
        warehouse_id = s.execute(
            text("SELECT id FROM warehouse WHERE code = :code"), {"code": world.warehouse}
        ).scalar_one()
        run = s.execute(
            text(
                "INSERT INTO reconciliation_run (run_key, feed_name, feed_sha256, truth, settings, status) "
                "VALUES (md5(random()::text), 'kinds.csv', repeat('0', 64), 'wms', '{}', 'loading') RETURNING id"
            )
        ).scalar_one()
        s.execute(
            text(
                f"CREATE TABLE {table} (warehouse text, sku text, lot text, quantity text, as_of text)"
            )
        )
        for sku, lot, qty in feed:
            s.execute(
                text(f"INSERT INTO {table} VALUES (:w, :sku, :lot, :qty, 'x')"),
                {"w": world.warehouse, "sku": sku, "lot": lot, "qty": str(qty)},
            )
    try:
        with world.db.session() as s:
            compared = compare.compare(
                s,
                run,
                staging,
                as_of=as_of,
                tolerance_abs=0,
                tolerance_pct=0.0,
                feed_rows=len(feed),
                warehouse_ids=[warehouse_id],
            )
            found = s.execute(
                text(
                    "SELECT s.code, l.code, d.wms_qty, d.erp_qty, d.delta, d.kind "
                    "FROM reconciliation_difference d JOIN sku s ON s.id = d.sku_id "
                    "LEFT JOIN lot l ON l.id = d.lot_id WHERE d.run_id = :run"
                ),
                {"run": run},
            ).all()
    finally:
        with world.db.session() as s:
            s.execute(text(f"DROP TABLE {table}"))
    by_lot_differences = (
        [(by_lot, "L2", 3, None, -3, "not_in_feed"), (by_lot, "L3", 0, 2, 2, "not_in_wms")]
        if booked_by_lot
        else [(by_lot, None, 10, 12, 2, "differs")]  # its two lots, summed
    )
    expected = [
        (differs_in_two_bins, None, 10, 12, 2, "differs"),
        *by_lot_differences,
        (not_in_feed, None, 8, None, -8, "not_in_feed"),
        (no_stock, None, 0, 4, 4, "not_in_wms"),
    ]
    assert sorted(tuple(row) for row in found) == sorted(expected)
    assert (compared.differences, compared.not_in_feed) == (
        len(expected),
        sum(row[5] == "not_in_feed" for row in expected),
    )
