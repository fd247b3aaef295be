"""A realistic sample for `cangflow demo`: two warehouses, hundreds of bins, thousands of SKUs
with lots, and months of ledger history in which a few SKUs are very busy (Zipf-like).

Why it is built this way:
- Volume: hundreds of thousands of movements must load in seconds, so master data goes in set
  by set (COPY into a staging table, then one INSERT ... SELECT) and the history is generated
  with numpy and COPYed straight into the partitioned ledger; nothing is written row by row.
- Truth: the ledger is generated first and the balances are derived from it, so invariant 2
  holds by construction. Each replenishment is dated before the pick that would otherwise take
  its row below zero, so on_hand as of any past moment is never negative either.
- Reruns: nothing is loaded when the demo warehouses already hold movements, and an advisory
  lock makes a concurrent second loader wait for the first and then find it done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db import raw_sql
from warehouse.errors import InvalidArgument
from warehouse.history import calendar, partitions

WAREHOUSES = ("DEMO-EAST", "DEMO-WEST")
# (category, share of its SKUs tracked by lot): food and medicine expire, cables do not.
CATEGORIES = (
    ("grocery", 0.9),
    ("beverages", 0.7),
    ("frozen", 0.9),
    ("pharmacy", 1.0),
    ("personal care", 0.5),
    ("household", 0.2),
    ("electronics", 0.0),
    ("apparel", 0.0),
)
VARIANTS = ("classic", "premium", "value pack", "family size", "mini", "eco", "twin pack")
ZIPF_EXPONENT = 1.07
PICKS_PER_SKU_DAY = 0.33  # per warehouse: 5,000 SKUs make ~1,650 picks a day in each
_LOAD_LOCK = 0x64656D6F  # "demo": one loader at a time
_HOUR = 3_600_000_000  # times are microseconds since the first day's business midnight
_DAY = 24 * _HOUR
_MOVEMENT_TYPES = np.array(["receipt", "deduction", "reservation"])
SKU_CODE = "SKU-{:06d}"  # numbered from 1


@dataclass(frozen=True)
class SampleSummary:
    warehouses: int
    locations: int
    skus: int
    lots: int
    balances: int
    movements: int
    seconds: float
    already_loaded: bool = False


def popularity(skus: int, seed: int) -> np.ndarray:
    """Pick probability of each SKU (by index): Zipf over a seeded shuffle of the catalogue.
    Its own random stream, so the demo's burst finds the busy SKUs without asking the database."""
    rank = np.random.default_rng([seed, 1]).permutation(skus) + 1
    weights = 1.0 / rank.astype(float) ** ZIPF_EXPONENT
    return weights / weights.sum()


def popular_skus(skus: int, seed: int, count: int) -> list[str]:
    return [
        SKU_CODE.format(int(i) + 1)
        for i in np.argsort(-popularity(skus, seed), kind="stable")[:count]
    ]


def prepare(owner_session: Session, *, days: int = 90, today: date | None = None) -> list[str]:
    """As the owner (warehouse.db.roles), before `load_sample`: the ledger partitions its history
    needs (the app role makes no table)."""
    today = today or calendar.today()
    return partitions.ensure_range(
        owner_session, today - timedelta(days=days), today - timedelta(days=1)
    )


def analyze(owner_session: Session) -> None:
    """As the owner, after `load_sample`: statistics for the burst's plans (only a table's
    owner may ANALYZE it); autovacuum would take a while to notice a load of this size."""
    owner_session.execute(text("ANALYZE stock_balance, stock_movement, location, sku, lot"))


