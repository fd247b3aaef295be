"""Tasks of the relay and warmup flows: thin calls into warehouse.outbox and warehouse.cache."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from prefect import task

from tasks.database import database, secret_url
from warehouse import outbox
from warehouse.cache import StockCache
from warehouse.cache.invalidator import CacheInvalidator, Invalidated, invalidate_due
from warehouse.cache.stats import HitRates
from warehouse.cache.warmup import Warmed, hot_set, warm
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
def publish_pending(max_batches: int = 1000) -> outbox.PublishRound:
    """Publish until nothing is due (or `max_batches`), one transaction per batch."""
    settings, cache = get_settings(), stock_cache()
    done = outbox.publish_due(
        database(),
        cache.required_remote("the relay").client,
        cache.keys,
        batch=settings.relay_batch,
        max_length=settings.stream_max_length,
        max_batches=max_batches,
    )
    with database().session() as session:
        metrics.current().set(
            "cangflow_outbox_oldest_pending_age_seconds", outbox.oldest_pending_age(session)
        )
    return done


@task(name="relay-cache-invalidation", retries=2, retry_delay_seconds=5)
def invalidate_cache(max_batches: int = 1000) -> Invalidated:
    return invalidate_due(
        database(), stock_cache(), count=get_settings().relay_batch, max_batches=max_batches
    )


@task(name="relay-prune", retries=2, retry_delay_seconds=5)
def prune_outbox() -> outbox.Pruned:
    settings, cache = get_settings(), stock_cache()
    remote = cache.required_remote("the relay")
    with database().session() as session:
        return outbox.prune_retained(
            session,
            remote.client,
            cache.keys,
            CacheInvalidator(remote),
            [*CacheInvalidator.topics, orders.ERP_TOPIC],
            keep_s=settings.outbox_retention_days * 86400,
            idle_ms=int(settings.relay_idle_consumer_days * 86_400_000),
        )


@task(name="warmup-hot-set", retries=2, retry_delay_seconds=5)
def find_hot_set(top: int) -> tuple[list[tuple[str, str]], str]:
    return hot_set(stock_cache(), top)


@task(name="warmup-write", retries=2, retry_delay_seconds=5)
def warm_cache(pairs: list[tuple[str, str]], source: str) -> Warmed:
    return warm(stock_cache(), pairs, source=source)


@task(name="warmup-hit-rates")
def hit_rates() -> HitRates:
    rates = stock_cache().stats.hit_rates(datetime.now(UTC))
    if rates.latest is not None:
        metrics.current().set("cangflow_cache_hit_ratio_last_hour", rates.latest)
    return rates
