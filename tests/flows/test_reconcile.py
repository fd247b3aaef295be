"""ERP reconciliation end to end on a database of its own: known differences give exactly the
expected order lines per truth mode, tolerances hold lines back, reruns and crashes create
nothing twice, a movement after the feed's as_of is not flagged, approval applies once, and
every kind of bad feed is rejected whole, quarantined, and changes nothing."""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.reconcile import reconcile_flow
from tests.builders import World
from warehouse import catalog, stock
from warehouse.errors import InvalidArgument
from warehouse.reconcile import FeedRejected, orders

pytestmark = pytest.mark.integration

HEADER = "warehouse,sku,lot,quantity,as_of"


@pytest.fixture(scope="module")
def world(tasks_db, prefect_api, tmp_path_factory):
    from warehouse.settings import get_settings

    world = World.create(tasks_db, bins=2)
    world.skus = [world.add_sku(category="bolts") for _ in range(6)]
    for index, sku in enumerate(world.skus):
        world.receive(sku, 10 + index, location=world.locations[index % 2])
    world.quarantine = Path(get_settings().quarantine_path)
    return world


def now() -> datetime:
    return datetime.now(UTC)


def write_feed(
    folder: Path, rows: list[tuple], *, as_of: datetime | None = None, name: str = "feed.csv"
) -> str:
    stamp = (as_of or now()).isoformat()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER.split(","))
    for row in rows:
        writer.writerow([*row, stamp] if len(row) == 4 else row)
    path = folder / name
    path.write_text(out.getvalue(), encoding="utf-8")
    return str(path)


def wms_rows(db, world) -> list[tuple]:
    with db.session() as s:
        return [
            (world.warehouse, sku, "", stock.on_hand(s, warehouse=world.warehouse, sku=sku))
            for sku in world.skus
        ]


def counts(db) -> dict:
    with db.session() as s:
        return dict(
            s.execute(
                text("""
            SELECT (SELECT count(*) FROM adjustment_order) AS orders, (SELECT count(*) FROM adjustment_order_line) AS lines,
                   (SELECT count(*) FROM stock_movement) AS movements,
                   (SELECT count(*) FROM outbox_message WHERE topic = 'erp.adjustment') AS erp_messages
        """)
            )
            .mappings()
            .one()
        )


def lines_of(db, run_id: int) -> list[dict]:
    with db.session() as s:
        return [
            dict(r)
            for r in s.execute(
                text("""
            SELECT s.code AS sku, l.wms_qty, l.erp_qty, l.delta, l.status, l.movement_ids, l.id
            FROM adjustment_order_line l JOIN adjustment_order o ON o.id = l.order_id JOIN sku s ON s.id = l.sku_id
            WHERE o.run_id = :run ORDER BY s.code"""),
                {"run": run_id},
            ).mappings()
        ]


def staging_tables(db) -> list[str]:
    with db.session() as s:
        return list(
            s.execute(
                text(
                    "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'erp\\_feed\\_%' "
                    "ORDER BY 1"
                )
            ).scalars()
        )


def test_wms_truth_writes_exactly_the_expected_lines_for_the_erp_and_leaves_stock(
    world, tasks_db, tmp_path
):
    rows = wms_rows(tasks_db, world)
    a, b, absent = world.skus[0], world.skus[1], world.skus[2]
    feed = [
        (w, s, lot, q + 2 if s == a else q - 5 if s == b else q)
        for w, s, lot, q in rows
        if s != absent
    ]
    extra = world.add_sku()  # known to the catalogue, no stock in the WMS
    feed.append((world.warehouse, extra, "", 4))
    before = counts(tasks_db)
    summary = reconcile_flow(erp_file=write_feed(tmp_path, feed))
    assert summary["differences"] == 4 and summary["not_in_feed_reported"] == 1
    lines = {line["sku"]: line for line in lines_of(tasks_db, summary["run_id"])}
    assert set(lines) == {a, b, extra}
    assert (lines[a]["delta"], lines[b]["delta"], lines[extra]["delta"]) == (2, -5, 4)
    assert {line["status"] for line in lines.values()} == {"for_erp"}
    after = counts(tasks_db)
    assert after["movements"] == before["movements"]  # WMS stock unchanged
    assert after["erp_messages"] == before["erp_messages"] + 1
    with tasks_db.session() as s:
        payload = s.execute(
            text(
                "SELECT payload FROM outbox_message WHERE topic = 'erp.adjustment' ORDER BY id DESC LIMIT 1"
            )
        ).scalar()
    assert {(line["sku"], line["erp_adjustment"]) for line in payload["lines"]} == {
        (a, -2),
        (b, 5),
        (extra, -4),
    }