def load_sample(
    session: Session,
    *,
    skus: int = 5000,
    bins_per_warehouse: int = 300,
    days: int = 90,
    seed: int = 7,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> SampleSummary:
    """Load the sample in the caller's transaction, or report what is there if it was loaded."""
    if not (1 <= skus <= 999_999 and 1 <= bins_per_warehouse <= 2600 and 1 <= days <= 3650):
        raise InvalidArgument(
            f"sample size out of range: skus={skus} (1-999999), "
            f"bins_per_warehouse={bins_per_warehouse} (1-2600), days={days} (1-3650)"
        )
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOAD_LOCK})
    loaded = text(
        "SELECT EXISTS (SELECT 1 FROM stock_movement m JOIN warehouse w ON w.id = m.warehouse_id "
        "WHERE w.code = ANY (CAST(:codes AS text[])))"
    )
    if session.execute(loaded, {"codes": list(WAREHOUSES)}).scalar():
        return _summary(session, time.perf_counter() - started, already_loaded=True)
    today = today or calendar.today()
    rng, weights = np.random.default_rng(seed), popularity(skus, seed)
    raw = raw_sql.driver(session)
    warehouse_ids, bin_ids = _warehouses_and_bins(session, raw, bins_per_warehouse)
    sku_ids, lots = _skus_and_lots(session, raw, rng, skus, today)
    rows = _balance_rows(session, raw, rng, weights, warehouse_ids, bin_ids, sku_ids, lots)
    say(
        f"  master data: {len(WAREHOUSES)} warehouses, {len(WAREHOUSES) * bins_per_warehouse:,} bins, "
        f"{skus:,} SKUs, {len(rows):,} balance rows ({time.perf_counter() - started:.1f} s)"
    )
    start = today - timedelta(days=days)
    partitions.ensure_range(session, start, today - timedelta(days=1))
    ledger = _history(rng, rows, weights, days, start)
    say(f"  history: {len(ledger):,} movements generated ({time.perf_counter() - started:.1f} s)")
    _write_ledger(session, raw, ledger, rows, start)
    session.execute(text(_DERIVE_BALANCES), {"ids": warehouse_ids.tolist()})
    say(f"  ledger copied, balances derived from it ({time.perf_counter() - started:.1f} s)")
    return _summary(session, time.perf_counter() - started, already_loaded=False)


def _warehouses_and_bins(session, raw, bins: int) -> tuple[np.ndarray, list[np.ndarray]]:
    # Bin codes aisle-rack-level: 20 racks of 5 levels per aisle, so 300 bins are aisles A-C.
    codes = [f"{chr(65 + i // 100)}-{i // 5 % 20 + 1:02d}-{i % 5 + 1:02d}" for i in range(bins)]
    names = [f"Demo warehouse {code.split('-')[1].lower()}" for code in WAREHOUSES]
    warehouse_ids = _upsert(
        session, raw, "warehouse", pd.DataFrame({"code": WAREHOUSES, "name": names}), ("code",)
    )
    frame = pd.DataFrame(
        {"warehouse_id": np.repeat(warehouse_ids, bins), "code": codes * len(WAREHOUSES)}
    )
    return warehouse_ids, np.split(
        _upsert(session, raw, "location", frame, ("warehouse_id", "code")), len(WAREHOUSES)
    )


