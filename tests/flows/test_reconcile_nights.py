"""Reconciliation night after night: a difference that stands for two nights is one open line
in the queue, not two; with the ERP as the truth, approving from the queue leaves stock at the
ERP's number; with the WMS as the truth, the ERP is asked once until it acknowledges."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.cli import main as cangflow
from flows.reconcile import reconcile_flow
from tests.builders import World
from tests.flows.test_reconcile import write_feed

pytestmark = pytest.mark.integration


def night(tmp_path: Path, world: World, sku: str, erp_qty: int, truth: str, number: int) -> dict:
    feed = write_feed(
        tmp_path,
        [(world.warehouse, sku, "", erp_qty)],
        as_of=datetime.now(UTC),
        name=f"{truth}-night-{number}.csv",
    )
    return reconcile_flow(erp_file=feed, truth=truth, auto_approve_limit=0)


def open_lines(db, world: World) -> list[dict]:
    with db.session() as s:
        return [
            dict(r)
            for r in s.execute(
                text("""
            SELECT l.id, o.run_id, l.delta, l.wms_qty, l.erp_qty, l.status FROM adjustment_order_line l
            JOIN adjustment_order o ON o.id = l.order_id JOIN warehouse w ON w.id = l.warehouse_id
            WHERE w.code = :w AND l.status IN ('pending_approval', 'for_erp') ORDER BY l.id"""),
                {"w": world.warehouse},
            ).mappings()
        ]


def erp_messages(db, world: World) -> list[dict]:
    with db.session() as s:
        return list(
            s.execute(
                text(
                    "SELECT payload FROM outbox_message WHERE topic = 'erp.adjustment' "
                    "AND message_key = :w ORDER BY id"
                ),
                {"w": world.warehouse},
            ).scalars()
        )


def test_a_standing_difference_approved_from_the_queue_leaves_the_erps_number(
    tasks_db, prefect_api, tmp_path, capsys
):
    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(50)
    first = night(tmp_path, world, sku, 40, "erp", 1)
    second = night(tmp_path, world, sku, 40, "erp", 2)
    [line] = open_lines(tasks_db, world)  # one open line, the newest run's, not two of -10
    assert (line["run_id"], line["delta"], line["status"]) == (
        second["run_id"],
        -10,
        "pending_approval",
    )
    with tasks_db.session() as s:
        older = s.execute(
            text("""SELECT l.id, l.status, l.superseded_by_run FROM adjustment_order_line l
            JOIN adjustment_order o ON o.id = l.order_id WHERE o.run_id = :run"""),
            {"run": first["run_id"]},
        ).one()
    assert (older.status, older.superseded_by_run) == ("superseded", second["run_id"])

    capsys.readouterr()
    assert cangflow(["adjustments", "list"]) == 0
    listed = capsys.readouterr().out
    assert (
        f"{line['id']:>8} {second['run_id']:>6} erp-night-2.csv" in listed
        and f"{older.id:>8} " not in listed
    )
    # The operator clears the queue, the superseded line included: it is refused, naming the
    # newer one, and the newer one is applied; approving the whole run again applies nothing more.
    assert cangflow(["adjustments", "approve", str(older.id), str(line["id"])]) == 1
    said = capsys.readouterr()
    assert (
        f"line {older.id}: refused: line {older.id} was superseded by run {second['run_id']}, line {line['id']}"
        in said.out
    )
    assert (
        f"line {line['id']}: applied" in said.out
        and "1 of 2 line(s) not decided as asked" in said.err
    )
    assert (
        cangflow(["adjustments", "approve", "--run", str(second["run_id"])]) == 2
    )  # nothing waits any more
    assert cangflow(["adjustments", "approve", str(line["id"])]) == 0  # again: applied once
    assert world.on_hand(sku) == 40
    assert cangflow(["adjustments", "reject", str(line["id"]), "--reason", " "]) == 2
    capsys.readouterr()
    # The contrary decision is refused, not reported as done: exit 1, the line stays applied.
    assert cangflow(["adjustments", "reject", str(line["id"]), "--reason", "no"]) == 1
    assert f"line {line['id']}: refused: line {line['id']} is applied already" in (
        capsys.readouterr().out
    )
    assert world.on_hand(sku) == 40
    capsys.readouterr()
    assert cangflow(["adjustments", "show", str(line["id"])]) == 0
    shown = capsys.readouterr().out
    assert "status: applied" in shown and "erp-night-2.csv" in shown and "movement_ids" in shown
    third = night(tmp_path, world, sku, 40, "erp", 3)
    assert third["differences"] == 0 and open_lines(tasks_db, world) == []


def test_with_the_wms_as_the_truth_the_erp_is_asked_once_until_it_acknowledges(
    tasks_db, prefect_api, tmp_path, capsys
):
    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(20)
    night(tmp_path, world, sku, 25, "wms", 1)
    night(tmp_path, world, sku, 25, "wms", 2)
    [asked] = open_lines(tasks_db, world)
    [message] = erp_messages(tasks_db, world)
    assert message["lines"][0] | {"sku": sku} == {
        "sku": sku,
        "lot": None,
        "wms_qty": 20,
        "erp_qty": 25,
        "target_qty": 20,
        "erp_adjustment": -5,
    }

    # The difference changes (a pick): the open line is superseded and the ERP gets the new target.
    with tasks_db.session() as s:
        from warehouse import stock

        stock.deduct(s, warehouse=world.warehouse, sku=sku, qty=2)
    third = night(tmp_path, world, sku, 25, "wms", 3)
    [newer] = open_lines(tasks_db, world)
    assert newer["run_id"] == third["run_id"] and newer["id"] != asked["id"]
    assert [m["lines"][0]["target_qty"] for m in erp_messages(tasks_db, world)] == [20, 18]

    # Acknowledged, the line is closed; the same difference found again is sent again.
    assert cangflow(["adjustments", "ack", str(newer["id"])]) == 0
    assert f"line {newer['id']}: acknowledged" in capsys.readouterr().out
    assert open_lines(tasks_db, world) == []
    night(tmp_path, world, sku, 25, "wms", 4)
    assert len(erp_messages(tasks_db, world)) == 3
    [fourth] = open_lines(tasks_db, world)
    capsys.readouterr()
    # One refused line (superseded, not sent any more) holds back none of the others.
    assert cangflow(["adjustments", "ack", str(asked["id"]), str(fourth["id"])]) == 1
    said = capsys.readouterr()
    assert f"line {asked['id']}: refused: line {asked['id']} is superseded" in said.out
    assert f"line {fourth['id']}: acknowledged" in said.out
    assert "1 of 2 line(s) not acknowledged" in said.err
    assert open_lines(tasks_db, world) == []


def test_a_line_whose_difference_is_gone_by_the_next_night_cannot_be_approved(
    tasks_db, prefect_api, tmp_path, capsys
):
    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(50)
    night(tmp_path, world, sku, 40, "erp", 1)
    [line] = open_lines(tasks_db, world)
    with tasks_db.session() as s:  # the floor counted 40 and booked it, before anyone approved
        from warehouse import stock

        stock.adjust(
            s,
            warehouse=world.warehouse,
            sku=sku,
            qty=-10,
            location=world.locations[0],
            reason="count",
        )
    second = night(tmp_path, world, sku, 40, "erp", 2)
    assert second["differences"] == 0 and open_lines(tasks_db, world) == []
    capsys.readouterr()
    assert cangflow(["adjustments", "approve", str(line["id"])]) == 1
    assert (
        f"superseded by run {second['run_id']} (which found nothing left to order)"
        in capsys.readouterr().out
    )
    assert world.on_hand(sku) == 40  # not 30


@pytest.mark.brake
@pytest.mark.parametrize("feed", ["zeros", "truncated"])
def test_a_feed_of_zeros_or_a_truncated_one_applies_nothing_whatever_the_auto_approve_limit(
    feed, tasks_db, prefect_api, tmp_path, capsys
):
    world = World.create(tasks_db, bins=1)
    skus = [world.stocked_sku(20 + n) for n in range(5)]
    if feed == "zeros":  # a broken ERP export
        rows = [(world.warehouse, sku, "", 0) for sku in skus]
    else:  # one row of five, declared complete
        rows = [(world.warehouse, skus[0], "", 20)]
    path = write_feed(tmp_path, rows, as_of=datetime.now(UTC), name=f"{feed}.csv")
    summary = reconcile_flow(
        erp_file=path, truth="erp", auto_approve_limit=10**6, full_feed=feed == "truncated"
    )
    assert summary["applied"] == 0 and summary["held"] == (5 if feed == "zeros" else 4)
    assert (
        "feed rows differ beyond tolerance" in summary["brake"] or "add up to" in summary["brake"]
    )
    assert "SKU(s) would go to zero from 10 or more units" in summary["brake"]
    assert [world.on_hand(sku) for sku in skus] == [20 + n for n in range(5)]
    with tasks_db.session() as s:
        notice = s.execute(
            text("SELECT brake FROM reconciliation_run WHERE id = :run"), {"run": summary["run_id"]}
        ).scalar()
    assert notice == summary["brake"]
    # A person who checked the feed can still apply it, on purpose, in one command.
    capsys.readouterr()
    assert cangflow(["adjustments", "approve", "--run", str(summary["run_id"])]) == 0
    assert sum(world.on_hand(sku) for sku in skus) == (0 if feed == "zeros" else 20)


def test_a_normal_night_is_not_braked(tasks_db, prefect_api, tmp_path, monkeypatch):
    """The control: with the brake's limits above this run's share, the same kind of difference is applied."""
    from warehouse.settings import get_settings

    world = World.create(tasks_db, bins=1)
    skus = [world.stocked_sku(100) for _ in range(3)]
    monkeypatch.setenv("CANGFLOW_RECONCILE_MAX_DIFFERING_PCT", "50")
    monkeypatch.setenv("CANGFLOW_RECONCILE_MAX_DELTA_PCT", "2")
    monkeypatch.setenv("CANGFLOW_RECONCILE_ZEROING_MIN_QTY", "10")
    get_settings.cache_clear()
    rows = [
        (world.warehouse, skus[0], "", 99),
        (world.warehouse, skus[1], "", 100),
        (world.warehouse, skus[2], "", 100),
    ]
    path = write_feed(tmp_path, rows, as_of=datetime.now(UTC), name="normal.csv")
    summary = reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=5)
    assert (summary["brake"], summary["applied"], summary["held"]) == ("", 1, 0)
    assert world.on_hand(skus[0]) == 99


def test_a_correction_applied_after_the_next_feed_was_cut_is_not_applied_twice(
    tasks_db, prefect_api, tmp_path, capsys
):
    world = World.create(tasks_db, bins=1)
    sku = world.stocked_sku(50)
    night(tmp_path, world, sku, 40, "erp", 1)
    [first] = open_lines(tasks_db, world)
    # The ERP cuts the next feed, then the operator approves yesterday's line, then the feed is reconciled.
    cut = write_feed(
        tmp_path, [(world.warehouse, sku, "", 40)], as_of=datetime.now(UTC), name="cut.csv"
    )
    assert cangflow(["adjustments", "approve", str(first["id"])]) == 0
    assert world.on_hand(sku) == 40
    reconcile_flow(erp_file=cut, truth="erp", auto_approve_limit=0)
    [second] = open_lines(tasks_db, world)  # as of the cut, the WMS still held 50
    capsys.readouterr()
    assert cangflow(["adjustments", "approve", str(second["id"])]) == 1
    said = capsys.readouterr().out
    assert f"failed: line {first['id']} of run" in said and "would repeat the correction" in said
    assert world.on_hand(sku) == 40  # not 30


@pytest.mark.brake
def test_with_the_wms_as_the_truth_a_braked_run_sends_nothing_until_a_person_approves(
    tasks_db, prefect_api, tmp_path, capsys
):
    world = World.create(tasks_db, bins=1)
    skus = [world.stocked_sku(20 + n) for n in range(5)]
    path = write_feed(
        tmp_path,
        [(world.warehouse, sku, "", 0) for sku in skus],
        as_of=datetime.now(UTC),
        name="wms-zeros.csv",
    )  # a broken ERP export
    summary = reconcile_flow(erp_file=path, truth="wms")
    assert (
        summary["held"] == 5
        and summary["lines_for_erp"] == 0
        and erp_messages(tasks_db, world) == []
    )
    assert "SKU(s) the ERP books at zero hold 10 or more units in the WMS" in summary["brake"]
    capsys.readouterr()
    assert cangflow(["adjustments", "approve", "--run", str(summary["run_id"])]) == 0
    assert capsys.readouterr().out.count("sent to the ERP") == 5
    sent = erp_messages(tasks_db, world)
    assert sorted(m["lines"][0]["erp_adjustment"] for m in sent) == [20, 21, 22, 23, 24]
    assert (
        cangflow(["adjustments", "approve", "--run", str(summary["run_id"])]) == 2
    )  # nothing waits any more
    assert len(erp_messages(tasks_db, world)) == 5  # sent once
    assert [world.on_hand(sku) for sku in skus] == [
        20 + n for n in range(5)
    ]  # WMS truth: stock unchanged
