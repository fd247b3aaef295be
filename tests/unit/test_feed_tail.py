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
    sent = b"".join(feed._without_blank_tail(io.BytesIO(body)))
    assert sent == CASES[body]
