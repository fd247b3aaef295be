"""The stock statements as they are sent: rendered once, without comments or runs of whitespace."""

from __future__ import annotations

import pytest

from warehouse.stock import statements


def test_rendering_drops_comments_and_whitespace_but_not_sql():
    rendered = statements._render("SELECT 1 AS one -- why it is one\n,\n   2 AS two")
    assert rendered == "SELECT 1 AS one , 2 AS two"
    for sent in statements.RENDERED.values():
        assert "--" not in sent and "\n" not in sent


def test_a_double_minus_that_is_no_comment_stops_the_import_instead_of_eating_the_statement():
    """`-{delta}` with a negative delta makes "--rt.qty": joined into one line, the rest of the
    statement would be a comment."""
    with pytest.raises(ValueError, match="'--' outside a comment"):
        statements._render("SELECT -" + "-rt.qty AS taken FROM rt")
