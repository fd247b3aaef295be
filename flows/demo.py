"""`cangflow demo`: migrate, load a realistic sample, run a burst of concurrent deductions, and
show that every invariant still holds.

Why it looks like this: the demo is the first thing a new engineer runs, so it must work on an
empty embedded database, finish in well under a minute and be safe to run again. The burst is
planned from the seed alone (not from what the database holds), and every request carries an
idempotency key derived from the run's parameters: a second run sends the same requests with
the same keys and gets the first run's answers back instead of deducting twice. Within one run
some requests are sent twice on purpose, as a client retrying after a timeout would.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import warehouse
from warehouse import Database, invariants, stock
from warehouse.db import retry, schema
from warehouse.errors import InsufficientStock, WarehouseError
from warehouse.sample import data as sample_data

HOT_SKUS = 20  # single-line picks go to the busiest SKUs, where workers contend for rows
OVERSIZED_QTY = 1_000_000  # more than any sample row holds: the refusal is the point
OVERSIZED_EVERY = 20  # one request in 20 asks for more than there is
REPLAY_EVERY = 10  # one request in 10 repeats an earlier one, key and all


@dataclass(frozen=True)
class BurstRequest:
    operation: str  # "deduct" (one line, FEFO across bins and lots) or "deduct_order"
    key: str
    warehouse: str
    lines: tuple[tuple[str, int], ...]


@dataclass
class BurstResult:
    workers: int
    seconds: float
    # Succeeded, replayed, insufficient, rejected.
    outcomes: Counter = field(default_factory=Counter)
    rejections: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return sum(self.outcomes.values())

    @property
    def per_second(self) -> float:
        return self.attempted / self.seconds if self.seconds else 0.0


def run_demo(
    db: Database,
    *,
    skus: int = 5000,
    bins_per_warehouse: int = 300,
    days: int = 90,
    burst_workers: int = 16,
    burst_orders: int = 400,
    seed: int = 7,
    echo: Callable[[str], None] = print,
    flows: bool = True,
    owner: Database | None = None,
) -> int:
    """Run the whole demo against `db` (the app role: warehouse.db.roles), migrating and making
    partitions with `owner` (default `db`); returns the number of invariant violations found.

    With `flows`, the snapshot and partition-rollover flows then run as Prefect flows (on the
    database the settings name, which the CLI's `db` is) and their summaries are shown."""
    echo(f"cangflow demo on {db!r}, as role {db.acting_role()}")
    owner = owner or db
    echo(f"migrating: at revision {schema.upgrade(owner)}")
    echo(
        f"loading the sample ({skus:,} SKUs, {bins_per_warehouse:,} bins per warehouse, {days} days) ..."
    )
    with owner.session() as session:
        sample_data.prepare(session, days=days)
    with db.session() as session:
        sample = sample_data.load_sample(
            session,
            skus=skus,
            bins_per_warehouse=bins_per_warehouse,
            days=days,
            seed=seed,
            progress=echo,
        )
    if sample.already_loaded:
        echo("  already loaded: nothing added")
    else:
        with owner.session() as session:
            sample_data.analyze(session)
    echo(f"burst: {burst_orders} deduction requests on {burst_workers} workers ...")
    burst = run_burst(
        db, burst_plan(skus=skus, seed=seed, orders=burst_orders), workers=burst_workers
    )
    with db.session() as session:
        top = sample_data.top_on_hand(session, per_warehouse=5)
        violations = invariants.check(session)
    for line in summary_lines(sample, burst, top, violations):
        echo(line)
    if flows:
        runs = run_flows(echo)
        for line in where_to_look(runs):
            echo(line)
    return len(violations)


def where_to_look(runs: list) -> list[str]:
    """The closing lines: the flow runs this demo made and where to look at them."""
    from flows.console import table_lines
    from flows.runs import ui_base

    base = ui_base()
    lines = ["", f"Prefect runs ({len(runs)})" + (f", in the UI at {base}:" if base else ":")]
    rows = [
        {"flow": r.flow, "run": r.name, "state": r.state} | ({"address": r.url} if base else {})
        for r in runs
    ]
    lines += table_lines(rows)
    if not base:
        lines.append(
            "These runs went to a temporary Prefect server that stops with this command. "
            "Run `cangflow server start` first to keep them and look at them in the UI."
        )
    return lines


def run_flows(echo: Callable[[str], object]) -> list:
    """The batch flows, in the order the nightly runs them; returns their runs (RunRecord)."""
    from flows.partition_rollover import rollover_flow
    from flows.runs import run_flow
    from flows.snapshot import snapshot_flow

    runs = []

    def run(flow, **parameters):
        result, record = run_flow(flow, **parameters)
        runs.append(record)
        return result

    echo("snapshot flow ...")
    shown = run(snapshot_flow)
    echo(
        f"snapshots: {shown['days_built']} day(s) built, {shown['rows']:,} rows, "
        f"{len(shown['dirty_rebuilt'])} dirty day(s) rebuilt, {shown['seconds']} s; {shown['latest_check']}"
    )
    echo("partition rollover flow ...")
    rolled = run(rollover_flow)
    echo(
        f"rollover: {len(rolled['partitions_created'])} partition(s) created, "
        f"{rolled['rows_moved_from_default']} row(s) moved out of default, "
        f"months closed: {', '.join(rolled['months_closed']) or 'none'}, "
        f"partitions retired: {len(rolled['partitions_retired'])}, {rolled['seconds']} s"
    )
    for month, why in rolled["months_left_open"].items():
        echo(f"  {month} stays open: {why}")
    from flows.cache_warmup import warmup_flow
    from flows.relay import relay_flow

    echo("outbox relay flow ...")
    relayed = run(relay_flow)
    echo(
        f"relay: {relayed['published']:,} message(s) published, {relayed['handled']:,} handled by the cache "
        f"consumer, {relayed['messages_pruned']:,} pruned"
    )
    echo("cache warmup flow ...")
    warmed = run(warmup_flow, top=WARM_TOP)
    echo(f"warmup: {warmed['keys']:,} key(s) from {warmed['source']} in {warmed['seconds']} s")
    rate, reads = read_through_cache()
    echo(f"cache: {reads:,} Zipf-popular reads, hit rate {rate:.1%}")
    reconcile_sample(echo, run)
    return runs


def reconcile_sample(echo: Callable[[str], object], run) -> None:
    """An ERP feed of the demo warehouses as of today's business midnight with a few SKUs booked
    off, reconciled with the WMS as the truth: adjustment orders for the ERP. The feed is the
    same on a second run, which then finds it reconciled already: stale, as a real nightly
    without a new feed would be."""
    from flows.reconcile import reconcile_flow
    from tasks.database import database
    from warehouse.history import calendar
    from warehouse.settings import get_settings

    today = calendar.today()
    as_of = calendar.day_start(today).astimezone(calendar.zone())
    folder = get_settings().home / "feeds"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"demo-erp-{today:%Y%m%d}.csv"
    with database().session() as session:
        rows = sample_data.erp_feed(session, path, as_of=as_of, differences=5)
    echo(f"ERP reconciliation of {path} ({rows:,} rows, 5 SKUs booked off) ...")
    done = run(reconcile_flow, erp_file=str(path))
    echo(reconciliation_line(done))


def reconciliation_line(done: dict) -> str:
    """The demo's one line about its reconciliation run (its summary `done`). Lines the
    blast-radius brake held are said to be waiting, with the command that releases them: a
    demo on few SKUs differs in a large share of them and is braked."""
    if done["status"] == "stale":
        return f"reconciliation: stale, {done['stale']}"
    line = (
        f"reconciliation: {done['differences']} difference(s), {done['orders']} order(s), "
        f"{done['lines_for_erp']} line(s) for the ERP"
    )
    if done.get("held"):
        releases = "applies them" if done["truth"] == "erp" else "sends them"
        line += (
            f", {done['held']} held by the brake ({done['brake']}): "
            f"cangflow adjustments approve --run {done['run_id']} {releases}"
        )
    return line + ", WMS stock unchanged"


WARM_TOP = 1000
CACHE_READS = 5000


def read_through_cache() -> tuple[float, int]:
    """Reads as a busy pick screen makes them (popular SKUs far more often), through the cache."""
    from tasks.cache import stock_cache
    from warehouse.errors import UnknownItem
    from warehouse.metrics import sinks as metrics

    cache = stock_cache()
    rng = random.Random("cangflow-demo-reads")
    with cache.db.session() as session:
        pairs = sample_data.most_moved_pairs(session, limit=WARM_TOP)
    if not pairs:
        return 0.0, 0
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(pairs))]
    seen = metrics.RecordingMetrics()
    with metrics.use(seen):
        for warehouse_code, sku in rng.choices(pairs, weights=weights, k=CACHE_READS):
            with contextlib.suppress(UnknownItem):
                cache.available(warehouse=warehouse_code, sku=sku)
    hits = seen.value("cangflow_cache_hits_total", level="l1") + seen.value(
        "cangflow_cache_hits_total", level="l2"
    )
    return hits / CACHE_READS, CACHE_READS


