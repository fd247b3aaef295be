"""The outbox relay (PostgreSQL outbox -> Redis Streams) and its consumers."""

from warehouse.outbox.consume import (
    Consumed,
    Consumer,
    Message,
    consume_batch,
    ensure_groups,
    member,
    prune_idle_members,
)
from warehouse.outbox.publish import (
    Published,
    oldest_pending_age,
    prune,
    publish_batch,
    trim_streams,
)

__all__ = [
    "Consumed",
    "Consumer",
    "Message",
    "Published",
    "consume_batch",
    "ensure_groups",
    "member",
    "oldest_pending_age",
    "prune",
    "prune_idle_members",
    "publish_batch",
    "trim_streams",
]
