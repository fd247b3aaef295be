"""The feed's fast row checks: a cheaper expression must say what the regex it replaced says."""

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
