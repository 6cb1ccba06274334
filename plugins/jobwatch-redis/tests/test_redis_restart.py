"""Redis restarted mid-run: receivers answer 503 meanwhile, workers reconnect, nothing is lost.

This test runs its own redis-server on a free port (with an append-only file, as production
should), so that stopping it disturbs no other test.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fleet import (
    SECRET,
    assert_each_handled_once,
    deliveries,
    fan_out,
    first_line,
    send_all,
    spawn,
    stop,
    wait_for,
)

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


class RedisServer:
    """A redis-server of our own in ``folder``, persisting every write to its AOF."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        wait_for(lambda: _pings(client), 10, "redis-server to start")
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
                capture_output=True,
                timeout=10,
                check=False,
            )
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    own = RedisServer(tmp_path)
    own.start()
    try:
        yield own
    finally:
        own.stop()


def test_nothing_is_lost_when_redis_restarts(server: RedisServer, tmp_path: Path) -> None:
    url, prefix = server.url, "jw"
    stream = f"{prefix}:events"
    logs = [tmp_path / f"{name}.log" for name in ("r1", "r2", "c1")]
    procs = [
        spawn("receiver", url, prefix, stream, f"r{n}", SECRET, log=logs[n - 1]) for n in (1, 2)
    ]
    procs.append(spawn("consumer", url, prefix, stream, "c1", log=logs[2]))
    try:
        urls = [first_line(proc, log) for proc, log in zip(procs, logs, strict=True)][:2]
        items = deliveries(jobs=8, pages=5)
        sends = fan_out(items, len(urls), random.Random(3))
        third = len(sends) // 3
        send_all(sends[:third], urls)

        server.stop()
        statuses: dict[int, int] = {}
        during = threading.Thread(
            target=lambda: statuses.update(send_all(sends[third : 2 * third], urls))
        )
        during.start()
        time.sleep(2.0)  # deliveries meet a receiver that cannot record: 503, and retry
        server.start()
        during.join(timeout=60)
        send_all(sends[2 * third :], urls)

        client = redis.Redis.from_url(url)
        assert_each_handled_once(client, tmp_path, stream, items)
        assert statuses.get(503, 0) > 0 and not during.is_alive()
        client.close()
    finally:
        stop(procs)