def burst_plan(*, skus: int, seed: int, orders: int) -> list[BurstRequest]:
    """The burst's requests, a pure function of the seed and the catalogue size.

    Request i is the same however many are planned, so its key always means the same request.
    """
    rng = random.Random(f"cangflow-demo-burst-{seed}-{skus}")
    hot = sample_data.popular_skus(skus, seed, HOT_SKUS)
    codes = [sample_data.SKU_CODE.format(i + 1) for i in range(skus)]
    cumulative = list(itertools.accumulate(sample_data.popularity(skus, seed)))
    plan: list[BurstRequest] = []
    for i in range(orders):
        if i % REPLAY_EVERY == REPLAY_EVERY - 1:
            plan.append(rng.choice(plan))  # a client retrying: same key, same arguments
            continue
        if rng.random() < 0.5:
            operation, lines = "deduct", [(rng.choice(hot), rng.randint(1, 5))]
        else:
            count = rng.randint(3, 10)
            operation = "deduct_order"
            lines = [
                (sku, rng.randint(1, 4))
                for sku in rng.choices(codes, cum_weights=cumulative, k=count)
            ]
        if i % OVERSIZED_EVERY == OVERSIZED_EVERY - 2:
            lines[0] = (lines[0][0], OVERSIZED_QTY)
        key = f"demo-s{seed}-n{skus}-{i:05d}"
        plan.append(BurstRequest(operation, key, rng.choice(sample_data.WAREHOUSES), tuple(lines)))
    return plan


