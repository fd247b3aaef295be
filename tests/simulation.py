"""Years in the life of a warehouse, in minutes: the nightly flow run for every day of a span of
months, with the jobs' clock pinned (`CANGFLOW_CLOCK`) instead of sleeping.

Each simulated day gets generated movements (receipts, picks, transfers, adjustments) and, now
and then, late ones dated days back. Some land in open months and are kept; some fall in closed
or retired months and must be refused. One month is reopened, corrected and closed again, and on
one night the process running the nightly is killed at a random step and the night run again.
Retention is short, so months close and retire all through the run.

Every movement the API accepts is also written down here, in a tally of our own (`Tally`). After
each night the database is held against it: the invariants, every retained snapshot day,
`on_hand(as_of=)` at sampled moments, the month states, and that closed and retired history
refuses writes through the API and through a raw INSERT.

The nights run the nightly flow's own code. Most go through it as plain calls
(`prefect_engine_bypassed`): the Prefect engine costs about a second a night in API round trips
(measured: 1.0 s per night against a PostgreSQL-backed server, 2.8 s against the test SQLite
one), which would make two years take a quarter of an hour. The first night of every month, the
reopening night and the rerun after the kill go through the engine, as a scheduler runs them.

Used by tests/flows/test_lifecycle.py (small, in CI) and bench/lifecycle.py (larger, timed).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import random
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from time import perf_counter as time_now
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.roles import owner_session
from warehouse import Database, catalog, invariants, stock
from warehouse.errors import HistoryClosed, InvalidArgument
from warehouse.history import calendar
from warehouse.history import closing as history
from warehouse.history.partitions import add_months, month_start
from warehouse.settings import get_settings

logger = logging.getLogger("cangflow.simulation")

NIGHTLY_AT = time(2, 0)  # local time of the night's run (the schedule in deployments/prefect.yaml)
DAY_OPENS, DAY_CLOSES = 8, 19  # local hours in which the day's movements happen


def set_clock(moment: datetime) -> None:
    """Pin the jobs' clock (every process started from here inherits it)."""
    os.environ["CANGFLOW_CLOCK"] = moment.isoformat()
    get_settings.cache_clear()


def local(day: date, hour: int, minute: int = 0) -> datetime:
    """An instant of the business zone's `day`, as an aware datetime."""
    return datetime.combine(day, time(hour, minute), tzinfo=calendar.zone())


def last_day(month: date) -> date:
    return add_months(month, 1) - timedelta(days=1)


# ---------------------------------------------------------------------------------------------
# Running the nightly flow without the Prefect engine


class _Finished:
    def __init__(self, value: Any):
        self._value = value

    def result(self) -> Any:
        return self._value


def _mapped(task, *args, **kwargs) -> list[_Finished]:
    """`Task.map` as our flows use it: list arguments are mapped, the others passed to every call."""
    lists = [i for i, a in enumerate(args) if isinstance(a, (list, tuple))]
    width = min((len(args[i]) for i in lists), default=0)
    calls = []
    for n in range(width):
        call_args = [a[n] if i in lists else a for i, a in enumerate(args)]
        calls.append(_Finished(task.fn(*call_args, **kwargs)))
    return calls


@contextmanager
def prefect_engine_bypassed():
    """Our @flow and @task functions run as the plain functions they decorate: the same code in
    the same order, without API round trips, states, retries or artifacts."""
    import pytest
    from prefect import Flow, Task

    import flows.cache_warmup
    import flows.nightly
    import flows.partition_rollover
    import flows.snapshot
    import tasks.quality
    import tasks.reporting

    def plain(self, *args, return_state=False, wait_for=None, **kwargs):
        return self.fn(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Task, "__call__", plain)
        patch.setattr(Flow, "__call__", plain)
        patch.setattr(Task, "map", _mapped)
        for module in (
            flows.cache_warmup,
            flows.nightly,
            flows.partition_rollover,
            flows.snapshot,
            tasks.quality,
        ):
            patch.setattr(module, "get_run_logger", lambda: logger)
        patch.setattr(tasks.reporting, "create_table_artifact", lambda **_: None)
        patch.setattr(tasks.reporting, "create_markdown_artifact", lambda **_: None)
        yield


# ---------------------------------------------------------------------------------------------
# The tally: every accepted movement, written down independently of the database


