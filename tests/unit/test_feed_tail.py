"""A feed that ends in blank lines (an editor's or a spreadsheet's last empty line) loads as the
same feed without them; what else the file holds reaches COPY byte for byte, wherever the
chunks happen to be cut."""

from __future__ import annotations

import io

import pytest

from warehouse.reconcile import feed

CASES = {
    b"h\na,1\n": b"h\na,1",
    b"h\na,1\n\n": b"h\na,1",
    b"h\na,1\n\n  \n\t\n": b"h\na,1",
    b"h\r\na,1\r\n\r\n": b"h\r\na,1",
    b"h\na,1   \n\n": b"h\na,1   ",  # spaces ending the last row are its last field's
    b"h\na,1": b"h\na,1",
    b"h\n\na,1\n": b"h\n\na,1",  # a blank line between rows stays (and COPY refuses it)
    b'h\na,"x\n\n"\n\n': b'h\na,"x\n\n"',  # line ends inside a quoted last field stay
    b"h\na,1\n   b,2\n": b"h\na,1\n   b,2",
    b"\n\n": b"",
}


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
@pytest.mark.parametrize("body", list(CASES))
def test_only_the_blank_tail_is_left_out_wherever_chunks_are_cut(monkeypatch, body, chunk):
    monkeypatch.setattr(feed, "CHUNK", chunk)
    sent = b"".join(feed._without_blank_tail(feed._chunks(io.BytesIO(body))))
    assert sent == CASES[body]


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_a_blank_run_longer_than_the_limit_goes_on_to_copy_which_refuses_it(monkeypatch, chunk):
    monkeypatch.setattr(feed, "CHUNK", chunk)
    monkeypatch.setattr(feed, "MAX_BLANK_TAIL", 8)
    body = b"h\na,1" + b"\n" * 20
    sent = b"".join(feed._without_blank_tail(feed._chunks(io.BytesIO(body))))
    assert sent.startswith(b"h\na,1\n\n\n\n\n\n\n\n\n")  # more than the limit reaches COPY


def test_the_fingerprint_is_of_what_copy_reads(tmp_path):
    plain, tailed = tmp_path / "plain.csv", tmp_path / "tailed.csv"
    plain.write_bytes(b"warehouse,sku,lot,quantity,as_of\nW,S,,1,2026-01-01T00:00:00Z\n")
    tailed.write_bytes(plain.read_bytes() + b"\n \n")
    fingerprints = {feed.inspect(path, max_bytes=10**6).sha256 for path in (plain, tailed)}
    assert (
        len(fingerprints) == 1
    )  # the same feed saved again with a blank tail is reconciled before