def run_burst(db: Database, plan: list[BurstRequest], *, workers: int) -> BurstResult:
    """Send `plan` from `workers` threads at once, each request in its own retried transaction.

    The burst gets its own engine so that every worker holds a connection of its own.
    """
    burst_db = warehouse.connect(db.url.render_as_string(hide_password=False), pool_size=workers)
    rejections: list[str] = []

    def send(request: BurstRequest) -> str:
        try:
            change = retry.in_transaction(
                burst_db, lambda session: _apply(session, request), label=request.operation
            )
        except InsufficientStock:
            return "insufficient"
        except WarehouseError as error:  # unknown SKU, key conflict: reported, not fatal
            rejections.append(str(error))
            return "rejected"
        return "replayed" if change.replayed else "succeeded"

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-burst") as pool:
            outcomes = Counter(pool.map(send, plan))
    finally:
        burst_db.dispose()
    return BurstResult(workers, time.perf_counter() - started, outcomes, rejections)


def _apply(session, request: BurstRequest) -> stock.StockChange:
    if request.operation == "deduct":
        ((sku, qty),) = request.lines
        return stock.deduct(
            session,
            warehouse=request.warehouse,
            sku=sku,
            qty=qty,
            key=request.key,
            reference="cangflow demo",
        )
    return stock.deduct_order(
        session,
        warehouse=request.warehouse,
        lines=list(request.lines),
        key=request.key,
        reference="cangflow demo",
    )


def summary_lines(
    sample: sample_data.SampleSummary,
    burst: BurstResult,
    top: list[tuple[str, str, int, int]],
    violations: list,
) -> list[str]:
    """The short table printed at the end: what is loaded, how the burst went, where stock is."""
    loaded = (
        "already loaded, nothing added"
        if sample.already_loaded
        else f"loaded in {sample.seconds:.1f} s"
    )
    lines = [
        "",
        f"sample ({', '.join(sample_data.WAREHOUSES)}): {loaded}",
        *_rows(
            [
                ("warehouses", sample.warehouses),
                ("bins", sample.locations),
                ("SKUs", sample.skus),
                ("lots", sample.lots),
                ("balance rows", sample.balances),
                ("movements", sample.movements),
            ]
        ),
        f"burst ({burst.workers} workers, {burst.seconds:.2f} s)",
        *_rows(
            [("attempted", burst.attempted)]
            + [
                (name, burst.outcomes[name])
                for name in ("succeeded", "replayed", "insufficient", "rejected")
            ]
            + [("per second", f"{burst.per_second:,.1f}")]
        ),
    ]
    lines += [f"  first rejection: {burst.rejections[0]}"] if burst.rejections else []
    lines.append(f"top 5 SKUs by on_hand{'on_hand':>20}{'available':>11}")
    lines += [
        f"  {wh:<11}{sku:<12}{on_hand:>16,}{available:>11,}" for wh, sku, on_hand, available in top
    ]
    lines += [f"  {violation}" for violation in violations[:20]]
    lines.append(f"invariants: {len(violations)} violation{'' if len(violations) == 1 else 's'}")
    return lines


def _rows(pairs: list[tuple[str, object]]) -> list[str]:
    return [
        f"  {label:<14}{value:>12,}" if isinstance(value, int) else f"  {label:<14}{value:>12}"
        for label, value in pairs
    ]
