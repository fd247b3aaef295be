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


def test_ten_minutes_before_midnight_it_sleeps_into_the_next_day(clock, monkeypatch):
    monkeypatch.setenv("CANGFLOW_BUSINESS_TIMEZONE", "UTC")
    clock(datetime(2026, 12, 6, 23, 50, tzinfo=UTC))
    slept = []
    assert wait_for_a_whole_day(MARGIN, sleep=slept.append) == 601
    assert slept == [601]


def test_midnight_is_the_business_zones(clock, monkeypatch):
    # 23:50 UTC is 07:50 the next morning in Shanghai: a whole day ahead, no wait.
    monkeypatch.setenv("CANGFLOW_BUSINESS_TIMEZONE", "Asia/Shanghai")
    clock(datetime(2026, 12, 6, 23, 50, tzinfo=UTC))
    slept = []
    assert wait_for_a_whole_day(MARGIN, sleep=slept.append) == 0
    # 15:50 UTC is 23:50 there.
    clock(datetime(2026, 12, 6, 15, 50, tzinfo=UTC))
    assert wait_for_a_whole_day(MARGIN, sleep=slept.append) == 601
    assert slept == [601]


def test_an_hour_before_midnight_it_goes_on(clock, monkeypatch):
    monkeypatch.setenv("CANGFLOW_BUSINESS_TIMEZONE", "UTC")
    clock(datetime(2026, 12, 6, 23, 0, tzinfo=UTC))
    slept = []
    assert wait_for_a_whole_day(MARGIN, sleep=slept.append) == 0
    assert slept == []


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