def _skus_and_lots(session, raw, rng, skus, today) -> tuple[np.ndarray, pd.DataFrame]:
    """SKU ids by index, and every SKU's stock keys: its lots, or one lot-less key (lot_id -1)."""
    category = rng.integers(0, len(CATEGORIES), skus)
    variant = rng.integers(0, len(VARIANTS), skus)
    sku_ids = _upsert(
        session,
        raw,
        "sku",
        pd.DataFrame(
            {
                "code": [SKU_CODE.format(i + 1) for i in range(skus)],
                "name": [
                    f"{CATEGORIES[c][0].capitalize()} {VARIANTS[v]} {i + 1}"
                    for i, (c, v) in enumerate(zip(category, variant, strict=True))
                ],
                "category": [CATEGORIES[c][0] for c in category],
            }
        ),
        ("code",),
    )
    tracked = rng.random(skus) < np.array([share for _, share in CATEGORIES])[category]
    count = np.where(tracked, rng.integers(1, 4, skus), 0)
    owner, k = np.repeat(np.arange(skus), count), _ranks(count)
    # Later lots of a SKU expire later: about 2-7 months apart, the first within half a year.
    expires = [
        today + timedelta(days=int(d)) for d in 20 + k * 75 + rng.integers(0, 150, len(owner))
    ]
    codes = [f"L{j + 1}-{e:%y%m%d}" for j, e in zip(k, expires, strict=True)]
    frame = pd.DataFrame({"sku_id": sku_ids[owner], "code": codes, "expires": expires})
    lot_ids = _upsert(session, raw, "lot", frame, ("sku_id", "code"))
    keys = pd.DataFrame(
        {
            "sku": np.concatenate([owner, np.flatnonzero(count == 0)]),
            "lot_id": np.concatenate([lot_ids, np.full(int((count == 0).sum()), -1)]),
        }
    )
    return sku_ids, keys


