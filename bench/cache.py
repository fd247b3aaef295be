"""The stock cache: how close the warmup gets to a raw Redis pipeline, and what reads cost per level.

    uv run python -m bench.cache [--skus 100000] [--reads 200000] [--threads 4] [--keep]
                                 [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
                                 [--redis-url redis://127.0.0.1:6379/0]

It creates its own database (`cangflow_bench_cache_<pid>`, dropped at the end unless --keep),
migrates it and loads, set-based, one warehouse with one bin, --skus SKUs and one stock_balance
row each (on_hand = 1 + 37 n mod 1000 for SKU n, so every answer can be checked; no movements:
the cache reads stock_balance). Redis keys live under a namespace of this run's own, deleted at
the end (SCAN + UNLINK). One run:
1. floor: a redis-py pipeline (transaction=False) of --skus `SET key value EX 300` in batches of
   1,000, keys named like the cache's, 3 times (median); also 2,000 SETs one by one, and the
   cache's own Lua write sent as a raw EVALSHA pipeline (the least a guarded write can cost).
2. warmup: `warehouse.cache.warmup.warm(cache, pairs)` over all pairs, as the warmup flow runs
   it; its three steps (the generation counter's read, `load_many`, Lua writes) are timed by wrapping them
   and summed. warm() runs the first two in a loader thread while it writes the slice before,
   so the sums overlap and "other" (the rest) can come out negative. ratio_warmup_to_pipeline =
   warmup keys/s over the floor's. Then once more over the now warm keys (rewarm_*).
3. reads: --reads Zipf(1.1) reads (bounded: inverse CDF over ranks 1..N with weights 1/k^1.1,
   ranks mapped to SKUs by a random permutation) through `cache.available()` from one thread,
   each timed and classified by the cache metric it moved (l1, l2 or miss); then half as many
   from --threads threads at once; then 5,000 raw HMGETs of warm keys (the L2 floor).
4. cold: the namespace's values are deleted from Redis and L1, and 1,000 distinct SKUs (after
   20 untimed) are read: each a real miss that goes to PostgreSQL (checked).
Every answer is checked against the loaded on_hand (exit 1 on a mismatch). stats_flush_* times
the cache's access-statistics flushes, which run inside the read that happens to trigger them.

Progress goes to stderr; the last line of stdout is one JSON object.
"""

import argparse
import itertools
import json
import os
import random
import secrets
import statistics
import sys
import threading
import time
from importlib.util import find_spec

import psycopg
import redis
from sqlalchemy.engine import make_url

import warehouse
from bench.common import add_database_arguments, bench_database
from warehouse.cache import StockCache, warmup
from warehouse.cache.remote import _WRITE  # the cache's guarded write, for the Lua floor
from warehouse.db import schema
from warehouse.metrics import sinks as metrics
from warehouse.redis.client import connect_redis
from warehouse.redis.keys import Keys

WAREHOUSE, BATCH, TTL_S, ZIPF_S = "BW01", 1000, 300, 1.1
FLOOR_REPEATS, ONE_BY_ONE, HMGET_READS, COLD_WARMUP, COLD_READS = 3, 2000, 5000, 20, 1000

LOAD = [
    "INSERT INTO warehouse (code, name) VALUES ('BW01', 'cache bench')",
    "INSERT INTO location (warehouse_id, code) SELECT id, 'BIN-1' FROM warehouse",
    "INSERT INTO sku (code) SELECT 'BSKU-' || lpad(n::text, 7, '0') FROM generate_series(1, %(skus)s) n",
    (
        "INSERT INTO stock_balance (warehouse_id, location_id, sku_id, on_hand, reserved, version) "
        "SELECT w.id, l.id, s.id, 1 + (CAST(substr(s.code, 6) AS int) * 37) %% 1000, 0, 1 "
        "FROM warehouse w JOIN location l ON l.warehouse_id = w.id CROSS JOIN sku s ORDER BY s.id"
    ),
]


