"""`cangflow demo` end to end at a small scale, run twice on the same database: the second run
must add nothing (the sample is not loaded again, the burst's keys replay) and every invariant
must hold after each run."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from flows.demo import burst_plan, run_demo
from warehouse.sample import data as sample_data

pytestmark = pytest.mark.integration

SMALL = {"skus": 200, "bins_per_warehouse": 20, "days": 10, "burst_workers": 8, "burst_orders": 60}
DEMO = {"codes": list(sample_data.WAREHOUSES)}

_LEDGER = text("""
    SELECT count(*) FROM stock_movement m JOIN warehouse w ON w.id = m.warehouse_id
    WHERE w.code = ANY (CAST(:codes AS text[]))
""")
# on_hand and reserved of every demo balance row as of each moment of its history: the sum of
# its movements up to and including that moment (peers at the same instant count together).
_NEGATIVE_MOMENTS = text("""
    SELECT count(*) FROM (
        SELECT sum(m.qty) OVER w AS on_hand, sum(m.reserved_qty) OVER w AS reserved
        FROM stock_movement m JOIN warehouse wh ON wh.id = m.warehouse_id
        WHERE wh.code = ANY (CAST(:codes AS text[]))
        WINDOW w AS (PARTITION BY m.balance_id ORDER BY m.occurred_at)
    ) history
    WHERE on_hand < 0 OR reserved < 0 OR reserved > on_hand
""")
_NEGATIVE_NOW = text(
    "SELECT count(*) FROM stock_balance WHERE on_hand < 0 OR reserved < 0 OR reserved > on_hand"
)


def _figure(output: str, label: str) -> int:
    found = re.search(rf"^  {label} +([\d,]+)$", output, re.MULTILINE)
    assert found, f"no {label!r} line in the demo summary:\n{output}"
    return int(found.group(1).replace(",", ""))


def _scalar(db, query) -> int:
    with db.session() as session:
        return session.execute(query, DEMO).scalar_one()


@pytest.fixture(scope="module")
def db(tasks_db, prefect_api):
    """The demo closes history and builds snapshots for the whole database: its own one."""
    return tasks_db


@pytest.fixture(scope="module")
def two_runs(db):
    import warehouse

    owner = warehouse.connect(
        db.url.render_as_string(hide_password=False), role="owner", pool_size=1
    )
    runs = []
    for _ in range(2):
        lines: list[str] = []
        violations = run_demo(db, **SMALL, echo=lines.append, owner=owner)
        runs.append(
            {
                "violations": violations,
                "output": "\n".join(lines),
                "movements": _scalar(db, _LEDGER),
            }
        )
    owner.dispose()
    return runs


def test_demo_holds_every_invariant_on_the_first_and_the_second_run(two_runs):
    assert [run["violations"] for run in two_runs] == [0, 0], [run["output"] for run in two_runs]


def test_demo_works_as_the_app_role(two_runs):
    from warehouse.db.roles import RoleNames

    assert f", as role {RoleNames.from_settings().app}" in two_runs[0]["output"].splitlines()[0]


def test_demo_summary_states_the_violation_count(two_runs):
    for run in two_runs:
        assert "invariants: 0 violations" in run["output"]


def test_demo_runs_the_snapshot_and_rollover_flows_and_shows_their_summaries(two_runs):
    first, second = (run["output"] for run in two_runs)
    built = re.search(
        r"^snapshots: (\d+) day\(s\) built, .*latest snapshot against balances .*: ok$",
        first,
        re.MULTILINE,
    )
    assert built and int(built.group(1)) == SMALL["days"], first
    assert re.search(r"^snapshots: 0 day\(s\) built, .*: ok$", second, re.MULTILINE), second
    assert re.search(r"^rollover: \d+ partition\(s\) created", first, re.MULTILINE), first


def test_demo_runs_the_relay_and_the_warmup_and_shows_the_hit_rate(two_runs):
    first, second = (run["output"] for run in two_runs)
    published = re.search(
        r"^relay: ([\d,]+) message\(s\) published, ([\d,]+) handled", first, re.MULTILINE
    )
    assert published and int(published.group(1).replace(",", "")) > 0, first
    assert re.search(r"^warmup: [\d,]+ key\(s\) from (reads|ledger)", first, re.MULTILINE), first
    rate = re.search(r"^cache: [\d,]+ Zipf-popular reads, hit rate ([\d.]+)%$", first, re.MULTILINE)
    assert rate and float(rate.group(1)) >= 90, first
    # The second run changes no stock: only the first run's ERP order message may be left to publish.
    assert re.search(
        r"^relay: [01] message\(s\) published, 0 handled by the cache consumer",
        second,
        re.MULTILINE,
    ), second


def test_first_run_loads_the_sample_and_the_burst_both_deducts_and_refuses(two_runs):
    first = two_runs[0]["output"]
    assert "already loaded" not in first
    assert _figure(first, "SKUs") == SMALL["skus"]
    assert _figure(first, "bins") == 2 * SMALL["bins_per_warehouse"]
    assert _figure(first, "attempted") == SMALL["burst_orders"]
    assert _figure(first, "succeeded") > 0
    assert _figure(first, "insufficient") > 0  # the plan asks for more than exists, on purpose
    assert _figure(first, "rejected") == 0


def test_second_run_loads_nothing_and_replays_every_applied_key(two_runs):
    first, second = (run["output"] for run in two_runs)
    assert "already loaded, nothing added" in second
    assert two_runs[1]["movements"] == two_runs[0]["movements"]
    assert _figure(second, "succeeded") == 0
    assert _figure(second, "replayed") == _figure(first, "succeeded") + _figure(first, "replayed")
    assert _figure(second, "insufficient") == _figure(first, "insufficient")


def test_sample_history_is_realistic_in_volume_and_never_negative(db, two_runs):
    loaded = _figure(two_runs[0]["output"], "movements")
    assert loaded > 2 * SMALL["days"] * SMALL["skus"] * sample_data.PICKS_PER_SKU_DAY * 0.8
    assert _scalar(db, _NEGATIVE_MOMENTS) == 0
    assert _scalar(db, _NEGATIVE_NOW) == 0


def test_burst_plan_is_the_same_for_the_same_seed_and_repeats_some_keys():
    plan = burst_plan(skus=200, seed=7, orders=60)
    assert plan == burst_plan(skus=200, seed=7, orders=60)
    assert burst_plan(skus=200, seed=7, orders=30) == plan[:30]
    assert len({request.key for request in plan}) < len(plan)
    assert {request.operation for request in plan} == {"deduct", "deduct_order"}


def test_demo_reconciles_a_sample_erp_feed_with_a_few_differences(two_runs):
    first, second = (run["output"] for run in two_runs)
    found = re.search(
        r"^reconciliation: (\d+) difference\(s\), (\d+) order\(s\), (\d+) line\(s\) for the ERP",
        first,
        re.MULTILINE,
    )
    assert found and int(found.group(1)) == 5 and int(found.group(3)) == 5, first
    assert re.search(
        r"^reconciliation: stale, feed \S+ was reconciled before with these settings \(run \d+\)",
        second,
        re.MULTILINE,
    ), second
