"""Years of nights: the lifecycle simulation (tests/simulation.py) at a larger size, timed.

    uv run python -m bench.lifecycle [--months 26] [--skus 200] [--bins 20] [--moves-per-day 300]
                                     [--zone America/New_York] [--seed N] [--keep]
                                     [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

It creates its own database (`cangflow_bench_lifecycle_<pid>`, dropped at the end unless --keep),
with the jobs' clock pinned to the simulation's first morning, and runs the simulation: every
day's generated movements and late ones, then the nightly flow (its own code as plain calls, no
Prefect engine: see tests/simulation.py), then every check of the CI test (invariants, each
retained snapshot day against the tally, on_hand(as_of=) samples, month states, refusals).

The floor, measured in the same run after the last night: one hand-written INSERT ... SELECT of
the last snapshot day (the day before's rows plus the day's movements, grouped by key) into a
plain table, committed: the least SQL any nightly has to run. `ratio` is the nightly's median
over that floor's median (the nightly also checks, closes, retires and warms the cache).

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date

from sqlalchemy import text

import warehouse
from bench.common import add_database_arguments, bench_database
from warehouse.db import schema
from warehouse.history.calendar import day_start
from warehouse.settings import get_settings

FLOOR_REPEATS = 20

_FLOOR_TABLE = text("""
CREATE TEMP TABLE floor_snapshot (LIKE stock_snapshot INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
""")
_FLOOR = text("""
INSERT INTO floor_snapshot (snapshot_date, warehouse_id, sku_id, balance_id, location_id, lot_id, on_hand, reserved)
SELECT CAST(:day AS date), warehouse_id, sku_id, balance_id, location_id, lot_id, sum(on_hand), sum(reserved)
FROM (
    SELECT warehouse_id, sku_id, balance_id, location_id, lot_id, on_hand, reserved
    FROM stock_snapshot WHERE snapshot_date = CAST(:day AS date) - 1
    UNION ALL
    SELECT warehouse_id, sku_id, balance_id, location_id, lot_id, qty, reserved_qty
    FROM stock_movement WHERE occurred_at >= :start AND occurred_at < :end
) rows
GROUP BY warehouse_id, sku_id, balance_id, location_id, lot_id
""")


def log(message: str) -> None:
    print(f"[bench.lifecycle] {message}", file=sys.stderr, flush=True)


def floor_seconds(db, day: date) -> list[float]:
    times = []
    with db.engine.connect() as connection:
        connection.execute(_FLOOR_TABLE)
        connection.commit()
        for _ in range(FLOOR_REPEATS):
            started = time.perf_counter()
            connection.execute(
                _FLOOR,
                {
                    "day": day,
                    "start": day_start(day),
                    "end": day_start(date.fromordinal(day.toordinal() + 1)),
                },
            )
            connection.commit()
            times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=26, help="simulated months (default 26)")
    parser.add_argument("--skus", type=int, default=200)
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--moves-per-day", type=int, default=300)
    parser.add_argument("--zone", default="America/New_York", help="the business time zone")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    parser.add_argument("--seed", type=int, default=20261204)
    add_database_arguments(parser)
    args = parser.parse_args(argv)

    from tests.simulation import Plan, Simulation, local, set_clock

    plan = Plan(
        start=args.start,
        months=args.months,
        skus=args.skus,
        bins=args.bins,
        moves_per_day=args.moves_per_day,
        seed=args.seed,
        use_engine=False,
    )
    with bench_database("lifecycle", args.admin_url, keep=args.keep, log=log) as url:
        os.environ.update(
            CANGFLOW_DATABASE_URL=url,
            CANGFLOW_BUSINESS_TIMEZONE=args.zone,
            CANGFLOW_RETENTION_MONTHS=str(plan.retention_months),
            CANGFLOW_HISTORY_GRACE_DAYS=str(plan.grace_days),
            CANGFLOW_REDIS_NAMESPACE=f"bench-lifecycle-{os.getpid()}",
        )
        os.environ["CANGFLOW_HOME"] = home = tempfile.mkdtemp(prefix="cangflow-bench-lifecycle-")
        set_clock(local(plan.start, 6))
        db = warehouse.connect(url, pool_size=4)
        schema.upgrade(db)
        sim = Simulation(db, plan)
        sim.build_world()
        started = time.perf_counter()
        events = sim.run(progress=log)
        total = time.perf_counter() - started
        last_day = sim.days()[-1]
        floor = floor_seconds(db, last_day)
        with db.session() as s:
            movements = s.execute(text("SELECT count(*) FROM stock_movement")).scalar()
        db.dispose()
        shutil.rmtree(home, ignore_errors=True)
    get_settings.cache_clear()
    nightly = sorted(sim.nightly_seconds)
    figures = {
        "months": args.months,
        "nights": sim.nights_done,
        "skus": args.skus,
        "bins": args.bins,
        "moves_per_day": args.moves_per_day,
        "zone": args.zone,
        "movements_retained": movements,
        "seconds_total": round(total, 1),
        "seconds": {k: round(v, 1) for k, v in sim.seconds.items()},
        "nights_per_second": round(sim.nights_done / sim.seconds["nightly"], 2),
        "nightly_p50_s": round(statistics.median(nightly), 4),
        "nightly_p95_s": round(nightly[int(len(nightly) * 0.95)], 4),
        "floor_p50_s": round(statistics.median(floor), 5),
        "ratio": round(statistics.median(nightly) / statistics.median(floor), 1),
        "events": dict(events),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