def test_the_same_feed_again_creates_nothing_and_says_so(world, tasks_db, tmp_path):
    path = write_feed(
        tmp_path, [*wms_rows(tasks_db, world)[:-1], (world.warehouse, world.skus[-1], "", 99)]
    )
    first = reconcile_flow(erp_file=path)
    before = counts(tasks_db)
    again = reconcile_flow(erp_file=path)
    assert again["status"] == "stale" and again["run_id"] == first["run_id"]
    assert "reconciled before" in again["stale"]
    assert counts(tasks_db) == before


def test_erp_truth_applies_small_lines_holds_large_ones_and_approval_applies_once(
    world, tasks_db, tmp_path
):
    rows = wms_rows(tasks_db, world)
    small, large = world.skus[3], world.skus[4]
    feed = [
        (w, s, lot, q + 2 if s == small else q - 7 if s == large else q) for w, s, lot, q in rows
    ]
    with tasks_db.session() as s:
        small_before = stock.on_hand(s, warehouse=world.warehouse, sku=small)
        large_before = stock.on_hand(s, warehouse=world.warehouse, sku=large)
    summary = reconcile_flow(erp_file=write_feed(tmp_path, feed), truth="erp", auto_approve_limit=3)
    assert summary["applied"] == 1 and summary["pending_approval"] == 1
    lines = {line["sku"]: line for line in lines_of(tasks_db, summary["run_id"])}
    assert lines[small]["status"] == "applied" and lines[small]["movement_ids"]
    assert lines[large]["status"] == "pending_approval" and not lines[large]["movement_ids"]
    with tasks_db.session() as s:
        assert stock.on_hand(s, warehouse=world.warehouse, sku=small) == small_before + 2
        assert (
            stock.on_hand(s, warehouse=world.warehouse, sku=large) == large_before
        )  # waits for a person
        reasons = (
            s.execute(
                text("SELECT reason FROM stock_movement WHERE id = ANY(:ids)"),
                {"ids": lines[small]["movement_ids"]},
            )
            .scalars()
            .all()
        )
    assert reasons and all(f"run {summary['run_id']}" in reason for reason in reasons)
    for _ in range(2):  # approving twice applies once
        with tasks_db.session() as s:
            if orders.decide(s, lines[large]["id"], approve=True, by="tester") == "approved":
                orders.apply_line(
                    s, lines[large]["id"], reconcile_location="RECONCILE", by="tester"
                )
    with tasks_db.session() as s:
        assert stock.on_hand(s, warehouse=world.warehouse, sku=large) == large_before - 7
    assert {line["sku"]: line["status"] for line in lines_of(tasks_db, summary["run_id"])}[
        large
    ] == "applied"
    with tasks_db.session() as s, pytest.raises(InvalidArgument, match="is applied already"):
        orders.decide(s, lines[large]["id"], approve=False, by="tester", note="changed my mind")
    assert {line["sku"]: line["status"] for line in lines_of(tasks_db, summary["run_id"])}[
        large
    ] == "applied"


def test_a_feed_ending_in_blank_lines_reconciles_as_the_same_feed_without_them(
    world, tasks_db, tmp_path
):
    rows = wms_rows(tasks_db, world)
    changed = world.skus[0]
    feed = [(w, s, lot, q + 3 if s == changed else q) for w, s, lot, q in rows]
    path = Path(write_feed(tmp_path, feed, name="blank-tail.csv"))
    path.write_bytes(path.read_bytes() + b"\n  \n\n")  # as some editors and spreadsheets save
    summary = reconcile_flow(erp_file=str(path))
    assert summary["feed_rows"] == len(rows) and summary["differences"] == 1
    assert [line["sku"] for line in lines_of(tasks_db, summary["run_id"])] == [changed]


