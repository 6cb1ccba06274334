"""The SSE transport against hostile servers on loopback ports: credentials stay home, every
request is counted, memory and event-loop time stay bounded, ``retry:`` is clamped."""

from __future__ import annotations

import gc
import logging
import random
import re
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from _sse_support import (
    FakeReader,
    Hostile,
    Scope,
    Send,
    hostile_process,
    redirect,
    serving,
    start_stream,
    write,
)

import jobwatch
from jobwatch.providers.reader import ReaderProvider
from jobwatch.stores.memory import MemoryStore
from jobwatch.transports.sse import SSEOptions, SSETransport

pytestmark = pytest.mark.anyio

JOB = "job_1"
KEY = "rdr_hostile_test_key"
MiB = 2**20
#: What the transport may hold at once under the default bounds (4 MiB of a line or event,
#: 64 KiB pieces) plus the Watcher and the loopback server, measured with tracemalloc.
MEMORY_BOUND = 24 * MiB


def config(url: str, rpm: int = 100_000, **sse: Any) -> jobwatch.Config:
    options = {
        "scope": "workspace",
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "heartbeat_timeout": 5.0,
        **sse,
    }
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": url,
                "api_key": KEY,
                "store": "memory",
                "safety_poll": 0,
                "poll": {"rpm": rpm},
                "sse": options,
            }
        }
    )


def watcher(cfg: jobwatch.Config) -> jobwatch.Watcher:
    transport = SSETransport(cfg.options("sse", SSEOptions), rng=random.Random(0))
    return jobwatch.Watcher(
        cfg, transports=[transport], store=MemoryStore(), provider=ReaderProvider(cfg)
    )


def sse_stats(w: jobwatch.Watcher) -> dict[str, int]:
    return dict(w.statistics().transports.get("sse", {}))


