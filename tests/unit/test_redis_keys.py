"""Redis key names: the (warehouse, sku) member is JSON whichever way it is built."""

import json

from hypothesis import given
from hypothesis import strategies as st

from warehouse.redis.keys import Keys

TRICKY = ["WH1", "é", 'a"b', "a\\b", "tab\there", "\x7f", "x y", "日本", "[]", ",", "\u2028", ""]


def as_json(warehouse: str, sku: str) -> str:
    return json.dumps([warehouse, sku], separators=(",", ":"))


def test_the_member_of_tricky_codes_is_their_json():
    for warehouse in TRICKY:
        for sku in TRICKY:
            assert Keys.member(warehouse, sku) == as_json(warehouse, sku)


@given(st.text(), st.text())
def test_the_member_of_any_codes_is_their_json_and_parses_back(warehouse, sku):
    member = Keys.member(warehouse, sku)
    assert member == as_json(warehouse, sku)
    assert Keys.parse_member(member) == (warehouse, sku)