def test_differences_within_tolerance_are_recorded_not_adjusted(
    world, tasks_db, own_admin_db, tmp_path
):
    rows = wms_rows(tasks_db, world)
    target = world.skus[0]
    feed = [(w, s, lot, q + 1 if s == target else q) for w, s, lot, q in rows]
    summary = reconcile_flow(erp_file=write_feed(tmp_path, feed), tolerance_abs=1)
    assert (
        summary["differences"] == 1 and summary["within_tolerance"] == 1 and summary["orders"] == 0
    )
    overrides = tmp_path / "tolerances.csv"
    overrides.write_text("sku,category,abs,pct\n,bolts,0,20\n")  # 20% for the category
    feed = [(w, s, lot, q + 2 if s == target else q) for w, s, lot, q in rows]
    try:
        summary = reconcile_flow(
            erp_file=write_feed(tmp_path, feed, name="feed2.csv"), tolerances_file=str(overrides)
        )
        assert summary["within_tolerance"] == 1 and summary["orders"] == 0
    finally:  # the test's clean-up: tolerances are never deleted by cangflow, so the app role may not
        with own_admin_db.session() as s:
            s.execute(text("DELETE FROM reconciliation_tolerance"))


def test_a_tolerance_file_naming_an_unknown_sku_is_refused_once_not_retried(
    world, tasks_db, tmp_path
):
    """Its task retries what may pass next time (a dropped connection); a refusal of the file
    would only be refused again, 10 s later."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    overrides = tmp_path / "tolerances.csv"
    overrides.write_text("sku,category,abs,pct\nNO-SUCH-SKU,,1,0\n")
    feed = write_feed(tmp_path, wms_rows(tasks_db, world), name="feed-tolerances.csv")
    state = reconcile_flow(erp_file=feed, tolerances_file=str(overrides), return_state=True)
    with pytest.raises(FeedRejected, match=r"tolerance file tolerances.csv rejected.*NO-SUCH-SKU"):
        state.result()
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    [tolerances_run] = [run for run in task_runs if run.name.startswith("reconcile-tolerances")]
    assert tolerances_run.run_count == 1 and tolerances_run.state.is_failed()


def test_a_movement_after_the_feeds_as_of_is_not_flagged(world, tasks_db, tmp_path):
    as_of = now()  # not earlier: the module's previous feed may be less than a second old
    rows = wms_rows(tasks_db, world)
    with tasks_db.session() as s:  # a pick after the ERP's cut-off
        stock.deduct(s, warehouse=world.warehouse, sku=world.skus[1], qty=3)
    summary = reconcile_flow(erp_file=write_feed(tmp_path, rows, as_of=as_of))
    assert summary["differences"] == 0


def test_a_warehouse_of_lots_reconciles_lot_by_lot_and_erp_truth_fixes_the_lot(
    tasks_db, prefect_api, tmp_path
):
    """A warehouse that books SKUs by lot: a SKU the feed books by lot compares lot by lot (its
    lots in different bins), one booked without lots compares with its lots summed; ERP truth
    adjusts the lot that differs and no other, and the next night's feed of the same counts
    finds nothing."""
    lots = World.create(tasks_db, bins=2)
    by_lot = lots.add_sku(lots={"L1": None, "L2": None})
    lots.receive(by_lot, 5, lot="L1", location=lots.locations[0])
    lots.receive(by_lot, 3, lot="L2", location=lots.locations[1])
    summed = lots.add_sku(lots={"QA": None, "QB": None})
    lots.receive(summed, 4, lot="QA")
    lots.receive(summed, 2, lot="QB", location=lots.locations[1])
    plain = lots.stocked_sku(9)
    feed = [
        (lots.warehouse, by_lot, "L1", 7),
        (lots.warehouse, by_lot, "L2", 3),
        (lots.warehouse, summed, "", 6),
        (lots.warehouse, plain, "", 8),
    ]
    summary = reconcile_flow(
        erp_file=write_feed(tmp_path, feed, name="lots.csv"), truth="erp", auto_approve_limit=5
    )
    assert (summary["differences"], summary["applied"]) == (2, 2), summary
    with tasks_db.session() as s:
        on_hand = {
            "L1": stock.on_hand(s, warehouse=lots.warehouse, sku=by_lot, lot="L1"),
            "L2": stock.on_hand(s, warehouse=lots.warehouse, sku=by_lot, lot="L2"),
            "summed": stock.on_hand(s, warehouse=lots.warehouse, sku=summed),
            "plain": stock.on_hand(s, warehouse=lots.warehouse, sku=plain),
        }
    assert on_hand == {"L1": 7, "L2": 3, "summed": 6, "plain": 8}
    again = reconcile_flow(erp_file=write_feed(tmp_path, feed, name="lots-night-2.csv"))
    assert (again["status"], again["differences"], again["orders"]) == ("done", 0, 0)


def test_a_run_cut_short_at_any_step_is_finished_by_the_next_with_no_duplicates(
    world, tasks_db, tmp_path
):
    from tasks import reconcile as steps
    from warehouse.reconcile import RunSettings
    from warehouse.reconcile.feed import new_attempt, staging_table

    rows = wms_rows(tasks_db, world)
    feed = [(w, s, lot, q + 1) for w, s, lot, q in rows]
    settings = RunSettings(truth="erp", auto_approve_limit=5)
    for stop_after in ("start", "load", "compare", "orders"):
        path = write_feed(tmp_path, feed, name=f"cut-{stop_after}.csv")
        fed = steps.inspect_feed.fn(path)
        run = steps.start_run.fn(fed, settings)
        if stop_after != "start":  # the killed attempt leaves its staging table behind
            loaded = steps.load_and_check.fn(
                run.id, fed, staging_table(run.id, new_attempt()), 26.0
            )
        if stop_after in ("compare", "orders"):
            steps.compare_run.fn(run.id, loaded, settings)
        if stop_after == "orders":
            steps.make_orders.fn(run.id, settings, loaded.as_of)
        before = counts(tasks_db)
        summary = reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=5)
        assert summary["run_id"] == run.id and summary["status"] == "done"
        assert staging_tables(tasks_db) == [], (
            stop_after
        )  # the rerun dropped what the killed attempt left
        assert summary["applied"] == len(world.skus), stop_after
        after = counts(tasks_db)
        assert after["orders"] - before["orders"] <= 1 and after["movements"] - before[
            "movements"
        ] == len(world.skus)
        again = reconcile_flow(erp_file=path, truth="erp", auto_approve_limit=5)
        assert again["status"] == "stale" and counts(tasks_db) == after
        feed = [(w, s, lot, q + 1) for w, s, lot, q in feed]  # the next round differs again


# -- bad feeds ----------------------------------------------------------------------------------


def _lot_of_a_new_sku(world) -> str:
    """A lot code that exists, of another SKU than the feed row names (made outside the world's
    SKUs, which the feeds of later tests list)."""
    sku, lot = f"SKU-{uuid.uuid4().hex[:8]}", f"LOT-{uuid.uuid4().hex[:8]}"
    with world.db.session() as session:
        catalog.ensure_sku(session, sku)
        catalog.ensure_lot(session, sku, lot, None)
    return lot


BAD_FEEDS = {
    "missing column": lambda w, t: (
        "warehouse,sku,lot,quantity\n" + f"{w.warehouse},{w.skus[0]},,5\n"
    ),
    "extra column": lambda w, t: HEADER + ",note\n" + f"{w.warehouse},{w.skus[0]},,5,{t},x\n",
    "wrong delimiter": lambda w, t: (
        HEADER.replace(",", ";") + "\n" + f"{w.warehouse};{w.skus[0]};;5;{t}\n"
    ),
    "duplicate key": lambda w, t: HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,{t}\n" * 2,
    "negative quantity": lambda w, t: HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,-5,{t}\n",
    "fractional quantity": lambda w, t: HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5.5,{t}\n",
    "non-numeric quantity": lambda w, t: HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,five,{t}\n",
    "empty quantity": lambda w, t: HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,,{t}\n",
    "out-of-range quantity": lambda w, t: (
        HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,99999999999999999999,{t}\n"
    ),
    "unknown warehouse": lambda w, t: HEADER + "\n" + f"NOWHERE,{w.skus[0]},,5,{t}\n",
    "unknown sku": lambda w, t: HEADER + "\n" + f"{w.warehouse},NO-SUCH-SKU,,5,{t}\n",
    "unknown lot": lambda w, t: HEADER + "\n" + f"{w.warehouse},{w.skus[0]},NO-SUCH-LOT,5,{t}\n",
    "lot of another sku": lambda w, t: (
        HEADER + "\n" + f"{w.warehouse},{w.skus[0]},{_lot_of_a_new_sku(w)},5,{t}\n"
    ),
    "padded code": lambda w, t: HEADER + "\n" + f"{w.warehouse}, {w.skus[0]},,5,{t}\n",
    "case-mangled code": lambda w, t: HEADER + "\n" + f"{w.warehouse},{w.skus[0].lower()},,5,{t}\n",
    "as_of missing": lambda w, t: HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,\n",
    "as_of not ISO": lambda w, t: (
        HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,26/11/2026 23:00\n"
    ),
    "as_of without zone": lambda w, t: (
        HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,2026-11-26T23:00:00\n"
    ),
    "as_of mixed": lambda w, t: (
        HEADER
        + "\n"
        + f"{w.warehouse},{w.skus[0]},,5,{t}\n{w.warehouse},{w.skus[1]},,5,2026-01-01T00:00:00Z\n"
    ),
    "as_of in the future": lambda w, t: (
        HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,2999-01-01T00:00:00Z\n"
    ),
    "as_of older than the last feed": lambda w, t: (
        HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,2020-01-01T00:00:00Z\n"
    ),
    "unbalanced quotes": lambda w, t: HEADER + "\n" + f'{w.warehouse},"{w.skus[0]},,5,{t}\n',
    "empty file": lambda w, t: "",
    "header only": lambda w, t: HEADER + "\n",
    "truncated mid-row": lambda w, t: (
        HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,{t}\n{w.warehouse},{w.skus[1]},"
    ),
    "oversized cell": lambda w, t: HEADER + "\n" + f"{w.warehouse},{'X' * 5000},,5,{t}\n",
}
BAD_BYTES = {
    "bad encoding": lambda w, t: (
        (HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,{t}\n").encode() + b"caf\xe9,x,,1,\n"
    ),
    "NUL byte": lambda w, t: (
        (HEADER + "\n" + f"{w.warehouse},{w.skus[0]},,5,{t}\n").encode() + b"\x00\n"
    ),
}


@pytest.mark.parametrize("kind", list(BAD_FEEDS) + list(BAD_BYTES))
def test_a_bad_feed_is_rejected_whole_quarantined_and_changes_nothing(
    world, tasks_db, tmp_path, kind
):
    stamp = now().isoformat()
    body = (
        BAD_FEEDS[kind](world, stamp).encode()
        if kind in BAD_FEEDS
        else BAD_BYTES[kind](world, stamp)
    )
    path = tmp_path / f"bad-{kind.replace(' ', '-')}.csv"
    path.write_bytes(body)
    before = counts(tasks_db)
    quarantined = set(world.quarantine.glob("*")) if world.quarantine.exists() else set()
    with pytest.raises(FeedRejected) as rejected:
        reconcile_flow(erp_file=str(path))
    message = str(rejected.value)
    assert "rejected, nothing applied" in message
    assert counts(tasks_db) == before and staging_tables(tasks_db) == []
    new = set(world.quarantine.glob("*")) - quarantined
    assert any(p.name.endswith(path.name) for p in new) or kind == "empty file"
    reports = [p for p in new if p.name.endswith(".report.txt")]
    assert reports, "a rejected feed leaves a report"
    if kind not in (
        "empty file",
        "header only",
        "wrong delimiter",
        "missing column",
        "extra column",
    ):
        assert "row " in message, message  # names the row


def test_unbalanced_quotes_are_named_on_the_line_where_the_field_opens(world, tasks_db, tmp_path):
    """COPY reports the line where the file ended, still inside the quotes; the row to fix is
    where the quoted field opened (here the first of three), with quotes closed normally after."""
    stamp = now().isoformat()
    rows = [
        f'{world.warehouse},"{world.skus[0]},,5,{stamp}',
        f'{world.warehouse},"{world.skus[1]}",,5,{stamp}',
        f'{world.warehouse},"say ""hi""",,5,{stamp}',
    ]
    path = tmp_path / "open-quote.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(FeedRejected) as rejected:
        reconcile_flow(erp_file=str(path))
    message = str(rejected.value)
    assert "row 1 (line 2)" in message and "never closed (unbalanced quotes)" in message, message