def log(message: str) -> None:
    print(f"[bench.cache] {message}", file=sys.stderr, flush=True)


def sku(n: int) -> str:
    return f"BSKU-{n:07d}"


def expected(n: int) -> int:
    return 1 + (n * 37) % 1000


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1)


def drop_namespace(client: redis.Redis, namespace: str, pattern: str = "*") -> int:
    dropped, batch = 0, []
    for key in client.scan_iter(match=f"{namespace}:{pattern}", count=BATCH):
        batch.append(key)
        if len(batch) >= BATCH:
            dropped += client.unlink(*batch)
            batch = []
    return dropped + (client.unlink(*batch) if batch else 0)


class LevelProbe(metrics.RecordingMetrics):
    """RecordingMetrics that also notes, per thread, which level the last read was answered
    from: counter deltas would mix up concurrent threads. The counters are kept, so the
    per-call classification is cross-checked against them."""

    def __init__(self) -> None:
        super().__init__()
        self.last = threading.local()

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        super().inc(name, amount, **labels)
        if name == "cangflow_cache_hits_total":
            self.last.level = labels["level"]
        elif name == "cangflow_cache_misses_total":
            self.last.level = "miss"
        elif name == "cangflow_cache_loads_total":
            self.last.loaded = labels["reason"]

    def totals(self) -> dict:
        return {
            "l1": self.value("cangflow_cache_hits_total", level="l1"),
            "l2": self.value("cangflow_cache_hits_total", level="l2"),
            "miss": self.value("cangflow_cache_misses_total"),
        }


def floor(client: redis.Redis, keys: Keys, n: int) -> dict:
    names = [keys.available(WAREHOUSE, sku(i)) for i in range(1, n + 1)]
    runs = []
    for _ in range(FLOOR_REPEATS):
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + BATCH, n)):
                pipe.set(names[i], str(expected(i + 1)), ex=TTL_S)
            pipe.execute()
        runs.append(n / (time.perf_counter() - started))
    started = time.perf_counter()
    for name in names[:ONE_BY_ONE]:
        client.set(name, "1", ex=TTL_S)
    one_by_one = min(ONE_BY_ONE, n) / (time.perf_counter() - started)
    return {
        "floor_keys_per_s": round(statistics.median(runs)),
        "floor_runs_keys_per_s": [round(r) for r in runs],
        "floor_one_by_one_keys_per_s": round(one_by_one),
    }


def lua_floor(client: redis.Redis, keys: Keys, n: int) -> float:
    """The cache's write script as raw EVALSHA, arguments precomputed: Redis's share of a warmup."""
    sha = client.script_load(_WRITE)
    expires = int(time.time() * 1000 + TTL_S * 1000)
    rows = [
        (keys.available(WAREHOUSE, sku(i)), ["0", 1, expected(i), 0.01, expires, TTL_S * 1000, 0])
        for i in range(1, n + 1)
    ]
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        pipe = client.pipeline(transaction=False)
        for name, args in rows[start : start + BATCH]:
            pipe.evalsha(sha, 1, name, *args)
        pipe.execute()
    return n / (time.perf_counter() - started)


