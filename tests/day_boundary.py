"""A test run that must not see the business date change under it (see tests/conftest.py)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta


def wait_for_a_whole_day(margin: timedelta, *, sleep=time.sleep) -> float:
    """Sleep until the next business day begins when fewer than `margin` of this one remain (not
    when CANGFLOW_CLOCK pins the clock: it does not move). The seconds slept."""
    from warehouse.history import calendar
    from warehouse.settings import get_settings

    try:
        if get_settings().clock is not None:
            return 0.0
        now = calendar.now()
        tomorrow = calendar.day_start(calendar.day_of(now) + timedelta(days=1))
    finally:  # read here before any test sets its own environment
        get_settings.cache_clear()
    left = (tomorrow - now).total_seconds()
    if left >= margin.total_seconds():
        return 0.0
    print(
        f"tests: {left:.0f} s left of the business day; waiting for the next one so that no "
        "test sees the date change",
        file=sys.stderr,
        flush=True,
    )
    sleep(left + 1)
    return left + 1
