"""Tolerance files: checked whole, stored set-based and all or nothing."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text

from warehouse.reconcile import FeedRejected, tolerances

pytestmark = pytest.mark.integration

HEADER = "sku,category,abs,pct\n"


def _stored(db, skus: list[str], categories: list[str]) -> dict[str, tuple[int, str]]:
    with db.session() as s:
        rows = s.execute(
            text(
                """SELECT coalesce(s.code, t.category), t.abs_qty, CAST(t.pct AS text)
                   FROM reconciliation_tolerance t LEFT JOIN sku s ON s.id = t.sku_id
                   WHERE s.code = ANY (CAST(:skus AS text[])) OR t.category = ANY (CAST(:categories AS text[]))"""
            ),
            {"skus": skus, "categories": categories},
        ).all()
    return {target: (abs_qty, pct) for target, abs_qty, pct in rows}


def _refused(path, rows: str) -> list[tuple]:
    """The problems (row, column, value, why) for which read_tolerances refuses a file of
    HEADER and `rows`."""
    path.write_text(HEADER + rows)
    with pytest.raises(FeedRejected) as rejected:
        tolerances.read_tolerances(path)
    return [(p.row, p.column, p.value, p.why) for p in rejected.value.problems]


@pytest.fixture
def forget(admin_db):
    """Deletes the tolerances a test stored (the app role never deletes them)."""
    made: list[tuple[list[str], list[str]]] = []
    yield lambda skus, categories: made.append((skus, categories))
    with admin_db.session() as s:
        for skus, categories in made:
            s.execute(
                text(
                    """DELETE FROM reconciliation_tolerance t
                       WHERE t.category = ANY (CAST(:categories AS text[]))
                          OR t.sku_id IN (SELECT id FROM sku WHERE code = ANY (CAST(:skus AS text[])))"""
                ),
                {"skus": skus, "categories": categories},
            )


def test_every_unknown_sku_is_named_and_nothing_is_stored(db, world, tmp_path, forget):
    known, category = world.add_sku(), f"cat-{uuid.uuid4().hex[:8]}"
    forget([known], [category])
    path = tmp_path / "tolerances.csv"
    path.write_text(HEADER + f"{known},,1,0\nNO-SUCH-1,,1,0\n,{category},2,5\nNO-SUCH-2,,1,0\n")
    with pytest.raises(FeedRejected) as rejected, db.session() as s:
        tolerances.load_tolerances(s, path)
    assert [(p.row, p.column, p.value) for p in rejected.value.problems] == [
        (2, "sku", "NO-SUCH-1"),
        (4, "sku", "NO-SUCH-2"),
    ]
    assert _stored(db, [known], [category]) == {}


def test_a_repeated_sku_or_category_is_refused_naming_the_row_it_repeats(tmp_path):
    path = tmp_path / "tolerances.csv"
    assert _refused(path, "A,,1,0\n,bolts,2,5\nA,,3,0\n,bolts,2,5\n,nuts,99999999999999,0\n") == [
        (3, "sku", "A", "repeats row 1 (one row per sku or category)"),
        (4, "category", "bolts", "repeats row 2 (one row per sku or category)"),
        (5, "abs", "99999999999999", "is not a whole number from 0 to 1000000000000"),
    ]


def test_a_file_is_stored_whole_and_loading_it_again_updates_the_same_rows(
    db, world, tmp_path, forget
):
    skus = [world.add_sku() for _ in range(30)]
    categories = [f"cat-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    forget(skus, categories)
    path = tmp_path / "tolerances.csv"

    def write(pct: str) -> None:
        path.write_text(
            HEADER
            + "".join(f"{sku},,{n},{pct}\n" for n, sku in enumerate(skus))
            + "".join(f",{category},7,{pct}\n" for category in categories)
        )

    write("1.5")
    with db.session() as s:
        assert tolerances.load_tolerances(s, path) == 33
    first = _stored(db, skus, categories)
    assert first == {
        **{sku: (n, "1.500") for n, sku in enumerate(skus)},
        **dict.fromkeys(categories, (7, "1.500")),
    }
    write("2")
    with db.session() as s:
        assert tolerances.load_tolerances(s, path) == 33
    again = _stored(db, skus, categories)
    assert again == {target: (abs_qty, "2.000") for target, (abs_qty, _) in first.items()}
    with db.session() as s:  # the same rows, updated: no second row per target
        count = s.execute(
            text(
                """SELECT count(*) FROM reconciliation_tolerance t LEFT JOIN sku s ON s.id = t.sku_id
                   WHERE s.code = ANY (CAST(:skus AS text[])) OR t.category = ANY (CAST(:categories AS text[]))"""
            ),
            {"skus": skus, "categories": categories},
        ).scalar_one()
    assert count == 33


def test_a_percentage_finer_than_the_column_is_refused_not_rounded(tmp_path):
    """pct is stored as numeric(7, 3): 0.0004 % would be stored as 0.000 (no tolerance at all)
    and 1.2345 as 1.235, silently. Trailing zeros and exponents that fit are taken."""
    path = tmp_path / "tolerances.csv"
    why = "has more than 3 decimal places (tolerances are kept to 0.001 %)"
    assert _refused(path, "A,,1,0.0004\nB,,1,1.2345\nC,,1,1.5000\nD,,1,1E+2\nE,,1,2.125\n") == [
        (1, "pct", "0.0004", why),
        (2, "pct", "1.2345", why),
    ]
    path.write_text(HEADER + "C,,1,1.5000\nD,,1,1E+2\nE,,1,2.125\n")
    assert [o.pct for o in tolerances.read_tolerances(path)] == [
        Decimal("1.5"),
        Decimal("100"),
        Decimal("2.125"),
    ]


def test_a_nul_byte_in_a_cell_is_named_not_sent_to_the_database(tmp_path):
    """PostgreSQL text cannot hold a NUL byte: a cell with one would fail the load with a
    database error (retried by the task) instead of naming the row and column."""
    assert _refused(tmp_path / "tolerances.csv", "A\x00B,,1,0\n,ca\x00t,1,0\nC,,1,0\n") == [
        (1, "sku", "A\\0B", "holds a NUL byte (shown as \\0)"),
        (2, "category", "ca\\0t", "holds a NUL byte (shown as \\0)"),
    ]
