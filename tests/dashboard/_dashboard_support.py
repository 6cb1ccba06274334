"""Processes and helpers for the dashboard's tests: ``jobwatch sim`` and ``jobwatch dashboard``
run as the commands users run, on loopback ports, and Chromium driven by Playwright."""

from __future__ import annotations

import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from jobwatch.transports._serve import serve_app
from jobwatch.transports._sse_parser import Frame, FrameParser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "dashboard-token-0123456789abcdef"
XSS = "<img src=x onerror=alert(1)>"


def chromium_path() -> str:
    """Debian's chromium, or the one named by JOBWATCH_CHROMIUM; skips the test if none."""
    for candidate in (
        os.environ.get("JOBWATCH_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip(
        "no Chromium found (/usr/bin/chromium, chromium on PATH or JOBWATCH_CHROMIUM): "
        "install Debian's chromium package (apt-get install chromium) to run the "
        "browser tests"
    )


class Process:
    """A ``jobwatch`` command (or another ``program`` run by this Python) in a child
    process; ``url`` is what it printed first (``listening on URL``); ``lines`` holds the rest
    of its output."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
        program: Sequence[str] = ("-m", "jobwatch"),
    ) -> None:
        self.args = list(args)
        self.popen = subprocess.Popen(
            [sys.executable, *program, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        first = self.next_line(timeout)
        if not first.startswith("listening on "):
            self.stop()
            rest = "".join(self._drain())
            self.close()
            raise AssertionError(f"jobwatch {' '.join(args)} printed {first!r} first:\n{rest}")
        self.url = first.removeprefix("listening on ").strip()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put("")

    def next_line(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"jobwatch {' '.join(self.args)} printed nothing in {timeout} s"
            ) from None

    def _drain(self) -> Iterator[str]:
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                return
            if not line:
                return
            yield line

    def output(self) -> str:
        return "".join(self._drain())

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipe."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        self._reader.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``signum`` and wait for the process to end; its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(
                f"jobwatch {' '.join(self.args)} did not stop within "
                f"{timeout} s of {signal.Signals(signum).name}"
            ) from None


@contextmanager
def running(
    args: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    program: Sequence[str] = ("-m", "jobwatch"),
) -> Iterator[Process]:
    process = Process(args, cwd=cwd, env=env, program=program)
    try:
        yield process
    finally:
        process.close()


class Sim:
    """The simulator's admin routes (``/_sim/...``) of a ``jobwatch sim`` process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, headers={"x-api-key": "rdr_sim"}, timeout=10)

    def job(self, pages: int, *, delay: float = 1.0, fail: str | None = None) -> str:
        """Create a job of ``pages`` pages, each ``delay`` simulated seconds after the last;
        with ``fail``, the job then fails with that error."""
        steps: list[dict[str, Any]] = [{"kind": "page", "delay": delay} for _ in range(pages)]
        if fail is not None:
            steps.append({"kind": "fail", "error": fail, "delay": delay})
        answer = self.client.post("/_sim/jobs", json={"steps": steps})
        answer.raise_for_status()
        return str(answer.json()["data"]["id"])

    def cancel(self, job_id: str) -> None:
        self.client.post(f"/_sim/jobs/{job_id}/cancel").raise_for_status()

    def status(self, job_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/jobs/{job_id}", params={"limit": 1})
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()["data"]
        return data


def write_config(
    directory: Path,
    sim_url: str,
    *,
    token: str | None = TOKEN,
    safety_poll: float = 1.0,
    extra: str = "",
) -> Path:
    """A configuration that watches the simulator's workspace stream, with a sqlite store in
    ``directory`` (shared by a restarted dashboard)."""
    lines = [
        "[jobwatch]",
        f'base_url = "{sim_url}"',
        'api_key = "rdr_sim"',
        'transport = "sse"',
        f"safety_poll = {safety_poll}",
        "",
        "[jobwatch.sse]",
        'scope = "workspace"',
        "",
        "[jobwatch.sqlite]",
        f'path = "{directory / "state.db"}"',
        "",
        "[jobwatch.dashboard]",
    ]
    if token is not None:
        lines.append(f'token = "{token}"')
    path = directory / "jobwatch.toml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1, port 0, for the block; yield its base URL."""
    async with anyio.create_task_group() as tg:
        url = await tg.start(serve_app, app, "127.0.0.1", 0)
        try:
            yield url
        finally:
            tg.cancel_scope.cancel()


class RawClient:
    """An ``/events`` client on a bare socket, which reads only when told to (a stuck or a
    slow browser)."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.received = bytearray()

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, path: str = "/events") -> AsyncIterator[RawClient]:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        async with await anyio.connect_tcp(host, int(port)) as stream:
            # A small receive buffer, as a phone's or a busy browser's: what it does not read
            # soon holds the server's writes back.
            sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            yield cls(stream)

    async def read_until(self, marker: bytes, limit: int = 64 * 2**20) -> bytes:
        """Read until ``marker`` has arrived; everything read so far."""
        while marker not in self.received:
            if len(self.received) > limit:
                raise AssertionError(f"{marker!r} not among the first {limit} bytes")
            self.received += await self.stream.receive(2**20)
        return bytes(self.received)


@asynccontextmanager
async def sse(
    http: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[MemoryObjectReceiveStream[Frame]]:
    """Read ``url`` as an event stream in a task of its own; yield its frames as they come.

    (The reading ends by cancellation, as in jobwatch's own SSE transport, so that httpx's
    response iterators end with it rather than at garbage collection.)
    """
    send, receive = anyio.create_memory_object_stream[Frame](math.inf)

    async def pump() -> None:
        async with http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200, response.status_code
            parser = FrameParser()
            async for raw in response.aiter_raw():
                for frame in parser.feed(raw):
                    send.send_nowait(frame)
        send.close()  # the server ended the stream

    with send, receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                yield receive
            finally:
                tg.cancel_scope.cancel()


async def take(frames: MemoryObjectReceiveStream[Frame], count: int) -> list[Frame]:
    """The next ``count`` frames (fails after 20 s)."""
    with anyio.fail_after(20):
        return [await frames.receive() for _ in range(count)]