@dataclass
class Tally:
    """Movements by (sku, location): their instants (UTC, sorted) and quantities."""

    times: dict[tuple[str, str], list[datetime]] = field(default_factory=lambda: defaultdict(list))
    qtys: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, sku: str, location: str, qty: int, at: datetime) -> None:
        key, at = (sku, location), at.astimezone(UTC)
        where = bisect.bisect_right(self.times[key], at)
        self.times[key].insert(where, at)
        self.qtys[key].insert(where, qty)

    def held(self, sku: str, location: str, *, upto: datetime, inclusive: bool = True) -> int:
        """Units at `upto` (movements at `upto` itself counted when inclusive)."""
        key = (sku, location)
        cut = (bisect.bisect_right if inclusive else bisect.bisect_left)(self.times[key], upto)
        return sum(self.qtys[key][:cut])

    def now(self, sku: str, location: str) -> int:
        return sum(self.qtys[(sku, location)])

    def closing(self, days: list[date]) -> dict[date, dict[tuple[str, str], int]]:
        """The closing stock of each day (movements before the next local midnight), non-zero only."""
        ends = [calendar.day_start(d + timedelta(days=1)) for d in days]
        result: dict[date, dict[tuple[str, str], int]] = {d: {} for d in days}
        for key, times in self.times.items():
            running = list(itertools.accumulate(self.qtys[key]))
            for day, end in zip(days, ends, strict=True):
                cut = bisect.bisect_left(times, end)
                held = running[cut - 1] if cut else 0
                if held:
                    result[day][key] = held
        return result


# ---------------------------------------------------------------------------------------------
# The simulation


_SNAPSHOT_ROWS = text("""
SELECT sn.snapshot_date, s.code AS sku, l.code AS location, sn.on_hand
FROM stock_snapshot sn JOIN sku s ON s.id = sn.sku_id JOIN location l ON l.id = sn.location_id
JOIN warehouse w ON w.id = sn.warehouse_id
WHERE w.code = :warehouse AND sn.on_hand <> 0
""")
_SNAPSHOT_DAYS = text("SELECT snapshot_date FROM snapshot_day ORDER BY 1")
_MONTH_STATES = text("SELECT month, state FROM history_month")
_RAW_RECEIPT = text("""
INSERT INTO stock_movement (occurred_at, movement_type, operation_id, balance_id, warehouse_id, location_id, sku_id, qty)
SELECT :at, 'receipt', 0, b.id, b.warehouse_id, b.location_id, b.sku_id, 1
FROM stock_balance b JOIN warehouse w ON w.id = b.warehouse_id WHERE w.code = :warehouse LIMIT 1
""")


class NightFailed(AssertionError):
    pass


@dataclass
class Plan:
    """What the run holds: its span, its size and where its events fall."""

    start: date
    months: int
    skus: int = 4
    bins: int = 3
    moves_per_day: int = 4
    late_every: int = 3  # a late (backdated) movement every this many days
    seed: int = 20261204
    retention_months: int = 2
    grace_days: int = 7
    reopen_in_month: int = 14  # which month of the run reopens the month before it
    use_engine: bool = True  # False: every night as plain calls (no Prefect API needed, no kill)
    # Nights run through the Prefect engine: the first of every quarter (a retirement night).
    engine_nights: Callable[[date], bool] = lambda day: day.day == 1 and day.month % 3 == 1

    @property
    def end(self) -> date:
        return add_months(self.start, self.months)