async def until(condition: Any, limit: float = 20.0) -> None:
    """Wait until ``condition()`` holds, at most ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - no event to wait on: a predicate to poll
            await anyio.sleep(0.01)


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Trace allocations inside the block; the list holds the peak, in bytes, afterwards."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


@contextmanager
def earlier_objects_frozen() -> Iterator[None]:
    """Within the block, the cyclic collector leaves alone every object made before it: a full
    collection then traverses what the block makes, not the heap that a whole test session
    has built up by then (measured: 0.1 s and more for one collection late in the suite,
    which a lateness bound would otherwise charge to the code under test)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Lateness:
    """How late the event loop woke a task that sleeps in short ticks: the longest time some
    other code held the loop. A wake-up is late by the loop's clock; of that, only the CPU
    time this thread spent meanwhile was code holding the loop (the rest, the machine's other
    processes running instead of this one)."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self, tick: float = 0.005) -> None:
        while True:
            start, cpu = anyio.current_time(), time.thread_time()
            await anyio.sleep(tick)
            late = anyio.current_time() - start - tick
            self.worst = max(self.worst, min(late, time.thread_time() - cpu))


def progress(job: str, completed: int) -> bytes:
    return (
        f'event: job:progress\ndata: {{"jobId": "{job}", "status": "processing", '
        f'"completed": {completed}, "total": 9}}\n\n'
    ).encode()


# -- credentials and redirects -------------------------------------------------------------


async def test_a_redirect_to_another_origin_is_not_followed_and_never_gets_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stream(scope: Scope, send: Send) -> None:
        await start_stream(send)
        await write(send, progress(JOB, 1))
        await anyio.sleep_forever()

    elsewhere = Hostile(stream)
    async with serving(elsewhere) as other_url:

        async def moved(scope: Scope, send: Send) -> None:
            await redirect(send, 302, f"{other_url}/v1/events")

        api = Hostile(moved)
        async with serving(api) as url:
            async with watcher(config(url, fallback_interval=0.05, probe_interval=30)) as w:
                await until(lambda: sse_stats(w).get("fallbacks") == 1 or elsewhere.requests)
                stats = sse_stats(w)
    assert elsewhere.requests == []  # not even a request without the key
    assert [headers.get("x-api-key") for _, headers in api.requests] == [KEY] * len(api.requests)
    assert stats["requests"] == len(api.stream_opens) == 1
    assert "another origin" in caplog.text and other_url.rsplit(":", 1)[1] in caplog.text


async def test_a_stream_url_on_another_origin_gets_no_credentials() -> None:
    # A provider may take a job's stream URL from the job itself (Replicate's urls.stream):
    # the API's key and a password in base_url go to the API's own origin only.
    async def stream(scope: Scope, send: Send) -> None:
        await start_stream(send)
        await write(
            send, b'event: progress\ndata: {"status": "processing", "completed": 1, "total": 9}\n\n'
        )
        await anyio.sleep_forever()

    elsewhere = Hostile(stream)
    async with serving(elsewhere) as other_url, serving(Hostile(stream)) as url:

        class Elsewhere(ReaderProvider):
            def job_stream_request(self, job_id: str) -> jobwatch.abc.Request:
                return jobwatch.abc.Request(path=f"{other_url}/streams/{job_id}")

        cfg = config(url.replace("http://", "http://user:s3cret@"), scope="job")
        transport = SSETransport(cfg.options("sse", SSEOptions), rng=random.Random(0))
        async with jobwatch.Watcher(
            cfg, transports=[transport], store=MemoryStore(), provider=Elsewhere(cfg)
        ) as w:
            w.subscribe(lambda event: None, job_id=JOB)
            await until(lambda: bool(elsewhere.requests))
    (path, headers), *_ = elsewhere.requests
    assert path == f"/streams/{JOB}"
    assert "x-api-key" not in headers and "authorization" not in headers, headers


async def test_a_redirect_within_the_origin_is_followed_and_each_hop_is_spent() -> None:
    async def stream(scope: Scope, send: Send) -> None:
        if scope["path"] == "/v1/events":
            await redirect(send, 307, "/v2/events")
            return
        await start_stream(send)
        await write(send, progress(JOB, 3))
        await anyio.sleep_forever()

    server = Hostile(stream)
    async with serving(server) as url:
        async with watcher(config(url)) as w:
            seen: list[int | None] = []
            w.subscribe(lambda e: seen.append(e.completed), kinds=("progress",))
            await until(lambda: 3 in seen)
            stats, requests = sse_stats(w), w.statistics().requests
    assert [path for path, _ in server.requests] == ["/v1/events", "/v2/events"]
    assert stats["requests"] == 2 and stats["redirects"] == 1 and requests == 2


async def test_a_redirect_loop_is_bounded_and_every_request_is_counted() -> None:
    async def loop(scope: Scope, send: Send) -> None:
        await redirect(send, 302, scope["path"])

    server = Hostile(loop)
    async with serving(server) as url:
        async with watcher(config(url, fallback_interval=30, probe_interval=30)) as w:
            await until(lambda: sse_stats(w).get("fallbacks") == 1)
            stats, requests = sse_stats(w), w.statistics().requests
    # One attempt: the request and five redirects, then the endpoint counts as having no
    # stream; every one of them was spent from the budget.
    assert len(server.stream_opens) == stats["requests"] == 6
    assert stats["redirects"] == 5
    assert requests == len(server.requests)


async def test_a_password_in_base_url_is_never_printed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = FakeReader(stream_mode="html")
    async with serving(server) as url:
        secret_url = url.replace("http://", "http://user:hunter2secret@")
        async with watcher(config(secret_url, fallback_interval=30, probe_interval=30)) as w:
            await until(lambda: sse_stats(w).get("fallbacks") == 1)
    # A closed port: the NetworkError of every attempt is logged.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    cfg = config(
        f"http://user:hunter2secret@127.0.0.1:{port}",
        max_failures=2,
        fallback_interval=30,
        probe_interval=30,
    )
    async with watcher(cfg) as w:
        await until(lambda: sse_stats(w).get("fallbacks") == 1)
    assert "text/html" in caplog.text and "ConnectError" in caplog.text
    assert "hunter2secret" not in caplog.text


# -- memory and loop time ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        ("line", "a line of more than"),  # 64 MiB without a line feed
        ("gzip-bomb", "the stream is dropped"),  # 64 MiB of zeros in about 64 KiB of gzip
    ],
)
async def test_an_oversized_stream_is_dropped_within_bounded_memory(
    stream: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server runs in a child process: the peak is the transport's own.
    async with hostile_process() as url:
        with peak_memory() as peak:
            async with watcher(config(f"{url}/{stream}", max_failures=3, probe_interval=30)) as w:
                # A dropped stream is a failed attempt, however much it sent: three in a
                # row, each after a longer wait, and the stream falls back to polling.
                await until(lambda: sse_stats(w).get("fallbacks") == 1)
                stats = sse_stats(w)
    assert peak[0] < MEMORY_BOUND, f"peak {peak[0] / MiB:.1f} MiB"
    assert stats["oversized"] == 3 and stats["streams_opened"] == 3
    assert message in caplog.text


async def test_a_bomb_of_newlines_and_tiny_frames_keeps_the_loop_responsive() -> None:
    # Each read expands to megabytes of blank lines and tiny frames, within the bounds: the
    # transport must work through them in turns, and the stream goes on afterwards.
    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    flood = deflate.compress(b"\n" * 3 * MiB + b"data: x\n\n" * 50_000) + deflate.flush(
        zlib.Z_SYNC_FLUSH
    )
    final = deflate.compress(
        b'event: job:completed\ndata: {"jobId": "job_1", "status": '
        b'"completed", "completed": 9, "total": 9}\n\n'
    )
    final += deflate.flush(zlib.Z_SYNC_FLUSH)

    async def bomb(scope: Scope, send: Send) -> None:
        await start_stream(send, encoding=b"gzip")
        await write(send, flood)
        await write(send, final)
        await anyio.sleep_forever()

    server = Hostile(bomb)
    lateness = Lateness()
    with earlier_objects_frozen():
        async with serving(server) as url, anyio.create_task_group() as tg:
            tg.start_soon(lateness.run)
            async with watcher(config(url)) as w:
                with anyio.fail_after(60):
                    done = await w.wait(JOB)
                stats = sse_stats(w)
            tg.cancel_scope.cancel()
    assert done.kind == "completed" and done.source == "sse"
    assert stats["malformed"] == 50_000 and stats.get("oversized", 0) == 0
    assert lateness.worst < 0.25, f"the loop was held for {lateness.worst:.3f} s"


# -- retry: and the reconcile pace ---------------------------------------------------------


async def test_retry_zero_is_clamped_and_reconcile_polls_keep_the_budget_pace() -> None:
    jobs = [f"job_{n}" for n in range(10)]

    async def impatient(scope: Scope, send: Send) -> None:
        await start_stream(send)
        await write(send, b"retry: 0\n\n" + progress(jobs[0], 1), more=False)

    server = Hostile(impatient)
    async with serving(server) as url:
        async with watcher(config(url, rpm=60, backoff_max=5.0)) as w:
            subs = [w.subscribe(lambda e: None, job_id=job) for job in jobs]
            await until(lambda: len(server.stream_opens) >= 6)
            for sub in subs:
                sub.cancel()
    opens, polls = server.stream_opens, server.poll_times
    gaps = [b - a for a, b in zip(opens, opens[1:], strict=False)]
    assert min(gaps) >= 0.5 - 0.02, f"retry: 0 was not clamped: {gaps}"
    # rpm 60: after a burst of four, one reconcile poll a second, however often the stream
    # reconnects and however many jobs each reconnect asks to poll.
    for first in polls:
        within = [t for t in polls if first <= t < first + 1.0]
        assert len(within) <= 4 + 1 + 1, f"{len(within)} polls within a second"
    assert len(polls) <= 4 + (opens[-1] - polls[0]) + 2


async def test_a_huge_retry_is_clamped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobwatch.sse")

    async def patient(scope: Scope, send: Send) -> None:
        await start_stream(send)
        await write(send, b"retry: 99999999999\n\n" + progress(JOB, 1), more=False)

    server = Hostile(patient)
    async with serving(server) as url:
        async with watcher(config(url)):
            await until(lambda: "reconnecting in" in caplog.text)
    delay = float(re.findall(r"reconnecting in ([0-9.]+) s", caplog.text)[0])
    assert 30.0 <= delay <= 60.0


# -- ids follow the provider ---------------------------------------------------------------


async def test_ids_from_a_provider_without_resume_are_ignored_and_the_job_is_polled() -> None:
    # The server sends ids but does not replay (a proxy that adds ids, say). Reader's provider
    # says its streams carry none: no Last-Event-ID, and each reconnect is reconciled.
    server = FakeReader(
        snapshots={JOB: {"status": "processing", "completed": 0, "total": 9}},
        drop_after=2,
        replay=False,
    )
    async with serving(server) as url:
        async with watcher(config(url)) as w:
            sub = w.subscribe(lambda e: None, job_id=JOB)
            await until(lambda: len(server.stream_opens) == 1 and server.polls.get(JOB) == 1)
            server.snapshots[JOB] = {"status": "completed", "completed": 9, "total": 9}
            for n in (1, 2, 3):  # the connection drops instead of sending 3
                server.add(
                    "job:progress",
                    {"jobId": JOB, "status": "processing", "completed": n, "total": 9},
                )
            with anyio.fail_after(10):
                final = await w.wait(JOB)
            sub.cancel()
    assert final.kind == "completed" and final.source == "poll"
    assert all(ident is None for ident in server.last_event_ids)
    assert server.polls[JOB] == 2


class ReaderWithIds(ReaderProvider):
    """Reader's wire formats, from a server that sends ids and resumes from them."""

    capabilities = jobwatch.abc.Capabilities(
        job_stream=True, workspace_stream=True, stream_event_ids=True, webhook_scheme="reader"
    )