def test_the_feed_can_come_from_an_erp_database_query(
    world, tasks_db, own_admin_db, own_database_url, tmp_path, monkeypatch
):
    from warehouse.settings import get_settings

    rows = wms_rows(tasks_db, world)
    with (
        own_admin_db.session() as s
    ):  # an "ERP" table, in this test's own database (no cangflow role may make one)
        s.execute(
            text(
                "CREATE TABLE IF NOT EXISTS erp_book (warehouse text, sku text, lot text, quantity bigint, as_of timestamptz)"
            )
        )
        s.execute(text("DELETE FROM erp_book"))
        for warehouse, sku, _, qty in rows:
            s.execute(
                text("INSERT INTO erp_book VALUES (:w, :s, NULL, :q, now())"),
                {"w": warehouse, "s": sku, "q": qty + (3 if sku == world.skus[2] else 0)},
            )
    monkeypatch.setenv("CANGFLOW_ERP_URL", own_database_url)
    get_settings.cache_clear()
    try:
        summary = reconcile_flow(
            erp_query="SELECT warehouse, sku, lot, quantity, as_of FROM erp_book"
        )
    finally:
        get_settings.cache_clear()
    assert summary["differences"] == 1 and summary["lines_for_erp"] == 1
    assert own_database_url.split("@")[-1] not in str(summary)