def _balance_rows(
    session, raw, rng, weights, warehouse_ids, bin_ids, sku_ids, lots
) -> pd.DataFrame:
    """Where each SKU lives: busy SKUs in both warehouses and in two bins, a few SKUs in one
    warehouse only; every lot of a SKU in each of its bins."""
    skus = len(sku_ids)
    rank = np.argsort(np.argsort(-weights, kind="stable"), kind="stable")
    stocked_in = (rank[:, None] < skus // 5) | (rng.random((skus, len(bin_ids))) < 0.9)
    stocked_in[np.arange(skus), rng.integers(0, len(bin_ids), skus)] |= ~stocked_in.any(axis=1)
    slots = []
    for w, bins in enumerate(bin_ids):
        stocked = np.flatnonzero(stocked_in[:, w])
        first = rng.integers(0, len(bins), len(stocked))
        two = (rank[stocked] < max(1, skus // 30)) & (len(bins) > 1)
        second = (first + rng.integers(1, max(len(bins), 2), len(stocked))) % len(bins)
        slots.append(
            pd.DataFrame(
                {
                    "wh": w,
                    "sku": np.concatenate([stocked, stocked[two]]),
                    "location_id": bins[np.concatenate([first, second[two]])],
                }
            )
        )
    rows = (
        pd.concat(slots)
        .merge(lots, on="sku")
        .sort_values(["wh", "sku", "location_id", "lot_id"], ignore_index=True)
    )
    rows["warehouse_id"] = warehouse_ids[rows["wh"]]
    rows["sku_id"] = sku_ids[rows["sku"]]
    rows["lot_id"] = rows["lot_id"].where(rows["lot_id"] >= 0).astype("Int64")
    key = ("warehouse_id", "location_id", "sku_id", "lot_id")
    rows["balance_id"] = _upsert(session, raw, "stock_balance", rows[list(key)], key)
    return rows


def _history(rng, rows: pd.DataFrame, weights: np.ndarray, days: int, start: date) -> pd.DataFrame:
    """Picks, replenishments and a few open reservations, as (row, t, type, qty, reserved_qty)."""
    n_rows, row_wh, row_sku = len(rows), rows["wh"].to_numpy(), rows["sku"].to_numpy()
    # A SKU's picks in a warehouse are shared evenly among its rows there.
    share = weights[row_sku] / rows.groupby(["wh", "sku"])["wh"].transform("size").to_numpy()
    weekday = (start.weekday() + np.arange(days)) % 7
    day_weight = np.select([weekday == 5, weekday == 6], [0.6, 0.4], 1.0)  # quieter weekends
    picks = []
    for w in np.unique(row_wh):
        mine = np.flatnonzero(row_wh == w)
        count = rng.poisson(PICKS_PER_SKU_DAY * len(weights) * days)
        picks.append(rng.choice(mine, size=count, p=share[mine] / share[mine].sum()))
    pick_row = np.concatenate(picks)
    n = len(pick_row)
    qty = np.minimum(rng.geometric(0.45, n), 12).astype(np.int64)
    t = rng.choice(days, n, p=day_weight / day_weight.sum()) * _DAY + rng.integers(
        6 * _HOUR, 22 * _HOUR, n
    )
    order = np.lexsort((t, pick_row))
    pick_row, qty, t = pick_row[order], qty[order], t[order]
    # A row's demand so far at each pick. Its receipt j (of q units) is dated between the picks
    # around the first point where demand exceeds j * q: stock is never below zero.
    seg_start = np.searchsorted(pick_row, np.arange(n_rows), "left")
    seg_end = np.searchsorted(pick_row, np.arange(n_rows), "right")
    before = np.concatenate(([0], np.cumsum(qty)))
    demand = before[1:] - before[seg_start[pick_row]]
    total = before[seg_end] - before[seg_start]
    case = rng.choice(np.array([6, 12, 24, 48]), n_rows)
    q = np.maximum(case, -(-total // (rng.integers(3, 13, n_rows) * case)) * case)  # 3-12 receipts
    q = np.where(total == 0, case * rng.integers(1, 5, n_rows), q)
    receipts = total // q + 1  # the last one leaves stock on the shelf
    r_row = np.repeat(np.arange(n_rows), receipts)
    big = np.int64(1) << 40
    k = np.searchsorted(pick_row * big + demand, r_row * big + _ranks(receipts) * q[r_row], "right")
    padded = np.concatenate((t, [0]))  # k - 1 == -1 and k == n land on the pad, then are masked
    lo = np.where(k > seg_start[r_row], padded[k - 1], 0)
    hi = np.where(k < seg_end[r_row], padded[k], days * _DAY)
    r_t = lo + ((hi - lo) * rng.uniform(0.2, 0.8, len(r_row))).astype(np.int64)
    # A few reservations still open at the end, after everything else on their row.
    final = receipts * q - total
    held = np.flatnonzero((final >= 2) & (rng.random(n_rows) < 0.02))
    last = np.full(n_rows, (days - 1) * _DAY, dtype=np.int64)
    np.maximum.at(last, r_row, r_t)
    np.maximum.at(last, pick_row, t)
    h_t = last[held] + ((days * _DAY - last[held]) * rng.uniform(0.1, 0.9, len(held))).astype(
        np.int64
    )
    ledger = pd.DataFrame(
        {
            "row": np.concatenate([r_row, pick_row, held]),
            "t": np.concatenate([r_t, t, h_t]),
            "type": np.repeat(np.arange(3), [len(r_row), n, len(held)]),
            "qty": np.concatenate([q[r_row], -qty, np.zeros(len(held), np.int64)]),
            "reserved_qty": np.concatenate(
                [np.zeros(len(r_row) + n, np.int64), rng.integers(1, final[held] // 2 + 1)]
            ),
        }
    )
    return ledger.sort_values(["t", "row"], kind="stable").reset_index(drop=True)


def _write_ledger(session, raw, ledger: pd.DataFrame, rows: pd.DataFrame, start: date) -> None:
    """COPY the ledger; one operation (and one outbox message) per warehouse and day."""
    row = ledger["row"].to_numpy()
    batch = ledger["t"].to_numpy() // _DAY * len(WAREHOUSES) + rows["wh"].to_numpy()[row]
    batches, index, sizes = np.unique(batch, return_inverse=True, return_counts=True)
    operations = np.array(
        session.execute(
            text("SELECT nextval('stock_operation_id_seq') FROM generate_series(1, :n)"),
            {"n": len(batches)},
        )
        .scalars()
        .all(),
        dtype=np.int64,
    )
    epoch = np.datetime64(calendar.day_start(start).replace(tzinfo=None), "us")  # as UTC
    frame = pd.DataFrame(
        {
            "occurred_at": np.datetime_as_string(
                epoch + ledger["t"].to_numpy().astype("timedelta64[us]"), timezone="UTC"
            ),
            "movement_type": _MOVEMENT_TYPES[ledger["type"].to_numpy()],
            "operation_id": operations[index],
            **{
                name: rows[name].to_numpy()[row]
                for name in ("balance_id", "warehouse_id", "location_id", "sku_id")
            },
            "lot_id": rows["lot_id"].take(row).reset_index(drop=True),
            **ledger[["qty", "reserved_qty"]],
        }
    )
    _copy(raw, f"stock_movement ({', '.join(frame.columns)})", frame)
    session.execute(
        text(
            "INSERT INTO outbox_message (topic, message_key, operation_id, payload) "
            "SELECT 'stock.loaded', w, o, jsonb_build_object('warehouse', w, 'day', d, 'movements', n) "
            "FROM unnest(CAST(:w AS text[]), CAST(:o AS bigint[]), CAST(:d AS date[]), CAST(:n AS bigint[])) "
            "AS b(w, o, d, n) ORDER BY o"
        ),
        {
            "w": [WAREHOUSES[int(b % len(WAREHOUSES))] for b in batches],
            "o": operations.tolist(),
            "d": [start + timedelta(days=int(b // len(WAREHOUSES))) for b in batches],
            "n": sizes.tolist(),
        },
    )


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c-1 for each c in `counts`, concatenated."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _copy(raw, target: str, frame: pd.DataFrame) -> None:
    with raw.cursor() as cursor, cursor.copy(f"COPY {target} FROM STDIN (FORMAT csv)") as copy:
        copy.write(frame.to_csv(index=False, header=False))


def _upsert(
    session: Session, raw, table: str, frame: pd.DataFrame, key: tuple[str, ...]
) -> np.ndarray:
    """Insert the rows of `frame` missing from `table` (COPY into a staging table, then one
    INSERT ... SELECT) and return the id of each row's match, in frame order."""
    columns = ", ".join(frame.columns)
    with raw.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE stage_{table} ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA"
        )
        cursor.execute(
            f"ALTER TABLE stage_{table} ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY"
        )
    _copy(raw, f"stage_{table} ({columns})", frame)
    session.execute(
        text(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM stage_{table} ORDER BY n "
            "ON CONFLICT DO NOTHING"
        )
    )
    # coalesce, not IS NOT DISTINCT FROM: a NULL lot still joins by hash.
    match = " AND ".join(
        f"coalesce(x.{c}, -1) = coalesce(t.{c}, -1)" if c == "lot_id" else f"x.{c} = t.{c}"
        for c in key
    )
    found = np.array(
        session.execute(
            text(f"SELECT t.n, x.id FROM stage_{table} t JOIN {table} x ON {match}")
        ).all(),
        dtype=np.int64,
    ).reshape(-1, 2)
    ids = np.full(len(frame), -1, dtype=np.int64)
    ids[found[:, 0] - 1] = found[:, 1]
    return ids


_DERIVE_BALANCES = """
UPDATE stock_balance b SET on_hand = l.on_hand, reserved = l.reserved, first_received_at = l.first_received,
                           version = l.movements, updated_at = now()
FROM (SELECT balance_id, sum(qty) AS on_hand, sum(reserved_qty) AS reserved, count(*) AS movements,
             min(occurred_at) FILTER (WHERE movement_type = 'receipt') AS first_received
      FROM stock_movement WHERE warehouse_id = ANY (CAST(:ids AS bigint[])) GROUP BY balance_id) l
WHERE b.id = l.balance_id"""

_COUNTS = """
WITH w AS (SELECT id FROM warehouse WHERE code = ANY (CAST(:codes AS text[]))),
     b AS (SELECT sku_id, lot_id FROM stock_balance WHERE warehouse_id IN (SELECT id FROM w))
SELECT (SELECT count(*) FROM w) AS warehouses,
       (SELECT count(*) FROM location WHERE warehouse_id IN (SELECT id FROM w)) AS locations,
       (SELECT count(DISTINCT sku_id) FROM b) AS skus, (SELECT count(DISTINCT lot_id) FROM b) AS lots,
       (SELECT count(*) FROM b) AS balances,
       (SELECT count(*) FROM stock_movement WHERE warehouse_id IN (SELECT id FROM w)) AS movements
"""


def _summary(session: Session, seconds: float, *, already_loaded: bool) -> SampleSummary:
    row = session.execute(text(_COUNTS), {"codes": list(WAREHOUSES)}).one()
    return SampleSummary(**row._mapping, seconds=round(seconds, 2), already_loaded=already_loaded)


def top_on_hand(session: Session, per_warehouse: int = 5) -> list[tuple[str, str, int, int]]:
    """(warehouse, sku, on_hand, available) of the SKUs holding most stock in each demo warehouse."""
    return [
        tuple(row)
        for row in session.execute(
            text("""
        SELECT warehouse, sku, on_hand, available FROM (
            SELECT w.code AS warehouse, s.code AS sku, sum(b.on_hand)::bigint AS on_hand,
                   sum(b.on_hand - b.reserved)::bigint AS available,
                   row_number() OVER (PARTITION BY w.code ORDER BY sum(b.on_hand) DESC, s.code) AS n
            FROM stock_balance b JOIN warehouse w ON w.id = b.warehouse_id JOIN sku s ON s.id = b.sku_id
            WHERE w.code = ANY (CAST(:codes AS text[])) GROUP BY w.code, s.code) ranked
        WHERE n <= :n ORDER BY warehouse, n"""),
            {"codes": list(WAREHOUSES), "n": per_warehouse},
        )
    ]


def most_moved_pairs(session: Session, *, limit: int) -> list[tuple[str, str]]:
    """(warehouse, sku) of the demo warehouses, most moved first: what pick screens ask about."""
    return [
        tuple(row)
        for row in session.execute(
            text("""
        SELECT w.code, s.code FROM stock_movement m
        JOIN warehouse w ON w.id = m.warehouse_id JOIN sku s ON s.id = m.sku_id
        WHERE w.code = ANY (CAST(:codes AS text[]))
        GROUP BY w.code, s.code ORDER BY count(*) DESC, w.code, s.code LIMIT :limit"""),
            {"codes": list(WAREHOUSES), "limit": limit},
        )
    ]


def erp_feed(
    session: Session, path, *, as_of: datetime, differences: int = 5, seed: int = 7
) -> int:
    """Write a demo ERP feed: the demo warehouses' stock per SKU as of `as_of`, with
    `differences` SKUs booked a few units off (as a missed message would leave them)."""
    import csv

    rows = session.execute(
        text("""
        SELECT w.code AS warehouse, s.code AS sku,
               sum(b.on_hand) - coalesce((SELECT sum(m.qty) FROM stock_movement m
                                          WHERE m.warehouse_id = w.id AND m.sku_id = s.id
                                            AND m.occurred_at > :as_of), 0) AS qty
        FROM stock_balance b JOIN warehouse w ON w.id = b.warehouse_id JOIN sku s ON s.id = b.sku_id
        WHERE w.code = ANY (CAST(:codes AS text[]))
        GROUP BY w.id, w.code, s.id, s.code ORDER BY w.code, s.code"""),
        {"codes": list(WAREHOUSES), "as_of": as_of},
    ).all()
    rng = np.random.default_rng(seed)
    off = set(rng.choice(len(rows), size=min(differences, len(rows)), replace=False).tolist())
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["warehouse", "sku", "lot", "quantity", "as_of"])
        for index, row in enumerate(rows):
            qty = int(row.qty) + (int(rng.integers(1, 6)) if index in off else 0)
            writer.writerow([row.warehouse, row.sku, "", qty, as_of.isoformat()])
    return len(rows)
