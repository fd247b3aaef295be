"""Checks of caller input that need no database: quantities, codes, timestamps."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from numbers import Integral

from warehouse.errors import HistoryClosed, InvalidArgument, InvalidQuantity
from warehouse.history.partitions import add_months, month_start

BIGINT_MAX = 2**63 - 1
# One call moves at most this many units, and a bin holds at most MAX_BALANCE of a SKU and lot:
# with at most 10,000 lines per order, every sum a stock statement forms stays far inside bigint.
MAX_QUANTITY = 10**12
MAX_BALANCE = 10**15
CODE_MAX_LENGTH = 64


def quantity(
    value: object, *, field: str = "qty", allow_zero: bool = False, signed: bool = False
) -> int:
    """Return `value` as an int or raise InvalidQuantity.

    Quantities are whole units: bools, floats (even 3.0), strings and None are refused rather
    than coerced, because a coerced "3" or 2.9999 in a stock feed is a bug upstream.
    """
    if type(value) is int:  # the usual case, without the slower check of the Integral ABC
        number = value
    elif isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidQuantity(value, field=field, why=f"must be an int, not {type(value).__name__}")
    else:
        number = int(value)
    if abs(number) > BIGINT_MAX:
        raise InvalidQuantity(value, field=field, why="beyond the 64-bit range")
    if abs(number) > MAX_QUANTITY:
        raise InvalidQuantity(
            value, field=field, why=f"more than {MAX_QUANTITY:,} units in one call"
        )
    if number == 0 and not allow_zero:
        raise InvalidQuantity(value, field=field, why="zero changes nothing")
    if number < 0 and not signed:
        raise InvalidQuantity(value, field=field, why="must not be negative")
    return number


def text_value(value: object, *, field: str, max_length: int) -> str:
    """A string PostgreSQL can store as text: valid UTF-8 (no lone surrogates), no NUL byte,
    at most `max_length` characters. Checked here so the driver never sees it."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{field}={value!r} must be a non-empty string")
    if len(value) > max_length:
        raise InvalidArgument(f"{field}={value[:20]!r}... is longer than {max_length} characters")
    if "\x00" in value:
        raise InvalidArgument(
            f"{field}={value[:40]!r} holds a NUL byte, which PostgreSQL text cannot store"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidArgument(
            f"{field}={value[:40]!r} is not valid Unicode text "
            f"(character {error.start + 1}: {value[error.start]!r})"
        ) from None
    return value


def code(value: object, *, field: str) -> str:
    """An item code exactly as stored: no trimming or case folding (a padded code is another code)."""
    value = text_value(value, field=field, max_length=CODE_MAX_LENGTH)
    if value != value.strip():
        raise InvalidArgument(f"{field}={value!r} has leading/trailing blanks")
    return value


def optional_code(value: object, *, field: str) -> str | None:
    return None if value is None else code(value, field=field)


def business_time(value: object, *, field: str = "occurred_at", change: bool = True) -> datetime:
    """A business timestamp; None means now. Naive datetimes are refused: their zone is a guess.
    A change (not a read) must lie between the history floor and the allowed skew ahead."""
    from warehouse.history import calendar

    if value is None:
        return calendar.now()
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{field}={value!r} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{field}={value!r} has no time zone; pass an aware datetime")
    if not change:
        return value
    from warehouse.settings import get_settings

    settings = get_settings()
    floor = history_floor(calendar.today(), settings.retention_months)
    if value < calendar.day_start(floor):
        try:
            local = calendar.day_of(value)
        except OverflowError:  # year 1 west of the zone: its month is as far back anyway
            local = value.date()
        raise HistoryClosed(f"{local.year:04d}-{local.month:02d}", floor=f"{floor:%Y-%m}")
    skew = settings.max_future_skew_s
    if value > calendar.now() + timedelta(seconds=skew):
        raise InvalidArgument(
            f"{field}={value.isoformat()} is more than {skew:,.0f} s in the future "
            "(CANGFLOW_MAX_FUTURE_SKEW_S); business time may be backdated, not postdated"
        )
    return value


def history_floor(today: date, retention_months: int) -> date:
    """The first day of the oldest month the ledger keeps: the rollover retires every month
    before it (`retention.cutoffs`), so a change dated there could never be kept."""
    return add_months(month_start(today), -retention_months)


def reference(value: object, *, field: str = "reference") -> str | None:
    return None if value is None else text_value(value, field=field, max_length=200)
