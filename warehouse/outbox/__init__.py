"""The outbox relay (PostgreSQL outbox -> Redis Streams) and its consumers."""

from .consume import Consumed, Consumer, Message, consume_batch, ensure_groups
from .publish import Published, prune, publish_batch, trim_streams

__all__ = ["Consumed", "Consumer", "Message", "Published", "consume_batch", "ensure_groups", "prune",
           "publish_batch", "trim_streams"]