@dataclass
class Simulation:
    db: Database
    plan: Plan
    warehouse: str = "SIM"
    tally: Tally = field(default_factory=Tally)
    rng: random.Random = field(init=False)
    skus: list[str] = field(default_factory=list)
    bins: list[str] = field(default_factory=list)
    events: Counter = field(default_factory=Counter)
    reopened: date | None = None
    earliest_day: date | None = None
    kept_months: set[date] = field(default_factory=set)
    kill_night: date | None = None
    kill_step: tuple[int, str] | None = None
    nights_done: int = 0
    seconds: Counter = field(default_factory=Counter)  # trade, nightly, checks
    nightly_seconds: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.rng = random.Random(self.plan.seed)

    # -- the world ----------------------------------------------------------------------------

    def build_world(self) -> None:
        set_clock(local(self.plan.start, 7))
        with self.db.session() as s:
            catalog.ensure_warehouse(s, self.warehouse, "simulated warehouse")
            self.bins = [f"B{n:02d}" for n in range(self.plan.bins)]
            for code in self.bins:
                catalog.ensure_location(s, self.warehouse, code)
            self.skus = [f"SIM-{n:03d}" for n in range(self.plan.skus)]
            for code in self.skus:
                catalog.ensure_sku(s, code)

    def days(self) -> list[date]:
        return [
            self.plan.start + timedelta(days=n)
            for n in range((self.plan.end - self.plan.start).days)
        ]

    # -- a day's movements ----------------------------------------------------------------------

    def _apply(
        self, change: Callable, moves: list[tuple[str, str, int]], at: datetime, **kwargs
    ) -> bool:
        """Run one stock change in its own transaction; tally it when it is accepted."""
        with self.db.session() as s:
            change(s, warehouse=self.warehouse, occurred_at=at, **kwargs)
        for sku, location, qty in moves:
            self.tally.add(sku, location, qty, at)
        day = calendar.day_of(at)
        self.earliest_day = min(day, self.earliest_day or day)
        self.kept_months.add(month_start(day))
        return True

    def trade(self, day: date) -> None:
        """The day's generated movements, in time order; the clock follows them."""
        minutes = sorted(
            self.rng.randrange(DAY_OPENS * 60, DAY_CLOSES * 60)
            for _ in range(self.plan.moves_per_day)
        )
        for minute in minutes:
            at = local(day, minute // 60, minute % 60)
            set_clock(at)
            sku, where = self.rng.choice(self.skus), self.rng.choice(self.bins)
            held = self.tally.now(sku, where)
            roll = self.rng.random()
            if roll < 0.45 or held == 0:
                qty = self.rng.randint(1, 40)
                self._apply(
                    stock.receive, [(sku, where, qty)], at, sku=sku, qty=qty, location=where
                )
                self.events["receipts"] += 1
            elif roll < 0.8:
                qty = self.rng.randint(1, held)
                self._apply(
                    stock.deduct, [(sku, where, -qty)], at, sku=sku, qty=qty, location=where
                )
                self.events["picks"] += 1
            elif roll < 0.92:
                to = self.rng.choice([b for b in self.bins if b != where])
                qty = self.rng.randint(1, held)
                self._apply(
                    stock.transfer,
                    [(sku, where, -qty), (sku, to, qty)],
                    at,
                    sku=sku,
                    qty=qty,
                    location=where,
                    to_location=to,
                )
                self.events["transfers"] += 1
            else:
                qty = self.rng.randint(-min(held, 5), 5) or 1
                self._apply(
                    stock.adjust,
                    [(sku, where, qty)],
                    at,
                    sku=sku,
                    qty=qty,
                    location=where,
                    reason="cycle count difference",
                )
                self.events["adjustments"] += 1

    # -- what the months should be ----------------------------------------------------------------

    def floor(self, today: date) -> date:
        return add_months(month_start(today), -self.plan.retention_months)

    def expected_states(self, today: date) -> dict[date, str]:
        """The state of every month with a ledger partition after the nightly that ran on
        `today`: closed once past its grace, retired once below the floor."""
        floor, states = self.floor(today), {}
        for month in sorted(self.partitioned):
            if month < floor:
                states[month] = "archived"
            elif last_day(month) < today - timedelta(days=self.plan.grace_days):
                states[month] = "closed"
        return {m: state for m, state in states.items() if m <= today}

    @property
    def partitioned(self) -> set[date]:
        """Months with a ledger partition: from the month before the first night (the rollover
        premakes last month), and any earlier month a late movement was kept in."""
        return (
            {add_months(month_start(self.plan.start), -1)}
            | self.kept_months
            | {add_months(month_start(self.plan.start), n) for n in range(self.plan.months + 1)}
        )

    @property
    def chain_start(self) -> date:
        """The first snapshot day: that of the oldest movement kept."""
        return min(self.plan.start, self.earliest_day or self.plan.start)

    def refusal_for(self, at: datetime, today: date) -> str | None:
        """Why a change dated `at` must be refused today (after today's nightly), or None."""
        month = month_start(calendar.day_of(at))
        if month < self.floor(today):
            return "retired"
        states = self.expected_states(today)
        if states.get(month) == "closed" and month != self.reopened:
            return "closed"
        if month not in self.partitioned and any(
            state == "closed" and m > month for m, state in states.items()
        ):
            return "closed"  # a month without a partition, older than a closed one (migration 0010)
        return None

    # -- late movements --------------------------------------------------------------------------

    def late_receipt(self, day: date, last_nightly: date) -> None:
        """A receipt dated days back: kept when its month is open, refused when closed or retired."""
        back = self.rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 75, 100])
        at = local(day - timedelta(days=back), 11, self.rng.randrange(60))
        sku, where = self.rng.choice(self.skus), self.rng.choice(self.bins)
        qty = self.rng.randint(1, 9)
        expected = self.refusal_for(at, last_nightly)
        try:
            self._apply(
                stock.receive,
                [(sku, where, qty)],
                at,
                sku=sku,
                qty=qty,
                location=where,
                reference=f"late {back}d",
            )
        except HistoryClosed as refused:
            if expected is None:
                raise NightFailed(
                    f"{day}: a receipt dated {at} ({back} days back) was refused, "
                    f"but its month is open: {refused}"
                ) from refused
            self.events[f"late_refused_{expected}"] += 1
            return
        if expected is not None:
            raise NightFailed(
                f"{day}: a receipt dated {at} ({back} days back) was accepted into {expected} history"
            )
        self.events["late_kept"] += 1

    def reopen_and_correct(self, day: date) -> None:
        """Reopen last month (closed by now), book a correction dated in it; the nightly must
        rebuild the snapshots from there and close the month again."""
        month = add_months(month_start(day), -1)
        with owner_session(self.db) as s:  # `cangflow history reopen` runs as the owner
            history.reopen_month(s, month, reason="simulation: a count found a missing pallet")
        self.reopened = month
        at = local(last_day(month) - timedelta(days=3), 15)
        sku, where = self.skus[0], self.bins[0]
        self._apply(
            stock.adjust,
            [(sku, where, 7)],
            at,
            sku=sku,
            qty=7,
            location=where,
            reason="found in a reopened month",
        )
        self.events["reopened"] += 1

    # -- the night -------------------------------------------------------------------------------

    def run_nightly(self, night: date, *, engine: bool) -> dict:
        from flows.nightly import nightly_flow

        set_clock(local(night, NIGHTLY_AT.hour, NIGHTLY_AT.minute))
        if engine:
            self.events["engine_nights"] += 1
            return nightly_flow()
        with prefect_engine_bypassed():
            return nightly_flow()

    def killed_nightly(self, night: date) -> None:
        """The nightly in a process of its own, killed (SIGKILL) at a random task step."""
        step, when = self.rng.randint(1, 14), self.rng.choice(["before", "after"])
        self.kill_night, self.kill_step = night, (step, when)
        set_clock(local(night, NIGHTLY_AT.hour, NIGHTLY_AT.minute))
        env = dict(os.environ)
        env.update(_prefect_api_env())
        child = subprocess.run(
            [sys.executable, "-m", "tests.simulation", "killed-nightly", str(step), when],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if child.returncode != -signal.SIGKILL:
            raise NightFailed(
                f"{night}: the nightly to be killed at step {step} ({when}) ended with "
                f"{child.returncode} instead:\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}"
            )
        self.events["killed"] += 1

    def night(self, day: date, *, kill: bool = False) -> None:
        """After `day`: its nightly (the next morning), then every check."""
        night = day + timedelta(days=1)
        if kill:
            self.killed_nightly(night)
        engine = self.plan.use_engine and (
            kill or self.plan.engine_nights(night) or self.reopened is not None
        )
        started = time_now()
        result = self.run_nightly(night, engine=engine)
        self.nightly_seconds.append(time_now() - started)
        self.seconds["nightly"] += self.nightly_seconds[-1]
        if not (result["snapshot"]["ok"] and result["books"]["ok"]):
            raise NightFailed(f"night of {night}: {result}")
        self.events["warmed_keys"] += result["warmup"]["keys"]
        if self.reopened is not None:
            self.events["closed_again"] += 1
            self.reopened = None
        self.nights_done += 1
        started = time_now()
        self.check(night)
        self.seconds["checks"] += time_now() - started

    # -- the checks ------------------------------------------------------------------------------

    def check(self, night: date) -> None:
        with self.db.session() as s:
            violations = invariants.check(s)
            if violations:
                raise NightFailed(f"night of {night}: invariants broken: {violations[:5]}")
            self.check_months(s, night)
            self.check_snapshots(s, night)
            self.check_as_of(s, night)
        self.check_refusals(night)

    def check_months(self, s, night: date) -> None:
        found = {m: state for m, state in s.execute(_MONTH_STATES).all() if state != "reopened"}
        expected = self.expected_states(night)
        if found != expected:
            wrong = {
                m: (found.get(m), expected.get(m))
                for m in sorted(set(found) | set(expected))
                if found.get(m) != expected.get(m)
            }
            raise NightFailed(
                f"night of {night}: month states (database, expected) differ: {wrong}"
            )

    def check_snapshots(self, s, night: date) -> None:
        days = list(s.execute(_SNAPSHOT_DAYS).scalars())
        first = max(add_months(self.floor(night), -1), self.chain_start)
        expected_days = [first + timedelta(days=n) for n in range((night - first).days)]
        if days != expected_days:
            raise NightFailed(
                f"night of {night}: snapshot days {days[:1]}..{days[-1:]} ({len(days)}), "
                f"expected {expected_days[:1]}..{expected_days[-1:]} ({len(expected_days)})"
            )
        found: dict[date, dict[tuple[str, str], int]] = {d: {} for d in days}
        for row in s.execute(_SNAPSHOT_ROWS, {"warehouse": self.warehouse}):
            found[row.snapshot_date][(row.sku, row.location)] = row.on_hand
        closing = self.tally.closing(days)
        for day in days:
            if found[day] != closing[day]:
                raise NightFailed(
                    f"night of {night}: the snapshot of {day} is {found[day]}, the tally says "
                    f"{closing[day]}; {self._explain(s, day, found[day], closing[day])}"
                )

    def _explain(self, s, day: date, found: dict, tallied: dict) -> str:
        """What the database knows about the keys that differ: the day's build and scan marks,
        the dirty days, the activity in this database, and the keys' movements dated up to the day."""
        keys = [k for k in set(found) | set(tallied) if found.get(k) != tallied.get(k)]
        built = s.execute(
            text(
                "SELECT watermark, checked_upto, built_at, verified_at FROM snapshot_day "
                "WHERE snapshot_date = :d"
            ),
            {"d": day},
        ).one()
        dirty = list(
            s.execute(text("SELECT snapshot_date, reason FROM snapshot_dirty ORDER BY 1")).all()
        )
        activity = list(
            s.execute(
                text(
                    "SELECT application_name, state, xact_start, left(query, 80) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
                )
            ).all()
        )
        moves = []
        for sku, location in keys:
            moves += s.execute(
                text("""
                SELECT m.id, s.code, l.code, m.movement_type, m.qty, m.occurred_at, m.recorded_at FROM stock_movement m
                JOIN sku s ON s.id = m.sku_id JOIN location l ON l.id = m.location_id
                WHERE s.code = :sku AND l.code = :location AND m.occurred_at < :end AND m.recorded_at >= :since
                ORDER BY m.recorded_at"""),
                {
                    "sku": sku,
                    "location": location,
                    "end": calendar.day_start(day + timedelta(days=1)),
                    "since": built.watermark - timedelta(days=2),
                },
            ).all()
        return (
            f"day {day} built {built}; dirty {dirty}; open transactions {activity}; "
            f"movements dated up to it, recorded from 2 days before its watermark: {[tuple(m) for m in moves]}"
        )

    def check_as_of(self, s, night: date) -> None:
        now = calendar.now()
        floor_start = calendar.day_start(self.floor(night))
        span = (now - floor_start).total_seconds()
        samples = [
            floor_start + timedelta(seconds=self.rng.uniform(0, span)),
            now - timedelta(seconds=self.rng.uniform(0, 3 * 86400)),
        ]
        for at in samples:
            sku = self.rng.choice(self.skus)
            found = stock.on_hand(s, warehouse=self.warehouse, sku=sku, as_of=at)
            tallied = sum(self.tally.held(sku, b, upto=at) for b in self.bins)
            if found != tallied:
                raise NightFailed(
                    f"night of {night}: on_hand({sku}, as_of={at}) = {found}, the tally says {tallied}"
                )
        self.events["as_of_checked"] += len(samples)
        retired = s.execute(
            text("SELECT max(month) FROM history_month WHERE state = 'archived'")
        ).scalar()
        if retired is not None:
            before = calendar.day_start(retired) + timedelta(days=self.rng.randrange(28), hours=12)
            try:
                value = stock.on_hand(s, warehouse=self.warehouse, sku=self.skus[0], as_of=before)
            except InvalidArgument:
                self.events["as_of_refused_before_floor"] += 1
            else:
                raise NightFailed(
                    f"night of {night}: on_hand(as_of={before}) in retired history answered {value}"
                )

    def check_refusals(self, night: date) -> None:
        """Closed and retired history refuse a change through the API and through raw SQL."""
        states = self.expected_states(night)
        targets = {}
        closed = [m for m, state in states.items() if state == "closed"]
        retired = [m for m, state in states.items() if state == "archived"]
        if closed:
            targets["closed"] = (local(max(closed) + timedelta(days=9), 10), "CGH01")
        if retired:
            targets["retired"] = (local(max(retired) + timedelta(days=9), 10), "CGH02")
        unmade = add_months(min(self.partitioned), -1)
        if closed and unmade >= self.floor(night):
            targets["unpartitioned"] = (local(unmade + timedelta(days=9), 10), "CGH03")
        for kind, (at, sqlstate) in targets.items():
            try:
                with self.db.session() as s:
                    stock.receive(
                        s,
                        warehouse=self.warehouse,
                        sku=self.skus[0],
                        qty=1,
                        location=self.bins[0],
                        occurred_at=at,
                    )
            except HistoryClosed:
                pass
            else:
                raise NightFailed(
                    f"night of {night}: the API accepted a receipt dated {at} in {kind} history"
                )
            try:
                with self.db.session() as s:
                    s.execute(_RAW_RECEIPT, {"at": at, "warehouse": self.warehouse})
            except DBAPIError as refused:
                if refused.orig.sqlstate != sqlstate:
                    raise NightFailed(
                        f"night of {night}: a raw INSERT dated {at} in {kind} history failed "
                        f"with {refused.orig.sqlstate}, not {sqlstate}: {refused.orig}"
                    ) from refused
            else:
                raise NightFailed(
                    f"night of {night}: the database took a raw INSERT dated {at} in {kind} history"
                )
            self.events[f"refused_{kind}"] += 2

    # -- the whole run ---------------------------------------------------------------------------

    def run(
        self,
        *,
        kill_between: tuple[float, float] | None = (0.3, 0.7),
        progress: Callable[[str], None] | None = None,
    ) -> Counter:
        days = self.days()
        kill_at = None
        if kill_between and self.plan.use_engine:
            low, high = (int(len(days) * f) for f in kill_between)
            kill_at = days[self.rng.randrange(low, high)]
        reopen_day = add_months(self.plan.start, self.plan.reopen_in_month) + timedelta(days=14)
        last_nightly = self.plan.start
        for number, day in enumerate(days, 1):
            started = time_now()
            self.trade(day)
            self.seconds["trade"] += time_now() - started
            if day == reopen_day:
                self.reopen_and_correct(day)
            if number % self.plan.late_every == 0:
                self.late_receipt(day, last_nightly)
            self.night(day, kill=day == kill_at)
            last_nightly = day + timedelta(days=1)
            if progress and (day + timedelta(days=1)).day == 1:
                progress(f"{day:%Y-%m} done: {self.nights_done} nights, {dict(self.events)}")
        return self.events


def _prefect_api_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return {"PREFECT_API_URL": url} if url else {}


def _killed_nightly(step: int, when: str) -> None:
    """Run the nightly through the Prefect engine and SIGKILL this process at task call `step`
    (before the task runs, or after it returned and committed)."""
    from prefect import Task

    from flows.nightly import nightly_flow

    calls = itertools.count(1)
    original = Task.__call__

    def counted(self, *args, **kwargs):
        number = next(calls)
        if number == step and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(self, *args, **kwargs)
        if number == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    Task.__call__ = counted
    nightly_flow()


if __name__ == "__main__":
    if sys.argv[1:2] == ["killed-nightly"]:
        _killed_nightly(int(sys.argv[2]), sys.argv[3])
