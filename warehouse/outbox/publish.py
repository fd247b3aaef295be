"""The relay's publishing side: claim a batch of unpublished outbox messages with
`FOR UPDATE SKIP LOCKED` (so several relays can run), XADD them to Redis Streams (one stream
per topic, the message id in the entry), and mark them published in the claim's transaction.

At least once by design: a relay killed after XADD and before COMMIT leaves the messages
unpublished, and they are sent again; consumers ignore ids they have handled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT
from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

from warehouse.metrics import sinks as metrics
from warehouse.redis.keys import Keys

_CLAIM = text("""
SELECT id, topic, message_key, operation_id, payload, created_at, attempts
FROM outbox_message
WHERE published_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= now())
ORDER BY id
LIMIT :limit
FOR UPDATE SKIP LOCKED
""")
_PUBLISHED = text("""
UPDATE outbox_message SET published_at = now(), attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL
WHERE id = ANY (CAST(:ids AS bigint[]))
""")
# Exponential backoff per message: 2, 4, 8 ... seconds, at most 5 minutes.
_FAILED = text("""
UPDATE outbox_message
SET attempts = attempts + 1, last_error = :error,
    next_attempt_at = now() + least(interval '300 seconds', interval '1 second' * power(2, attempts + 1))
WHERE id = ANY (CAST(:ids AS bigint[]))
""")


@dataclass(frozen=True)
class Published:
    claimed: int
    published: int
    error: str | None = None


def entry(row) -> dict[str, str]:
    """A stream entry: flat strings, the payload as JSON."""
    return {
        "id": str(row.id),
        "topic": row.topic,
        "key": row.message_key or "",
        "operation_id": "" if row.operation_id is None else str(row.operation_id),
        "created_at": row.created_at.isoformat(),
        "payload": json.dumps(row.payload, separators=(",", ":"), default=str),
    }


# The lowest unpublished id is the oldest message (ids follow creation): one probe of the
# partial index of unpublished messages, however long the table.
_OLDEST_PENDING = text("""
SELECT coalesce(extract(epoch FROM now() - (SELECT created_at FROM outbox_message WHERE published_at IS NULL
                                             ORDER BY id LIMIT 1)), 0)
""")


def oldest_pending_age(session: Session) -> float:
    """Seconds the oldest unpublished message has waited (0: none waits)."""
    # One row always (a SELECT without FROM), never NULL (coalesce).
    return float(session.execute(_OLDEST_PENDING).scalar_one())


def publish_batch(
    session: Session, client: redis.Redis, keys: Keys, *, limit: int, max_length: int
) -> Published:
    """Claim, publish and mark one batch; the caller commits. A Redis failure is recorded on
    the messages (attempts, last error, backoff) instead of raised."""
    rows = session.execute(_CLAIM, {"limit": limit}).all()
    if not rows:
        return Published(0, 0)
    ids = [row.id for row in rows]
    try:
        pipe = client.pipeline(transaction=False)
        for row in rows:
            # redis-py types `fields` as an invariant Dict of its union types, where it only
            # reads the mapping: a dict[str, str] is a valid argument.
            fields = cast(dict[FieldT, EncodableT], entry(row))
            pipe.xadd(keys.stream(row.topic), fields, maxlen=max_length, approximate=True)
        pipe.execute()
    except (redis.RedisError, OSError) as error:
        session.execute(_FAILED, {"ids": ids, "error": f"{type(error).__name__}: {error}"[:500]})
        metrics.current().inc("cangflow_outbox_failed_total", len(ids))
        return Published(len(rows), 0, str(error))
    session.execute(_PUBLISHED, {"ids": ids})
    for row in rows:
        metrics.current().inc("cangflow_outbox_published_total", topic=row.topic)
    return Published(len(rows), len(rows))


_PRUNE = text("""
DELETE FROM outbox_message WHERE id IN (
    SELECT id FROM outbox_message
    WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => :keep_s)
    ORDER BY id LIMIT :limit)
""")
_PRUNE_CONSUMED = text("""
DELETE FROM consumed_message WHERE ctid IN (
    SELECT ctid FROM consumed_message WHERE consumed_at < now() - make_interval(secs => :keep_s) LIMIT :limit)
""")


def prune(session: Session, *, keep_s: float, limit: int = 10_000) -> tuple[int, int]:
    """Delete published messages and consumer records older than the retention (one bounded
    batch each, so a long backlog is pruned over several short transactions)."""
    # Session.execute is typed as returning a Result; a DML statement's is a CursorResult.
    messages = cast(
        CursorResult[Any], session.execute(_PRUNE, {"keep_s": keep_s, "limit": limit})
    ).rowcount
    consumed = cast(
        CursorResult[Any],
        session.execute(_PRUNE_CONSUMED, {"keep_s": keep_s * 2, "limit": limit}),
    ).rowcount
    return messages, consumed


def trim_streams(client: redis.Redis, keys: Keys, topics: list[str], *, keep_s: float) -> int:
    """Drop stream entries older than the retention (entry ids start with their ms time)."""
    import time

    oldest = f"{int((time.time() - keep_s) * 1000)}-0"
    return sum(client.xtrim(keys.stream(topic), minid=oldest, approximate=True) for topic in topics)
