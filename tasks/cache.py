"""Tasks of the relay and warmup flows: thin calls into warehouse.outbox and warehouse.cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

from prefect import task

from tasks.database import database, secret_url
from warehouse import outbox
from warehouse.cache import StockCache
from warehouse.cache.invalidator import CacheInvalidator
from warehouse.cache.warmup import hot_set, warm
from warehouse.metrics import sinks as metrics
from warehouse.reconcile import orders
from warehouse.settings import get_settings


@lru_cache(maxsize=1)
def stock_cache() -> StockCache:
    return StockCache(database(), secret_url("redis_secret_block"))


def forget() -> None:
    if stock_cache.cache_info().currsize:
        stock_cache().close()
    stock_cache.cache_clear()


@task(name="relay-publish", retries=2, retry_delay_seconds=5)
def publish_pending(max_batches: int = 1000) -> dict:
    """Publish until nothing is due (or `max_batches`), one transaction per batch."""
    settings, cache = get_settings(), stock_cache()
    total = {"claimed": 0, "published": 0, "failed_batches": 0, "last_error": ""}
    for _ in range(max_batches):
        with database().session() as session:
            batch = outbox.publish_batch(
                session,
                cache.remote.client,
                cache.keys,
                limit=settings.relay_batch,
                max_length=settings.stream_max_length,
            )
        total["claimed"] += batch.claimed
        total["published"] += batch.published
        if batch.error:
            total["failed_batches"] += 1
            total["last_error"] = batch.error[:200]
            break  # back off: the messages carry their next attempt time
        if batch.claimed < settings.relay_batch:
            break
    with database().session() as session:
        metrics.current().set(
            "cangflow_outbox_oldest_pending_age_seconds", outbox.oldest_pending_age(session)
        )
    return total


@task(name="relay-cache-invalidation", retries=2, retry_delay_seconds=5)
def invalidate_cache(max_batches: int = 1000) -> dict:
    settings, cache = get_settings(), stock_cache()
    consumer = CacheInvalidator(cache.remote, cache)
    handled = redelivered = 0
    for _ in range(max_batches):
        result = outbox.consume_batch(
            database(), cache.remote.client, cache.keys, consumer, count=settings.relay_batch
        )
        handled += result.handled
        redelivered += result.redelivered
        if result.entries == 0:
            break
    return {
        "handled": handled,
        "redelivered": redelivered,
        "pairs_invalidated": consumer.invalidated,
    }


@task(name="relay-prune", retries=2, retry_delay_seconds=5)
def prune_outbox() -> dict:
    settings, cache = get_settings(), stock_cache()
    keep_s = settings.outbox_retention_days * 86400
    with database().session() as session:
        messages, consumed = outbox.prune(session, keep_s=keep_s)
    trimmed = outbox.trim_streams(
        cache.remote.client,
        cache.keys,
        [*list(CacheInvalidator.topics), orders.ERP_TOPIC],
        keep_s=keep_s,
    )
    idle = outbox.prune_idle_members(
        cache.remote.client,
        cache.keys,
        CacheInvalidator(cache.remote),
        idle_ms=int(settings.relay_idle_consumer_days * 86_400_000),
    )
    return {
        "messages_pruned": messages,
        "consumer_records_pruned": consumed,
        "stream_entries_trimmed": trimmed,
        "idle_consumers_removed": len(idle),
    }


@task(name="warmup-hot-set", retries=2, retry_delay_seconds=5)
def find_hot_set(top: int) -> tuple[list[tuple[str, str]], str]:
    return hot_set(stock_cache(), top)


@task(name="warmup-write", retries=2, retry_delay_seconds=5)
def warm_cache(pairs: list[tuple[str, str]], source: str) -> dict:
    done = warm(stock_cache(), pairs, source=source)
    return {
        "source": done.source,
        "keys": done.keys,
        "written": done.written,
        "refused_stale": done.refused_stale,
        "seconds": round(done.seconds, 3),
    }


@task(name="warmup-hit-rates")
def hit_rates() -> dict:
    cache = stock_cache()
    cache.stats.flush()
    now = datetime.now(UTC)
    before, before_reads = cache.stats.hit_rate(now - timedelta(hours=1))
    current, current_reads = cache.stats.hit_rate(now)
    # Every process's reads, as they counted them in Redis: this hour's so far, else the last.
    ratio = current if current is not None else before
    if ratio is not None:
        metrics.current().set("cangflow_cache_hit_ratio_last_hour", ratio)
    return {
        "previous_hour": before,
        "previous_hour_reads": before_reads,
        "this_hour": current,
        "this_hour_reads": current_reads,
    }
