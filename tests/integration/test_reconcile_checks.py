"""The feed's fast row checks: a cheaper expression must say what the regex it replaced says; a
repeated key is found however its lot is spelt; a valid feed never reaches the detailed query."""

import uuid

import pytest
from sqlalchemy import text

from warehouse.reconcile.checks import NOT_DIGITS_1_TO_13

pytestmark = pytest.mark.integration

QUANTITIES = [
    "1",
    "0",
    "007",
    "1234567890123",
    "12345678901234",
    "",
    " 1",
    "1 ",
    "1\n",
    "\t",
    "1.5",
    "-1",
    "+1",
    "1e3",
    "0x1",
    "abc",
    "١٢",
    "\uff101",  # a full-width zero, then 1
    "1,000",
    None,
]


def test_the_fast_quantity_check_agrees_with_the_regex_on_every_kind_of_value(db):
    with db.session() as s:
        rows = s.execute(
            text(
                f"SELECT quantity, {NOT_DIGITS_1_TO_13} AS fast, "
                "quantity IS NULL OR quantity !~ '^[0-9]{1,13}$' AS regex "
                "FROM unnest(CAST(:values AS text[])) AS quantity"
            ),
            {"values": QUANTITIES},
        ).all()
    assert len(rows) == len(QUANTITIES)
    assert [(r.quantity, r.fast) for r in rows] == [(r.quantity, r.regex) for r in rows]
    assert sum(r.fast for r in rows) == len(QUANTITIES) - 4  # only the four digit strings pass


def test_rows_are_named_by_their_place_in_the_file_past_the_staging_sequence_blocks(
    db, world, tmp_path
):
    """The staging table numbers rows from an identity sequence that hands out blocks of
    numbers (feed._SEQ_CACHE): a bad row after several blocks is still named by its place in
    the file, and so is the duplicate it repeats."""
    from datetime import UTC, datetime

    from warehouse.catalog import csv_import
    from warehouse.reconcile import checks, feed

    sku = world.add_sku()
    stamp = datetime.now(UTC).isoformat()
    rows = feed._SEQ_CACHE * 2 + 500
    with db.session() as s:  # one SKU per row, in one set-based import
        csv_import.import_csv(
            s,
            "skus",
            (
                "code,name,category\n" + "".join(f"{sku}-{n},,\n" for n in range(1, rows + 1))
            ).encode(),
        )
    bad, repeated = feed._SEQ_CACHE * 2 + 7, feed._SEQ_CACHE + 3
    lines = [f"{world.warehouse},{sku}-{n},,1,{stamp}" for n in range(1, rows + 1)]
    lines[bad - 1] = f"{world.warehouse},{sku}-{bad},,1.5,{stamp}"
    lines[rows - 1] = lines[repeated - 1]  # the last row repeats an earlier one
    path = tmp_path / "long.csv"
    path.write_text("warehouse,sku,lot,quantity,as_of\n" + "\n".join(lines) + "\n")
    staging = feed.staging_table(0, "0badfeed")
    with db.session() as s:
        assert feed.load(s, staging, feed.inspect(path, max_bytes=10**9)) == rows
        problems, _, _ = checks.check_rows(s, 0, staging, rows)
        s.execute(text(f"DROP TABLE {feed.quoted(s, staging)}"))
    named = {(p.row, p.column, p.why) for p in problems}
    assert (bad, "quantity", "is fractional; quantities are whole units") in named
    assert (
        rows,
        "warehouse,sku,lot",
        f"repeats row {repeated} (one row per warehouse, sku and lot)",
    ) in named


def _checked(db, path, rows: list[tuple]) -> tuple:
    """check_rows over a feed of `rows` (warehouse, sku, lot as written in the file, quantity),
    as of now, loaded into a staging table of its own (dropped after)."""
    from datetime import UTC, datetime

    from warehouse.reconcile import checks, feed

    stamp = datetime.now(UTC).isoformat()
    path.write_text(
        "warehouse,sku,lot,quantity,as_of\n"
        + "".join(f"{w},{sku},{lot},{qty},{stamp}\n" for w, sku, lot, qty in rows)
    )
    staging = feed.staging_table(0, uuid.uuid4().hex[:8])
    with db.session() as s:
        loaded = feed.load(s, staging, feed.inspect(path, max_bytes=10**6))
        try:
            return checks.check_rows(s, 0, staging, loaded)
        finally:
            s.execute(text(f"DROP TABLE {feed.quoted(s, staging)}"))


@pytest.mark.parametrize(
    "lots",
    [('""', ""), ("", '""'), ("L1", "L1")],
    ids=["empty-then-none", "none-then-empty", "same-lot"],
)
def test_a_repeated_key_is_found_by_the_fast_pass_whatever_its_lot_spelling(
    db, world, tmp_path, lots
):
    """The fast pass counts keys by a hash of warehouse, sku and lot, where no lot (an empty
    CSV field) and an empty one ("") are the same key, as the detailed rule says. A hash that
    told them apart would pass this feed as valid with its SKU booked twice."""
    other, sku = world.add_sku(), world.add_sku(lots={"L1": None})
    problems, total, as_of = _checked(
        db,
        tmp_path / "repeated.csv",
        [
            (world.warehouse, other, "", 1),
            (world.warehouse, sku, lots[0], 5),
            (world.warehouse, sku, lots[1], 6),
        ],
    )
    assert as_of is None and total == 1
    assert [(p.row, p.column, p.why) for p in problems] == [
        (3, "warehouse,sku,lot", "repeats row 2 (one row per warehouse, sku and lot)")
    ]


def test_a_valid_feed_is_proven_valid_by_the_fast_passes_alone(db, world, tmp_path, monkeypatch):
    """The detailed query (one full scan per rule, a sort for the repeats) runs only when a fast
    pass found something. A valid feed, rows without a lot among rows with one, must not reach
    it: a key hash that came out NULL for a row without a lot, say, would send every night's
    feed down the slow path."""
    from warehouse.reconcile import checks

    plain, by_lot = world.add_sku(), world.add_sku(lots={"L1": None, "L2": None})
    monkeypatch.setattr(checks, "_ROW_PROBLEMS", "SELECT 1 / 0 WHERE %(shown)s > 0")
    problems, total, as_of = _checked(
        db,
        tmp_path / "valid.csv",
        [
            (world.warehouse, plain, "", 1),
            (world.warehouse, world.add_sku(), '""', 2),
            (world.warehouse, by_lot, "L1", 3),
            (world.warehouse, by_lot, "L2", 4),
        ],
    )
    assert (problems, total) == ([], 0) and as_of is not None
