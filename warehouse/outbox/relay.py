"""The relay's rounds: publish what is due, and let a consumer handle what was published, one
batch per transaction until nothing is left (or the round's batch limit); prune what is past
the retention. The relay flow's tasks call these."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy.orm import Session

from warehouse import Database
from warehouse.outbox.consume import Consumer, consume_batch, prune_idle_members
from warehouse.outbox.publish import prune, publish_batch, trim_streams
from warehouse.redis.keys import Keys


@dataclass(frozen=True)
class PublishRound:
    claimed: int
    published: int
    failed_batches: int
    last_error: str  # the failed batch's error, shortened; "" when none failed


@dataclass(frozen=True)
class ConsumeRound:
    handled: int
    redelivered: int


@dataclass(frozen=True)
class Pruned:
    messages_pruned: int
    consumer_records_pruned: int
    stream_entries_trimmed: int
    idle_consumers_removed: int


def publish_due(
    db: Database, client: redis.Redis, keys: Keys, *, batch: int, max_length: int, max_batches: int
) -> PublishRound:
    """Publish until nothing is due, one transaction per batch. A failed batch ends the round:
    its messages carry their next attempt time (backoff)."""
    claimed = published = 0
    for _ in range(max_batches):
        with db.session() as session:
            done = publish_batch(session, client, keys, limit=batch, max_length=max_length)
        claimed += done.claimed
        published += done.published
        if done.error:
            return PublishRound(claimed, published, 1, done.error[:200])
        if done.claimed < batch:
            break
    return PublishRound(claimed, published, 0, "")


def consume_due(
    db: Database,
    client: redis.Redis,
    keys: Keys,
    consumer: Consumer,
    *,
    count: int,
    max_batches: int,
) -> ConsumeRound:
    """Hand the consumer its streams' entries until none are left (see `consume_batch`)."""
    handled = redelivered = 0
    for _ in range(max_batches):
        done = consume_batch(db, client, keys, consumer, count=count)
        handled += done.handled
        redelivered += done.redelivered
        if done.entries == 0:
            break
    return ConsumeRound(handled, redelivered)


def prune_retained(
    session: Session,
    client: redis.Redis,
    keys: Keys,
    consumer: Consumer,
    topics: list[str],
    *,
    keep_s: float,
    idle_ms: int,
) -> Pruned:
    """Published messages, consumer records and stream entries past `keep_s`, and the
    consumer group's members idle for `idle_ms` with nothing pending."""
    messages, consumed = prune(session, keep_s=keep_s)
    trimmed = trim_streams(client, keys, topics, keep_s=keep_s)
    idle = prune_idle_members(client, keys, consumer, idle_ms=idle_ms)
    return Pruned(messages, consumed, trimmed, len(idle))
