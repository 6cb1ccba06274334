"""The built-in server (``listen``, ``jobwatch listen``) against slow and greedy clients.

Bodies and headers must arrive in bounded time, connections are bounded below the descriptor
limit (the oldest idle one makes room for a new one), and failing accepts are logged at a
bounded rate. The last test is the attack itself: a receiver limited to 256 descriptors, in a
process of its own, answers genuine deliveries while hundreds of connections hold half a body.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import receiver_node

from jobwatch.transports import _serve
from jobwatch.transports._serve import RateLimitedLog, ServerLimits, lifespan, serve_app

NODE = Path(__file__).with_name("receiver_node.py")
HALF_A_BODY = (
    b"POST /hooks HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"content-length: 1000\r\n\r\n" + b"{" * 500
)


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body and answers 200; ``/hold`` waits for ``RELEASE`` first."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body"):
            break
    if scope["path"] == "/hold":
        HELD.set()
        await RELEASE.wait()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


HELD: anyio.Event
RELEASE: anyio.Event


@asynccontextmanager
async def serving(limits: ServerLimits) -> AsyncIterator[tuple[str, int]]:
    global HELD, RELEASE
    HELD, RELEASE = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        url = await tg.start(
            lambda task_status: serve_app(
                _echo, "127.0.0.1", 0, limits=limits, task_status=task_status
            )
        )
        yield url, int(url.rsplit(":", 1)[1])
        tg.cancel_scope.cancel()


async def _closed_by_server(stream: anyio.abc.SocketStream, within: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    with anyio.fail_after(within):
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


@pytest.mark.anyio
async def test_a_body_that_does_not_arrive_in_time_is_answered_408() -> None:
    async with serving(ServerLimits(body_timeout=0.3)) as (_, port):
        async with await anyio.connect_tcp("127.0.0.1", port) as slow:
            await slow.send(HALF_A_BODY)
            started = anyio.current_time()
            reply = await _closed_by_server(slow, within=5)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in reply.lower()
    assert 0.3 <= anyio.current_time() - started < 3


@pytest.mark.anyio
async def test_headers_that_do_not_arrive_in_time_close_the_connection() -> None:
    async with serving(ServerLimits(idle_timeout=0.3)) as (_, port):
        async with await anyio.connect_tcp("127.0.0.1", port) as slow:
            await slow.send(b"POST /hooks HTTP/1.1\r\nhost: x\r\n")  # and never the rest
            assert await _closed_by_server(slow, within=5) == b""


@pytest.mark.anyio
async def test_past_the_bound_the_oldest_idle_connections_make_room() -> None:
    async with serving(ServerLimits(max_connections=4)) as (url, port):
        idle = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(10)]
        async with httpx.AsyncClient() as client:
            reply = await client.post(url + "/hooks", content=b"{}")
        assert reply.status_code == 200
        closed = []
        for stream in idle:
            with anyio.move_on_after(0.2):
                try:
                    await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    closed.append(stream)
            await stream.aclose()
    # 11 connections with room for 4: the 7 oldest were closed, in the order they came.
    assert closed == idle[:7]


@pytest.mark.anyio
async def test_a_connection_processing_a_request_is_never_the_one_closed() -> None:
    async with serving(ServerLimits(max_connections=2)) as (url, port):
        async with (
            httpx.AsyncClient() as busy_client,
            httpx.AsyncClient() as client,
            anyio.create_task_group() as tg,
        ):
            held: list[httpx.Response] = []

            async def hold() -> None:
                held.append(await busy_client.post(url + "/hold", content=b"{}"))

            tg.start_soon(hold)
            await HELD.wait()
            idle = await anyio.connect_tcp("127.0.0.1", port)
            reply = await client.post(url + "/hooks", content=b"{}")
            assert reply.status_code == 200
            assert await _closed_by_server(idle, within=5) == b""
            await idle.aclose()
            RELEASE.set()
        assert [r.status_code for r in held] == [200]


@pytest.mark.anyio
async def test_keep_alive_requests_do_not_wait_for_delayed_acknowledgements() -> None:
    # Without TCP_NODELAY each response waits ~40 ms for the client's delayed ACK.
    async with serving(ServerLimits()) as (url, _), httpx.AsyncClient() as client:
        await client.post(url + "/hooks", content=b"{}")
        started = anyio.current_time()
        for _ in range(20):
            assert (await client.post(url + "/hooks", content=b"{}")).status_code == 200
        assert anyio.current_time() - started < 0.6


def test_trouble_is_logged_at_most_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    notes = RateLimitedLog(logging.getLogger("jobwatch.server"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "jobwatch.server"):
        for step in range(2000):  # 20 s of a failure every 10 ms
            now[0] = step * 0.01
            notes.note("accept failed", "Too many open files")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "accept failed 1 time(s): Too many open files",
        "accept failed 1000 time(s) in the last 10 s: Too many open files",
    ]


@pytest.mark.anyio
async def test_an_accept_out_of_descriptors_pauses_and_closes_an_idle_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # accept(2) failing with EMFILE: the loop pauses between tries (no spinning on a listener
    # that stays readable), closes the oldest idle connection, and logs once.
    server = _serve._Server(
        _echo, _serve._hypercorn_config(ServerLimits(), None, None), ServerLimits(max_connections=8)
    )
    idle = server.connections.admit(object())[0]
    tries: list[float] = []

    async def accept() -> Any:
        tries.append(anyio.current_time())
        if len(tries) <= 5:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        await anyio.sleep_forever()

    with caplog.at_level(logging.WARNING, "jobwatch.server"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._accept_loop, accept, tg)
            with anyio.fail_after(10):
                while len(tries) <= 5:  # noqa: ASYNC110 - the fake accept has no event to wait on
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert min(gaps) >= 0.09
    assert idle.scope.cancel_called
    assert [r.getMessage() for r in caplog.records if "accept failed" in r.getMessage()] == [
        "accept failed 1 time(s): Too many open files; retrying every 0.1 s, closing idle "
        "connections"
    ]


# -- the attack, against a receiver in a process of its own ------------------------------------


def _signed(body: bytes, secret: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-reader-event": "job.completed",
        "x-reader-delivery": str(uuid.uuid4()),
        "x-reader-timestamp": stamp,
        "x-reader-signature": f"sha256={digest}",
    }


def _start(backend: str, folder: Path, nofile: int) -> tuple[subprocess.Popen[str], str]:
    with (folder / "stderr").open("w") as errors:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(NODE),
                backend,
                str(folder / "state.db"),
                str(folder / "handled"),
                "0",
                str(nofile),
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError(f"the receiver did not start: {(folder / 'stderr').read_text()}")
    return proc, line.removeprefix("listening on ").strip()


def _open_slow(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send headers and half of the body they announce, each as
    soon as it is connected (the listen queue may hold some back for a while)."""
    slow = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        slow.append(sock)
    with selectors.DefaultSelector() as waiting:
        for sock in slow:
            waiting.register(sock, selectors.EVENT_WRITE)
        give_up = time.monotonic() + 5
        while waiting.get_map() and time.monotonic() < give_up:
            for key, _ in waiting.select(timeout=0.1):
                waiting.unregister(key.fileobj)
                try:
                    key.fileobj.send(HALF_A_BODY)  # type: ignore[union-attr]
                except OSError:  # refused, or closed already to make room for a newer one
                    pass
    time.sleep(0.5)  # the receiver accepts what it can
    return slow


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_genuine_deliveries_are_answered_while_slow_connections_hold_half_a_body(
    backend: str,
    tmp_path: Path,
    raise_descriptor_limit: Callable[[int], None],
) -> None:
    raise_descriptor_limit(1200)
    proc, url = _start(backend, tmp_path, nofile=256)
    slow: list[socket.socket] = []
    try:
        port = int(url.rsplit(":", 1)[1])
        slow = _open_slow(port, 600)  # the receiver may open 256 files
        answers: list[int | str] = []  # a status, or the error that stood for one
        latencies: list[float] = []
        with httpx.Client(timeout=5) as client:
            for n in range(20):
                body = json.dumps(
                    {"jobId": f"job_{n}", "status": "completed", "completed": 1, "total": 1}
                ).encode()
                started = time.monotonic()
                try:
                    reply = client.post(
                        f"{url}{receiver_node.PATH}",
                        content=body,
                        headers=_signed(body, receiver_node.SECRET),
                    )
                    answers.append(reply.status_code)
                except httpx.TransportError as exc:
                    answers.append(type(exc).__name__)
                latencies.append(time.monotonic() - started)
        cpu = _cpu_seconds(proc.pid)
    finally:
        for sock in slow:
            sock.close()
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    log = (tmp_path / "stderr").read_text()
    assert answers == [200] * 20, log[-2000:]
    assert max(latencies) < 3.0
    assert cpu < 10
    assert len(log) < 10_000, log[-2000:]
    handled = (tmp_path / "handled").read_text().splitlines()
    assert len(handled) == 20


@pytest.fixture
def raise_descriptor_limit() -> Any:
    """Raise this process's descriptor limit (for the attacking sockets), restored after."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)

    def raise_to(wanted: int) -> None:
        soft, hard = before
        if soft < wanted:
            if hard != resource.RLIM_INFINITY and hard < wanted:
                pytest.skip(f"needs {wanted} descriptors, the hard limit is {hard}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    yield raise_to
    resource.setrlimit(resource.RLIMIT_NOFILE, before)
