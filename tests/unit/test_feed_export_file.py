"""An --erp-query export writes a file of its own: two exports in one second (a retry, a second
run) neither overwrite nor, when one fails, remove each other's feed."""

from datetime import datetime

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
