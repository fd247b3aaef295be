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
from warehouse.outbox.relay import (
    ConsumeRound,
    Pruned,
    PublishRound,
    consume_due,
    prune_retained,
    publish_due,
)

__all__ = [
    "ConsumeRound",
    "Consumed",
    "Consumer",
    "Message",
    "Pruned",
    "PublishRound",
    "Published",
    "consume_batch",
    "consume_due",
    "ensure_groups",
    "member",
    "oldest_pending_age",
    "prune",
    "prune_idle_members",
    "prune_retained",
    "publish_batch",
    "publish_due",
    "trim_streams",
]
