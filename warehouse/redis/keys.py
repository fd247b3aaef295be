"""Redis key names. Codes are arbitrary strings, so the (warehouse, sku) pair is JSON-encoded:
no code can make two pairs share a key."""

from __future__ import annotations

import json
from datetime import UTC, datetime


class Keys:
    def __init__(self, namespace: str = "cangflow"):
        self.namespace = namespace

    def available(self, warehouse: str, sku: str) -> str:
        return f"{self.namespace}:avail:{self.member(warehouse, sku)}"

    def generation_counter(self) -> str:
        """The counter every invalidation draws a new generation from (never expires)."""
        return f"{self.namespace}:avail-generation"

    def load_lock(self, warehouse: str, sku: str) -> str:
        return f"{self.namespace}:load:{self.member(warehouse, sku)}"

    @staticmethod
    def member(warehouse: str, sku: str) -> str:
        # What json.dumps gives, built directly when neither code needs escaping: json.dumps
        # was a tenth of a 100k-key warmup's client time.
        if _plain(warehouse) and _plain(sku):
            return f'["{warehouse}","{sku}"]'
        return json.dumps([warehouse, sku], separators=(",", ":"))

    @staticmethod
    def parse_member(member: str) -> tuple[str, str]:
        warehouse, sku = json.loads(member)
        return warehouse, sku

    def reads(self, hour: datetime) -> str:
        """Sorted set: reads per (warehouse, sku) in that UTC hour."""
        return f"{self.namespace}:reads:{hour.astimezone(UTC):%Y%m%d%H}"

    def hits(self, hour: datetime) -> str:
        """Hash: l1 / l2 / miss counts of that UTC hour (the hit rate before and after warmup)."""
        return f"{self.namespace}:hits:{hour.astimezone(UTC):%Y%m%d%H}"

    def stream(self, topic: str) -> str:
        return f"{self.namespace}:outbox:{topic}"


def _plain(code: str) -> bool:
    """JSON writes it as is: printable ASCII without a quote or a backslash."""
    return code.isascii() and code.isprintable() and '"' not in code and "\\" not in code