@contextlib.contextmanager
def _export_changes_nothing(tasks_db, monkeypatch, erp_url: str | None):
    """CANGFLOW_ERP_URL set to `erp_url` (unset for None) while the block runs a reconcile whose
    export fails: after it, no stock, order or message has changed, and no feed file is left
    (not even an empty one)."""
    from warehouse.settings import get_settings

    if erp_url is None:
        monkeypatch.delenv("CANGFLOW_ERP_URL", raising=False)
    else:
        monkeypatch.setenv("CANGFLOW_ERP_URL", erp_url)
    get_settings.cache_clear()
    feeds = get_settings().home / "feeds"
    exported = set(feeds.glob("erp-*.csv"))
    before = counts(tasks_db)
    try:
        yield
    finally:
        get_settings.cache_clear()
    assert counts(tasks_db) == before
    assert set(feeds.glob("erp-*.csv")) == exported


def test_an_erp_query_the_erp_database_refuses_is_named_and_not_retried(
    world, tasks_db, own_database_url, monkeypatch
):
    from warehouse.reconcile import feed

    sent = []
    export = feed.export_query

    def counted(url, query, target):
        sent.append(query)
        return export(url, query, target)

    monkeypatch.setattr(feed, "export_query", counted)
    with (
        _export_changes_nothing(tasks_db, monkeypatch, own_database_url),
        pytest.raises(
            feed.QueryRefused, match='refused --erp-query: syntax error at or near "SELEC"'
        ),
    ):
        reconcile_flow(erp_query="SELEC warehouse FROM erp_book")
    assert sent == ["SELEC warehouse FROM erp_book"]  # once: it would be refused again


