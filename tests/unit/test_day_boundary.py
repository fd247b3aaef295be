"""A CI run begun near the end of the business day waits for the next one, so that the tests
building history relative to "today" never see the date change under them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.day_boundary import wait_for_a_whole_day
from warehouse.history import calendar
from warehouse.settings import get_settings

MARGIN = timedelta(minutes=25)


@pytest.fixture
def clock(monkeypatch):
    """Set the real clock's reading (calendar.now) without pinning CANGFLOW_CLOCK."""
    monkeypatch.delenv("CANGFLOW_CLOCK", raising=False)
    get_settings.cache_clear()
    yield lambda moment: monkeypatch.setattr(calendar, "now", lambda: moment)
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("zone", "moment", "wait"),
    [
        ("UTC", datetime(2026, 12, 6, 23, 50, tzinfo=UTC), 601),  # sleeps into the next day
        ("UTC", datetime(2026, 12, 6, 23, 0, tzinfo=UTC), 0),  # an hour before: goes on
        # Midnight is the business zone's: 23:50 UTC is 07:50 the next morning in Shanghai,
        # a whole day ahead; 15:50 UTC is 23:50 there.
        ("Asia/Shanghai", datetime(2026, 12, 6, 23, 50, tzinfo=UTC), 0),
        ("Asia/Shanghai", datetime(2026, 12, 6, 15, 50, tzinfo=UTC), 601),
    ],
    ids=["utc-10-min-before", "utc-an-hour-before", "shanghai-morning", "shanghai-10-min-before"],
)
def test_a_run_this_close_to_the_business_midnight_sleeps_past_it(
    clock, monkeypatch, zone, moment, wait
):
    monkeypatch.setenv("CANGFLOW_BUSINESS_TIMEZONE", zone)
    clock(moment)
    slept = []
    assert wait_for_a_whole_day(MARGIN, sleep=slept.append) == wait
    assert slept == ([wait] if wait else [])


def test_a_pinned_clock_never_waits(monkeypatch):
    monkeypatch.setenv("CANGFLOW_CLOCK", "2026-12-06T23:59:00+00:00")
    get_settings.cache_clear()
    try:
        slept = []
        assert wait_for_a_whole_day(MARGIN, sleep=slept.append) == 0
        assert slept == []
    finally:
        monkeypatch.delenv("CANGFLOW_CLOCK")
        get_settings.cache_clear()
