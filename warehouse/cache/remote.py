"""The Redis level of the stock cache: version-guarded writes, generation-guarded invalidation,
a load lock for single-flight, all behind a circuit breaker.

Why a generation as well as a version: invalidation removes the value, and with it the
version a late writer would have been compared against. So invalidation gives the key a new
generation instead of deleting the key, and a loader may only write under the generation it
saw before it read the database. A loader that read before a change committed therefore
can never write its old number after the change's invalidation.

Generations come from one counter per namespace that only grows (never from the key's own
hash): the hash expires with its value, and a per-key counter would then start again at 1,
so a loader holding generation 1 from before the expiry could write its old number under the
new 1 and keep it for the whole Redis TTL.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from warehouse.metrics import sinks as metrics
from warehouse.redis.breaker import CircuitBreaker
from warehouse.redis.keys import Keys

# KEYS[1] value hash; ARGV: generation seen, version, available, load ms, expiry (epoch ms), ttl ms, negative
_WRITE = """
local g = redis.call('HGET', KEYS[1], 'g') or '0'
if g ~= ARGV[1] then return -1 end
local v = redis.call('HGET', KEYS[1], 'v')
if v and tonumber(v) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'a', ARGV[3], 'd', ARGV[4], 'x', ARGV[5], 'n', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""
# KEYS[1]: the namespace's generation counter; KEYS[2..]: value hashes;
# ARGV[1]: how long the new generation is kept (ms)
_INVALIDATE = """
local g = redis.call('INCR', KEYS[1])
for i = 2, #KEYS do
  redis.call('HSET', KEYS[i], 'g', g)
  redis.call('HDEL', KEYS[i], 'v', 'a', 'd', 'x', 'n')
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return #KEYS - 1
"""
# Warmup, one call per chunk. KEYS: value hashes; ARGV[1]: the namespace's generation counter
# as read before the load; ARGV[i + 1]: "version,available,load ms,expiry ms,ttl ms,negative"
# for KEYS[i]. Every invalidation gives its keys a generation drawn from that counter, so a key
# whose generation is above ARGV[1] was invalidated after the load began: refused, as _WRITE
# refuses a generation that moved. The version guard is _WRITE's.
_WRITE_MANY = """
local seen = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local v, a, d, x, ttl, n = string.match(ARGV[i + 1], '([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)')
  local current = redis.call('HMGET', key, 'g', 'v')
  local current_v = current[2]
  if tonumber(current[1] or '0') > seen then
    out[i] = -1
  elseif current_v and tonumber(current_v) > tonumber(v) then
    out[i] = 0
  else
    redis.call('HSET', key, 'v', v, 'a', a, 'd', d, 'x', x, 'n', n)
    redis.call('PEXPIRE', key, ttl)
    out[i] = 1
  end
end
return out
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
GENERATION_KEEP_MS = 24 * 3600 * 1000
WRITTEN, STALE, SUPERSEDED = 1, 0, -1


@dataclass(frozen=True)
class Entry:
    available: int | None  # None: the (warehouse, sku) is unknown (negative entry)
    version: int
    load_ms: float
    expires_ms: float


@dataclass(frozen=True)
class Read:
    entry: Entry | None  # None: a miss
    generation: str


class Unavailable(Exception):
    """Redis did not answer (or the breaker is open): the caller goes to PostgreSQL."""


class RemoteCache:
    def __init__(self, client: redis.Redis, keys: Keys, breaker: CircuitBreaker):
        self.client = client
        self.keys = keys
        self.breaker = breaker
        self._write = client.register_script(_WRITE)
        self._invalidate = client.register_script(_INVALIDATE)
        self._release = client.register_script(_RELEASE)

    def call(self, work, *args: Any) -> Any:
        if not self.breaker.allow():
            raise Unavailable("breaker open")
        try:
            result = work(*args)
        except (redis.RedisError, OSError) as error:
            self.breaker.failure()
            raise Unavailable(str(error)) from error
        self.breaker.success()
        return result

    def read(self, warehouse: str, sku: str) -> Read:
        fields = self.call(
            self.client.hmget, self.keys.available(warehouse, sku), "a", "v", "d", "x", "n", "g"
        )
        available, version, load_ms, expires_ms, negative, generation = fields
        if version is None:
            return Read(None, generation or "0")
        entry = Entry(
            None if negative == "1" else int(available),
            int(version),
            float(load_ms),
            float(expires_ms),
        )
        return Read(entry, generation or "0")

    def write(self, warehouse: str, sku: str, generation: str, entry: Entry, ttl_s: float) -> int:
        outcome = self.call(
            self._write,
            [self.keys.available(warehouse, sku)],
            self._write_args(generation, entry, ttl_s),
        )
        if outcome == STALE:
            metrics.current().inc("cangflow_cache_stale_writes_refused_total")
        return outcome

    @staticmethod
    def _write_args(generation: str, entry: Entry, ttl_s: float) -> list:
        negative = entry.available is None
        return [
            generation,
            entry.version,
            0 if negative else entry.available,
            round(entry.load_ms, 3),
            int(entry.expires_ms),
            max(1, int(ttl_s * 1000)),
            1 if negative else 0,
        ]

    def generation_now(self) -> int:
        """The namespace's generation counter; read BEFORE loading from the database, so a
        change committed (and invalidated) during the load makes the later write refuse."""
        return int(self.call(self.client.get, self.keys.generation_counter()) or 0)

    def write_many(self, chunks: list[tuple[list[str], int, list[str]]]) -> list[list[int]]:
        """Guarded writes (warmup), one script call per chunk of (keys, the generation counter's
        value read before their load (`generation_now`), `pack`ed arguments per key); the
        outcomes per chunk. The next chunk is sent before the reply to the one before is read,
        so Redis always has the next call queued while this process reads and encodes."""
        outcomes = self.call(self._pipelined_writes, chunks)
        refused = sum(1 for chunk in outcomes for outcome in chunk if outcome == STALE)
        if refused:
            metrics.current().inc("cangflow_cache_stale_writes_refused_total", refused)
        return outcomes

    def _pipelined_writes(self, chunks: list[tuple[list[str], int, list[str]]]) -> list[list[int]]:
        if not chunks:
            return []
        sha = self.client.script_load(_WRITE_MANY)  # loaded again if Redis restarted
        connection = self.client.connection_pool.get_connection()
        outcomes: list[list[int]] = []
        try:
            for index, (keys, generation, packed) in enumerate(chunks):
                connection.send_command("EVALSHA", sha, len(keys), *keys, generation, *packed)
                if index:
                    outcomes.append(connection.read_response())
            outcomes.append(connection.read_response())
        except BaseException:
            connection.disconnect()  # replies may be left unread: never hand it back as is
            raise
        finally:
            self.client.connection_pool.release(connection)
        return outcomes

    def invalidate(self, pairs: set[tuple[str, str]]) -> int:
        if not pairs:
            return 0
        keys = [self.keys.available(warehouse, sku) for warehouse, sku in sorted(pairs)]
        return self.call(
            self._invalidate, [self.keys.generation_counter(), *keys], [GENERATION_KEEP_MS]
        )

    def try_lock(self, warehouse: str, sku: str, ttl_ms: int) -> str | None:
        token = secrets.token_hex(8)
        taken = self.call(
            self.client.set, self.keys.load_lock(warehouse, sku), token, None, ttl_ms, True
        )
        return token if taken else None

    def unlock(self, warehouse: str, sku: str, token: str) -> None:
        with contextlib.suppress(Unavailable):  # the lock expires by itself
            self.call(self._release, [self.keys.load_lock(warehouse, sku)], [token])


def pack(version: int, available: int, load_ms: float, expires_ms: float, ttl_ms: int) -> str:
    """One key's arguments for _WRITE_MANY (a known pair: never a negative entry)."""
    return f"{version},{available},{load_ms:.3f},{int(expires_ms)},{ttl_ms},0"


def now_ms() -> float:
    return time.time() * 1000.0