@pytest.mark.parametrize(
    ("ident", "resumed_with"),
    [
        ("é-2", "é-2"),  # not ASCII: sent back as UTF-8, as browsers do
        (" 2", "1"),  # no header value begins or ends with a space: ignored, the last kept
        ("2\t", "1"),
    ],
)
async def test_an_event_id_that_is_not_ascii_or_not_a_header_value_keeps_the_stream(
    ident: str, resumed_with: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def stream(scope: Scope, send: Send) -> None:
        await start_stream(send)
        if len(server.stream_opens) == 1:
            first = b"id: 1\n" + progress(JOB, 1) + f"id: {ident}\n".encode() + progress(JOB, 2)
            await write(send, first, more=False)
            return
        await write(send, progress(JOB, 3))
        await anyio.sleep_forever()

    server = Hostile(stream)
    async with serving(server) as url:
        cfg = config(url, probe_interval=30, fallback_interval=30)
        transport = SSETransport(cfg.options("sse", SSEOptions), rng=random.Random(0))
        async with jobwatch.Watcher(
            cfg, transports=[transport], store=MemoryStore(), provider=ReaderWithIds(cfg)
        ) as w:
            seen: list[int | None] = []
            w.subscribe(lambda e: seen.append(e.completed), kinds=("progress",))
            await until(lambda: 3 in seen)
            stats = sse_stats(w)
    assert seen == [1, 2, 3]
    assert [headers.get("last-event-id") for _, headers in server.requests] == [None, resumed_with]
    assert stats.get("fallbacks", 0) == 0
    assert (resumed_with == "1") == ("cannot be sent back as Last-Event-ID" in caplog.text)


async def test_a_saved_position_no_header_can_carry_is_not_sent() -> None:
    async def stream(scope: Scope, send: Send) -> None:
        await start_stream(send)
        await write(send, progress(JOB, 1))
        await anyio.sleep_forever()

    server = Hostile(stream)
    store = MemoryStore()
    await store.put_checkpoint("sse:workspace", "7 ")  # saved by an earlier version
    async with serving(server) as url:
        cfg = config(url, probe_interval=30, fallback_interval=30)
        transport = SSETransport(cfg.options("sse", SSEOptions), rng=random.Random(0))
        async with jobwatch.Watcher(
            cfg, transports=[transport], store=store, provider=ReaderWithIds(cfg)
        ) as w:
            seen: list[int | None] = []
            w.subscribe(lambda e: seen.append(e.completed), kinds=("progress",))
            await until(lambda: 1 in seen)
    assert [headers.get("last-event-id") for _, headers in server.requests] == [None]
