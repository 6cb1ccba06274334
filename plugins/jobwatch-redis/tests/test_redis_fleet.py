"""A fleet of real processes: three receivers, two workers, one worker killed mid-stream."""

from __future__ import annotations

import random
import subprocess
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

pytestmark = pytest.mark.redis


def test_every_event_is_handled_once_across_the_fleet(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    stream = f"{prefix}:events"
    procs: list[subprocess.Popen[str]] = []
    try:
        logs = [tmp_path / f"{name}.log" for name in ("r1", "r2", "r3", "c1", "c2")]
        procs += [
            spawn("receiver", redis_url, prefix, stream, f"r{n}", SECRET, log=logs[n - 1])
            for n in (1, 2, 3)
        ]
        procs.append(spawn("consumer", redis_url, prefix, stream, "c1", log=logs[3]))
        procs.append(spawn("consumer", redis_url, prefix, stream, "c2", "4", log=logs[4]))
        lines = [first_line(proc, log) for proc, log in zip(procs, logs, strict=True)]
        urls, doomed = lines[:3], procs[4]

        items = deliveries(jobs=12, pages=6)
        sends = fan_out(items, len(urls), random.Random(9))
        cut = len(sends) * 2 // 3
        send_all(sends[:cut], urls)
        wait_for(lambda: client.get(f"{prefix}:hung"), 20, "worker c2 to hang in a callback")
        doomed.kill()  # mid-stream: inside a callback, with entries read but not acknowledged
        doomed.wait()
        send_all(sends[cut:], urls)

        assert_each_handled_once(client, tmp_path, stream, items)
        # published once each, by some receiver
        assert client.xlen(stream) == len({item.key for item in items})
    finally:
        stop(procs)
