"""`cangflow server start` refuses a taken port before it starts anything, and a state file left
by a server that died is not taken for a running server."""

from __future__ import annotations

import json
import socket

import pytest

from flows import local_server


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(local_server.ServerError, match=f"port {port} on 127.0.0.1 is taken"):
            local_server.start(tmp_path, host="127.0.0.1", port=port)
    assert not (tmp_path.resolve() / "prefect" / "server.json").exists()
    assert not (tmp_path.resolve() / "prefect" / "server.log").exists()


def test_a_state_file_of_a_dead_server_is_not_a_running_server(tmp_path):
    folder = local_server.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "server.json").write_text(
        json.dumps(
            {
                "api_url": "http://127.0.0.1:9/api",
                "ui_url": "http://127.0.0.1:9",
                "server_pid": 2**22 + 7,
                "worker_pid": None,
                "started_at": 0.0,
            }
        )
    )
    assert local_server.read_state(tmp_path) is not None
    assert local_server.running(tmp_path) is None
    assert local_server.stop(tmp_path) is False  # nothing ran; the stale file goes
    assert local_server.read_state(tmp_path) is None