def timed_warm(cache: StockCache, pairs: list[tuple[str, str]], prefix: str) -> dict:
    """warm() as the flow runs it, with its three steps' time summed by wrapping them."""
    spent = {"generation_now": 0.0, "load_many": 0.0, "write_many": 0.0}

    def wrap(step, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[step] += time.perf_counter() - started

        return timed

    remote, load_many = cache.remote, warmup.load_many
    # instance attributes: undone below
    remote.generation_now = wrap("generation_now", remote.generation_now)
    remote.write_many = wrap("write_many", remote.write_many)
    warmup.load_many = wrap("load_many", load_many)
    try:
        done = warmup.warm(cache, pairs)
    finally:
        del remote.generation_now, remote.write_many
        warmup.load_many = load_many
    if done.keys != len(pairs) or done.written != len(pairs):
        raise SystemExit(
            f"warm() loaded {done.keys} and wrote {done.written} of {len(pairs)} keys: {done}"
        )
    other = done.seconds - sum(spent.values())
    log(
        f"{prefix}: {len(pairs)} keys in {done.seconds:.2f} s = {len(pairs) / done.seconds:,.0f} keys/s "
        f"(generation_now {spent['generation_now']:.2f} s, load_many {spent['load_many']:.2f} s, "
        f"write_many {spent['write_many']:.2f} s, other {other:.2f} s)"
    )
    return {
        f"{prefix}_keys_per_s": round(len(pairs) / done.seconds),
        f"{prefix}_s": round(done.seconds, 3),
        **{f"{prefix}_{step}_s": round(s, 3) for step, s in spent.items()},
        f"{prefix}_other_s": round(other, 3),
    }


def time_stats_flushes(cache: StockCache) -> list[float]:
    """Access statistics are flushed to Redis inside a read every 1,000 reads (or 1 s): that
    read pays a pipeline of up to 1,000 ZINCRBY. Their durations (µs) go to the list returned."""
    spent, flush = [], cache.stats.flush

    def timed() -> None:
        started = time.perf_counter_ns()
        flush()
        spent.append((time.perf_counter_ns() - started) / 1000)

    cache.stats.flush = timed
    return spent


def zipf_sampler(n: int, seed: str):
    """Bounded Zipf(ZIPF_S) over 1..n by inverse CDF (random.choices bisects cum_weights);
    rank -> SKU through a fixed permutation, so the hot SKUs are not the first ones loaded."""
    cumulative = list(itertools.accumulate(1.0 / k**ZIPF_S for k in range(1, n + 1)))
    by_rank = list(range(1, n + 1))
    random.Random(f"{seed}-perm").shuffle(by_rank)
    return lambda count, stream: random.Random(f"{seed}-{stream}").choices(
        by_rank, cum_weights=cumulative, k=count
    )


def read_loop(cache: StockCache, probe: LevelProbe, numbers: list[int], out: dict) -> None:
    """Time each read (µs) and put it under the level it was answered from."""
    last, clock, available = probe.last, time.perf_counter_ns, cache.available
    for n in numbers:
        last.level = last.loaded = None
        started = clock()
        value = available(warehouse=WAREHOUSE, sku=sku(n))
        elapsed = (clock() - started) / 1000
        out.setdefault(last.level, []).append(elapsed)
        if last.loaded is not None:
            out.setdefault(f"loaded:{last.loaded}", []).append(elapsed)
        if value != expected(n):
            out.setdefault("mismatch", []).append(n)


def read_phase(cache: StockCache, probe: LevelProbe, streams: list[list[int]], prefix: str) -> dict:
    before = probe.totals()
    outs = [{} for _ in streams]
    threads = [
        threading.Thread(target=read_loop, args=(cache, probe, s, o))
        for s, o in zip(streams, outs, strict=True)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    merged: dict[str, list] = {}
    for out in outs:
        for key, values in out.items():
            merged.setdefault(key, []).extend(values)
    reads = sum(len(s) for s in streams)
    counts = {level: len(merged.get(level, [])) for level in ("l1", "l2", "miss")}
    moved = {level: probe.totals()[level] - before[level] for level in counts}
    if counts != moved or sum(counts.values()) != reads:
        raise SystemExit(f"{prefix}: classified {counts}, counters moved {moved}, reads {reads}")
    figures = {
        f"{prefix}_reads": reads,
        f"{prefix}_threads": len(streams),
        f"{prefix}_s": round(seconds, 3),
        f"{prefix}_reads_per_s": round(reads / seconds),
        f"{prefix}_hit_rate": round((counts["l1"] + counts["l2"]) / reads, 5),
        f"{prefix}_l1_rate": round(counts["l1"] / reads, 5),
        **{f"{prefix}_count_{level}": c for level, c in counts.items()},
        f"{prefix}_loads": {k[7:]: len(v) for k, v in merged.items() if k.startswith("loaded:")},
        f"{prefix}_mismatches": len(merged.get("mismatch", [])),
    }
    for level in (
        level for level in ("l1", "l2", "miss") if counts[level]
    ):  # no nulls for an unused level
        values = merged[level]
        figures.update(
            {
                f"{prefix}_p50_us_{level}": pct(values, 50),
                f"{prefix}_p99_us_{level}": pct(values, 99),
                f"{prefix}_p999_us_{level}": pct(values, 99.9),
            }
        )
    levels = ", ".join(
        f"{level} {c} p50/p99 {figures[f'{prefix}_p50_us_{level}']}/{figures[f'{prefix}_p99_us_{level}']} µs"
        for level, c in counts.items()
        if c
    )
    log(
        f"{prefix}: {reads} reads, {len(streams)} thread(s), {seconds:.2f} s ({reads / seconds:,.0f}/s); {levels}; "
        f"loads {figures[f'{prefix}_loads']}; mismatches {figures[f'{prefix}_mismatches']}"
    )
    return figures


def hmget_floor(cache: StockCache, n: int) -> dict:
    """What an L2 read cannot beat: the cache's own HMGET, sent raw on its client, one by one."""
    client, names = (
        cache.remote.client,
        [cache.keys.available(WAREHOUSE, sku(i)) for i in range(1, n + 1)],
    )
    spent = []
    for name in random.Random("hmget").choices(names, k=HMGET_READS):
        started = time.perf_counter_ns()
        client.hmget(name, "a", "v", "d", "x", "n", "g")
        spent.append((time.perf_counter_ns() - started) / 1000)
    return {"hmget_floor_p50_us": pct(spent, 50), "hmget_floor_p99_us": pct(spent, 99)}


def cold_reads(cache: StockCache, probe: LevelProbe, client: redis.Redis, n: int) -> dict:
    """Real misses: values gone from Redis (generations too) and from L1, distinct SKUs."""
    dropped = drop_namespace(client, cache.keys.namespace, "avail:*")
    numbers = random.Random("cold").sample(range(1, n + 1), min(n, COLD_WARMUP + COLD_READS))
    cache.forget_local({(WAREHOUSE, sku(i)) for i in numbers})
    log(f"cold: dropped {dropped} Redis values; reading {len(numbers)} distinct SKUs")
    read_loop(cache, probe, numbers[:COLD_WARMUP], {})  # untimed: statements get prepared
    figures = read_phase(cache, probe, [numbers[COLD_WARMUP:]], "cold")
    if figures["cold_count_miss"] != len(numbers) - COLD_WARMUP:
        raise SystemExit(f"cold reads were not all misses: {figures}")
    return figures


def run(args, url: str) -> dict:
    namespace = f"bench-cache-{os.getpid()}-{secrets.token_hex(3)}"
    floor_keys, lua_keys = Keys(f"{namespace}-floor"), Keys(f"{namespace}-lua")
    db = warehouse.connect(url)
    client = connect_redis(
        args.redis_url, timeout_s=5
    )  # the cache's client settings, a patient timeout
    probe = LevelProbe()
    cache = None
    try:
        schema.upgrade(db)
        started = time.perf_counter()
        with psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True
        ) as conn:
            with conn.transaction():
                for statement in LOAD:
                    conn.execute(statement, {"skus": args.skus})
            conn.execute("VACUUM (ANALYZE)")
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
        figures = {
            "skus": args.skus,
            "hiredis": find_spec("hiredis") is not None,
            "redis_py": redis.__version__,
            "redis_version": client.info("server")["redis_version"],
            "postgres_version": pg_version,
            "namespace": namespace,
            "load_s": round(time.perf_counter() - started, 2),
        }
        log(
            f"load: {args.skus} SKUs in {figures['load_s']} s; hiredis installed: {figures['hiredis']}"
        )

        figures.update(floor(client, floor_keys, args.skus))
        figures["lua_floor_keys_per_s"] = round(lua_floor(client, lua_keys, args.skus))
        log(
            f"floor: SET EX pipeline {figures['floor_runs_keys_per_s']} keys/s (median {figures['floor_keys_per_s']}), "
            f"one by one {figures['floor_one_by_one_keys_per_s']}/s; Lua write pipeline "
            f"{figures['lua_floor_keys_per_s']} keys/s"
        )

        with metrics.use(probe):
            cache = StockCache(db, args.redis_url, namespace=namespace)
            flushes = time_stats_flushes(cache)
            pairs = [(WAREHOUSE, sku(i)) for i in range(1, args.skus + 1)]
            figures.update(timed_warm(cache, pairs, "warmup"))
            figures["ratio_warmup_to_pipeline"] = round(
                figures["warmup_keys_per_s"] / figures["floor_keys_per_s"], 3
            )
            figures["ratio_warmup_to_lua_floor"] = round(
                figures["warmup_keys_per_s"] / figures["lua_floor_keys_per_s"], 3
            )
            figures.update(timed_warm(cache, pairs, "rewarm"))

            sample = zipf_sampler(args.skus, "reads")
            stream = sample(args.reads, 0)
            figures["zipf_distinct_skus"] = len(set(stream))
            reads = read_phase(cache, probe, [stream], "zipf")
            figures.update(reads)
            figures.update(
                hit_rate=reads["zipf_hit_rate"],
                read_p99_us_l1=reads.get("zipf_p99_us_l1"),
                read_p99_us_l2=reads.get("zipf_p99_us_l2"),
            )
            if args.threads > 1:
                per_thread = (
                    args.reads // 2 // args.threads
                )  # a shorter phase: half the reads in all
                figures.update(
                    read_phase(
                        cache,
                        probe,
                        [sample(per_thread, t + 1) for t in range(args.threads)],
                        f"threads{args.threads}",
                    )
                )
            figures.update(hmget_floor(cache, args.skus))
            figures.update(cold_reads(cache, probe, client, args.skus))
            figures["read_p99_us_miss"] = figures["cold_p99_us_miss"]
            figures.update(
                stats_flushes=len(flushes),
                stats_flush_p50_us=pct(flushes, 50),
                stats_flush_p99_us=pct(flushes, 99),
            )
        figures["targets_met"] = {
            "ratio_warmup_to_pipeline_ge_0.8": figures["ratio_warmup_to_pipeline"] >= 0.8,
            "hit_rate_ge_0.95": figures["hit_rate"] >= 0.95,
        }
        return figures
    finally:
        if cache is not None:
            cache.close()
        dropped = sum(
            drop_namespace(client, ns)
            for ns in (namespace, floor_keys.namespace, lua_keys.namespace)
        )
        log(f"deleted {dropped} Redis keys of {namespace}")
        client.close()
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--skus", type=int, default=100_000, help="SKUs, one balance row and cache key each"
    )
    parser.add_argument(
        "--reads", type=int, default=200_000, help="Zipf reads of the single-thread phase"
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="threads of the concurrent read phase (1: skip it)"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("CANGFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    add_database_arguments(parser)
    args = parser.parse_args(argv)
    if not COLD_WARMUP + COLD_READS <= args.skus <= 9_999_999:
        parser.error(f"--skus must be between {COLD_WARMUP + COLD_READS} and 9,999,999")

    started = time.perf_counter()
    with bench_database("cache", args.admin_url, keep=args.keep, log=log) as url:
        log(f"database {make_url(url).database}: {args.skus} SKUs, {args.reads} reads")
        figures = run(args, url)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))
    mismatches = sum(v for k, v in figures.items() if k.endswith("_mismatches"))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
