"""Input rules that need no database."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from warehouse.catalog.csv_import import read_rows
from warehouse.errors import InvalidArgument, InvalidQuantity
from warehouse.stock import validation
from warehouse.stock.idempotency import request_hash, validate_key
from warehouse.stock.statements import (
    COUNT_STATEMENT,
    DELTA_STATEMENT,
    SINGLE_ROW_TAKE_STATEMENTS,
    TAKE_STATEMENTS,
)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        -(2**63),
        1.0,
        2.5,
        "3",
        "",
        None,
        True,
        False,
        Decimal("1"),
        2**63,
        10**30,
        [1],
        float("nan"),
    ],
)
def test_quantity_rejects_anything_but_a_positive_int(value):
    with pytest.raises(InvalidQuantity) as caught:
        validation.quantity(value)
    assert repr(value)[:10] in str(caught.value) or "qty=" in str(caught.value)


@pytest.mark.parametrize("value", [1, 7, validation.MAX_QUANTITY])
def test_quantity_accepts_positive_ints_up_to_the_per_call_maximum(value):
    assert validation.quantity(value) == value


@pytest.mark.parametrize("value", [validation.MAX_QUANTITY + 1, 2**63 - 1])
def test_quantity_refuses_more_than_the_per_call_maximum(value):
    with pytest.raises(InvalidQuantity, match="units in one call"):
        validation.quantity(value)


def test_signed_quantity_accepts_negatives_but_not_zero():
    assert validation.quantity(-5, signed=True) == -5
    with pytest.raises(InvalidQuantity):
        validation.quantity(0, signed=True)


def test_count_quantity_may_be_zero_but_not_negative():
    assert validation.quantity(0, allow_zero=True) == 0
    with pytest.raises(InvalidQuantity):
        validation.quantity(-1, allow_zero=True)


def test_quantity_error_names_the_field_and_value():
    with pytest.raises(InvalidQuantity, match=r"line 3: qty='7'"):
        validation.quantity("7", field="line 3: qty")


@pytest.mark.parametrize("value", ["", " SKU1", "SKU1 ", "A\x00B", None, 12, "x" * 65])
def test_codes_are_taken_exactly_or_refused(value):
    with pytest.raises(InvalidArgument):
        validation.code(value, field="sku")


def test_codes_are_case_sensitive_and_not_trimmed():
    assert validation.code("sku-1", field="sku") == "sku-1"


def test_business_time_refuses_naive_datetimes():
    with pytest.raises(InvalidArgument, match="no time zone"):
        validation.business_time(datetime(2026, 1, 1))
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    assert validation.business_time(aware) == aware
    assert validation.business_time(None).tzinfo is not None


def test_request_hash_depends_on_arguments_not_on_their_order():
    first = request_hash("deduct", {"sku": "A", "qty": 1})
    assert first == request_hash("deduct", {"qty": 1, "sku": "A"})
    assert first != request_hash("deduct", {"sku": "A", "qty": 2})
    assert first != request_hash("reserve", {"sku": "A", "qty": 1})


@pytest.mark.parametrize("key", ["", 5, "k" * 201, "a\x00b"])
def test_bad_idempotency_keys_are_refused(key):
    with pytest.raises(InvalidArgument):
        validate_key(key)


def test_statements_are_constant_sql_without_leftover_placeholders():
    for statement in [
        *TAKE_STATEMENTS.values(),
        *SINGLE_ROW_TAKE_STATEMENTS.values(),
        DELTA_STATEMENT,
        COUNT_STATEMENT,
    ]:
        assert "{" not in statement.replace("'{}'", "") and "}" not in statement


def test_catalog_csv_with_wrong_header_is_refused():
    with pytest.raises(InvalidArgument, match="expected code,name,category"):
        read_rows("skus", b"code,name\nA,B\n")


def test_catalog_csv_errors_name_line_column_and_value():
    content = b"sku,code,expires\nS1,L1,2026-13-01\nS1, L2,\nS1,L1,\n"
    with pytest.raises(InvalidArgument) as caught:
        read_rows("lots", content)
    message = str(caught.value)
    assert "line 2, column expires: '2026-13-01' is not a date" in message
    assert "line 3, column code" in message and "' L2'" in message
    assert "line 4: duplicate of line 2" in message


@pytest.mark.parametrize(
    "content, why",
    [
        (b"code,name\xff\n", "not UTF-8"),
        (b"code,name\nA\x00,B\n", "NUL"),
        (b"code,name\n", "no rows"),
        (b'code,name\n"A,B\n', "malformed CSV"),
        (b"code,name\nA,B,C\n", "expected 2 columns"),
    ],
)
def test_catalog_csv_damage_is_refused_whole(content, why):
    with pytest.raises(InvalidArgument, match=why):
        read_rows("warehouses", content)
