"""An --erp-query export writes a file of its own: two exports in one second (a retry, a second
run) neither overwrite nor, when one fails, remove each other's feed."""

from datetime import datetime

import pytest

from warehouse.reconcile import feed

MOMENT = datetime(2026, 12, 6, 22, 4, 23)


def test_exports_of_the_same_second_get_files_of_their_own(tmp_path):
    folder = tmp_path / "feeds"
    first = feed.new_export_file(folder, MOMENT)
    first.write_text("warehouse,sku,lot,quantity,as_of\n")
    second = feed.new_export_file(folder, MOMENT)
    third = feed.new_export_file(folder, MOMENT)
    assert [first.name, second.name, third.name] == [
        "erp-20261206T220423.csv",
        "erp-20261206T220423-2.csv",
        "erp-20261206T220423-3.csv",
    ]
    assert first.read_text() == "warehouse,sku,lot,quantity,as_of\n"  # untouched
    assert second.read_bytes() == b"" and third.read_bytes() == b""


def test_an_export_that_fails_before_any_row_leaves_no_file(tmp_path):
    """A URL of another database (a deployment's CANGFLOW_ERP_URL): nothing is exported, and the
    empty file made for it is gone, so a later --feed-dir run cannot take it for the newest feed."""
    target = feed.new_export_file(tmp_path / "feeds", MOMENT)
    with pytest.raises(ValueError):
        feed.export_query("mysql://erp@127.0.0.1/erp", "SELECT 1", target)
    assert list((tmp_path / "feeds").iterdir()) == []
