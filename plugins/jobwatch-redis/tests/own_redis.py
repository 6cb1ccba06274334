"""A redis-server of a test's own, on a free loopback port, without persistence.

For tests that reconfigure Redis (``maxmemory``, ``requirepass``) or stop it: the shared Redis
on 127.0.0.1:6379 is never touched by them. ``needs_server`` skips a test where
``redis-server`` is not on the PATH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import redis

__all__ = ["OwnRedis", "needs_server"]

needs_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server on the PATH"
)


class OwnRedis:
    """``redis-server`` started with ``args`` (``--requirepass PW``, say); ``close()`` kills it."""

    def __init__(self, *args: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        password = args[args.index("--requirepass") + 1] if "--requirepass" in args else None
        self.client = redis.Redis(port=self.port, password=password)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.02)

    def url(self, auth: str = "", db: str = "0") -> str:
        """Its URL; ``auth`` is the user part with its ``@`` (``":pw@"``)."""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        self.client.close()
        self.proc.kill()
        self.proc.wait()