@pytest.mark.parametrize(
    ("erp_url", "why"),
    [
        ("mysql://erp:hunter2@erp-host/books", "needs a postgresql\\+psycopg:// URL, got mysql://"),
        (None, "--erp-query needs CANGFLOW_ERP_URL"),
    ],
)
def test_an_erp_url_to_fix_fails_at_once_and_is_not_retried(
    world, tasks_db, monkeypatch, erp_url, why
):
    """A deployment whose CANGFLOW_ERP_URL is not PostgreSQL's (or is missing) is a setting to
    fix: the export fails on its first attempt (before: two retries, 10 s apart, for nothing),
    never showing the password, and leaves no feed file."""
    from flows import reconcile as reconcile_module
    from tasks import reconcile as reconcile_tasks
    from warehouse.errors import InvalidArgument
    from warehouse.reconcile import feed
    from warehouse.settings import get_settings

    attempts = []

    def counted_settings():  # the export task's first call, once per attempt
        attempts.append(1)
        return get_settings()

    monkeypatch.setattr(reconcile_tasks, "get_settings", counted_settings)
    # The task itself, its retries and retry rule, without the wait between attempts.
    monkeypatch.setattr(
        reconcile_module,
        "export_erp_query",
        reconcile_tasks.export_erp_query.with_options(retry_delay_seconds=0),
    )
    with (
        _export_changes_nothing(tasks_db, monkeypatch, erp_url),
        pytest.raises(InvalidArgument, match=why) as failed,
    ):
        reconcile_flow(erp_query="SELECT warehouse, sku, lot, quantity, as_of FROM erp_book")
    assert len(attempts) == 1
    assert "hunter2" not in str(failed.value)
    assert isinstance(failed.value, feed.WarehouseError)
