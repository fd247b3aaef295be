"""Two years in the life (tests/simulation.py): the nightly flow for every day of 26 months in a
warehouse in New York's zone (two DST changes a year, a leap day), with retention of two months,
late movements, a reopened month and a night killed at a random step. After every night the
database agrees with a tally kept independently of it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

import pytest
from sqlalchemy import text

from tests.conftest import _migrated, flows_pointed_at
from tests.simulation import Plan, Simulation, local, set_clock

pytestmark = pytest.mark.integration

PLAN = Plan(start=date(2024, 1, 1), months=26)
ZONE = "America/New_York"


@pytest.fixture(scope="module")
def simulated_db(own_database_url, tmp_path_factory):
    """An empty database whose first clock reading is the simulation's first morning, in its zone."""
    with flows_pointed_at(
        own_database_url,
        tmp_path_factory.mktemp("cangflow-home"),
        CANGFLOW_BUSINESS_TIMEZONE=ZONE,
        CANGFLOW_RETENTION_MONTHS=str(PLAN.retention_months),
        CANGFLOW_HISTORY_GRACE_DAYS=str(PLAN.grace_days),
        CANGFLOW_CLOCK="2000-01-01T00:00:00+00:00",  # replaced below; restored after
    ):
        set_clock(local(PLAN.start, 6))
        database = _migrated(own_database_url)
        yield database
        database.dispose()


def test_twenty_six_months_of_nights_stay_green(simulated_db, prefect_api):
    sim = Simulation(simulated_db, PLAN)
    sim.build_world()
    events = sim.run(progress=print)

    # The run did what it claims, so the checks above were not vacuous.
    assert sim.nights_done == len(sim.days()) >= 26 * 28
    with simulated_db.session() as s:
        states = dict(s.execute(text("SELECT month, state FROM history_month")).all())
    assert sum(state == "archived" for state in states.values()) >= 22, states
    assert events["killed"] == 1 and sim.kill_step is not None
    assert events["reopened"] == 1 and events["closed_again"] == 1
    assert (
        events["engine_nights"] >= 8
    )  # a quarter's first night, the reopening one, the rerun after the kill
    for happened in (
        "late_kept",
        "late_refused_closed",
        "late_refused_retired",
        "refused_closed",
        "refused_retired",
        "refused_unpartitioned",
        "as_of_refused_before_floor",
        "picks",
        "transfers",
        "adjustments",
        "warmed_keys",
    ):
        assert events[happened] > 0, (happened, dict(events))

    # And the engineer's command agrees, on the last morning.
    check = subprocess.run(
        [sys.executable, "-m", "flows.cli", "check"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "books check (full): ok" in check.stdout
