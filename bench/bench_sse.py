"""SSE transport: throughput against plain httpx-sse, completion latency, memory at 10,000 jobs.

A child process serves Reader's workspace stream (``GET /v1/events``) with hypercorn on
loopback, port 0, in one of three modes; this process is the client:

- ``flood``: writes ``--frames`` pre-generated ``job:progress`` frames (``--jobs`` jobs, each
  counting up) as fast as it can, then only pings. Measured in alternating rounds: plain
  ``httpx_sse.aconnect_sse(...).aiter_sse()`` decoding each frame's data with ``json.loads``
  (the baseline), and a ``jobwatch.Watcher`` with
  the SSE transport (workspace scope) whose callback counts the progress events — parse,
  decode, dedup and ordering guard, store, dispatch. Each with the memory store, and with the
  sqlite store (a file in a temporary directory, WAL, synchronous=normal) over the first
  ``--sqlite-frames`` frames.
- ``latency``: every 5 ms writes one ``job:completed`` frame carrying the server's monotonic
  clock; the callback subtracts it from its own (one clock for both processes on Linux).
- ``memory``: the client watches 10,000 jobs on one workspace stream; the server answers their
  reconcile polls and streams three progress frames per job; the client's resident memory is
  read (psutil) before the Watcher starts and once every frame is dispatched.

    python bench/bench_sse.py [--frames 100000] [--jobs 1000] [--sqlite-frames 5000]
                              [--backend trio] [--rounds 3] [--gc-off]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio
import httpx

WATCHED = 10_000


# -- the server (child process) ------------------------------------------------------------


def _frames(count: int, jobs: int) -> bytes:
    per_job = max(1, count // jobs)
    lines = []
    for n in range(count):
        job, step = n % jobs, n // jobs + 1
        data = {
            "jobId": f"job_{job:05d}",
            "status": "processing",
            "completed": step,
            "total": per_job,
        }
        lines.append(f"event: job:progress\ndata: {json.dumps(data)}\n\n")
    return "".join(lines).encode()


def _app(mode: str, frames: int, jobs: int) -> Any:
    flood = _frames(frames, jobs) if mode == "flood" else b""
    memory = _frames(3 * WATCHED, WATCHED) if mode == "memory" else b""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] != "/v1/events":
            await _snapshot(scope["path"].rsplit("/", 1)[-1], send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        if mode == "latency":
            await _completions(send)
        else:
            body = flood or memory
            for start in range(0, len(body), 65_536):
                await _body(send, body[start : start + 65_536])
        while True:
            await anyio.sleep(1.0)
            await _body(send, b": ping\n\n")

    return app


async def _snapshot(job_id: str, send: Any) -> None:
    body = json.dumps(
        {
            "success": True,
            "data": {
                "id": job_id,
                "status": "processing",
                "mode": "batch",
                "completed": 0,
                "total": 3,
                "creditsUsed": 0,
                "error": None,
                "results": [],
                "startedAt": None,
                "completedAt": None,
                "createdAt": "2026-01-01T00:00:00Z",
            },
            "pagination": {"total": 0, "skip": 0, "limit": 1, "hasMore": False},
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _completions(send: Any) -> None:
    for n in range(100_000):
        await anyio.sleep(0.005)
        data = {
            "jobId": f"job_l{n:06d}",
            "status": "completed",
            "completed": 1,
            "total": 1,
            "creditsUsed": 1,
            "sentAt": time.monotonic(),
        }
        await _body(send, f"event: job:completed\ndata: {json.dumps(data)}\n\n".encode())


async def _body(send: Any, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _serve(mode: str, frames: int, jobs: int) -> None:
    from jobwatch.transports._serve import serve_app

    async with anyio.create_task_group() as tg:
        url = await tg.start(serve_app, _app(mode, frames, jobs), "127.0.0.1", 0)
        print(url, flush=True)


class _Server:
    """The child process serving one mode, as a context manager yielding its URL."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.command = [
            sys.executable,
            __file__,
            "--serve",
            mode,
            "--frames",
            str(args.frames),
            "--jobs",
            str(args.jobs),
            "--backend",
            args.backend,
        ]

    def __enter__(self) -> str:
        self.child = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True)
        assert self.child.stdout is not None
        url = self.child.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise RuntimeError(f"the bench server did not start: {url!r}")
        return url

    def __exit__(self, *exc: object) -> None:
        self.child.terminate()
        self.child.wait(10)


# -- the client (this process) -------------------------------------------------------------


def _config(url: str, store: str, folder: str) -> Any:
    import jobwatch

    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": url,
                "api_key": "rdr_bench",
                "transport": "sse",
                "store": store,
                "safety_poll": 0,
                "sse": {"scope": "workspace"},
                "sqlite": {"path": os.path.join(folder, "state.db")},
            }
        }
    )


async def _plain(url: str, frames: int) -> float:
    """The baseline: httpx-sse's iteration, each frame's data decoded with ``json.loads``."""
    from httpx_sse import aconnect_sse

    count = 0
    started = time.perf_counter()
    async with (
        httpx.AsyncClient(base_url=url, timeout=None) as client,
        aconnect_sse(client, "GET", "/v1/events") as source,
    ):
        async for frame in source.aiter_sse():
            json.loads(frame.data)
            count += 1
            if count == frames:
                return frames / (time.perf_counter() - started)
    raise RuntimeError("the stream ended early")


async def _jobwatch(url: str, frames: int, store: str) -> float:
    import jobwatch

    done = anyio.Event()
    count = 0

    def progress(event: jobwatch.JobEvent) -> None:
        nonlocal count
        count += 1
        if count == frames:
            done.set()

    with tempfile.TemporaryDirectory(prefix="jobwatch-bench-") as folder:
        watcher = jobwatch.Watcher(_config(url, store, folder))
        watcher.subscribe(progress, kinds=("progress",))
        started = time.perf_counter()
        async with watcher:
            await done.wait()
            elapsed = time.perf_counter() - started
    return frames / elapsed


async def _transport_only(url: str, frames: int) -> float:
    """The SSE transport and Reader's decoders feeding a host that only counts: no pipeline."""
    import jobwatch
    from jobwatch.abc import TransportHost
    from jobwatch.providers.reader import ReaderProvider
    from jobwatch.stores.memory import MemoryStore
    from jobwatch.transports.sse import SSEOptions, SSETransport

    config = _config(url, "memory", "")
    done = anyio.Event()

    class CountingHost(TransportHost):
        provider = ReaderProvider(config)
        store = MemoryStore()
        seen = 0

        async def request(self, request: Any) -> Any:
            raise NotImplementedError

        async def spend(self) -> None:
            pass

        async def deliver(
            self,
            events: Any,
            *,
            authoritative: bool = False,
            as_of: float | None = None,
            claim: tuple[str, float] | None = None,
        ) -> None:
            self.seen += sum(1 for e in events if e.kind == "progress")
            if self.seen >= frames:
                done.set()

        async def reconcile(self, job_ids: Any, *, reason: str) -> None:
            pass

        def watched(self) -> frozenset[str]:
            return frozenset()

        def end_job(self, job_id: str, error: jobwatch.JobwatchError) -> None:
            pass

        def count(self, transport: str, name: str, n: int = 1) -> None:
            pass

        @property
        def base_url(self) -> str:
            return url

    host = CountingHost()
    host.config = config
    transport = SSETransport(config.options("sse", SSEOptions))
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        await tg.start(transport.run, host)
        await done.wait()
        tg.cancel_scope.cancel()
    return frames / (time.perf_counter() - started)


async def _latency(url: str, samples: int) -> list[float]:
    import jobwatch

    delays: list[float] = []
    done = anyio.Event()

    def completed(event: jobwatch.JobEvent) -> None:
        delays.append(time.monotonic() - event.data["sentAt"])
        if len(delays) == samples:
            done.set()

    with tempfile.TemporaryDirectory(prefix="jobwatch-bench-") as folder:
        watcher = jobwatch.Watcher(_config(url, "memory", folder))
        watcher.subscribe(completed, kinds=("completed",))
        async with watcher:
            await done.wait()
    return delays


async def _memory(url: str) -> tuple[float, float, float, int]:
    import psutil

    import jobwatch
    import jobwatch.transports.sse  # noqa: F401 - imported before the first reading

    process = psutil.Process()
    before = process.memory_info().rss / 2**20
    done = anyio.Event()
    count = 0

    def progress(event: jobwatch.JobEvent) -> None:
        nonlocal count
        count += 1
        if count == 3 * WATCHED:
            done.set()

    with tempfile.TemporaryDirectory(prefix="jobwatch-bench-") as folder:
        watcher = jobwatch.Watcher(_config(url, "memory", folder))
        async with watcher:
            for n in range(WATCHED):
                watcher.subscribe(progress, kinds=("progress",), job_id=f"job_{n:05d}")
            await anyio.sleep(0.5)
            watching = process.memory_info().rss / 2**20
            await done.wait()
            after = process.memory_info().rss / 2**20
            connections = watcher.statistics().transports["sse"].get("streams_opened", 0)
    return before, watching, after, connections


def _throughput(args: argparse.Namespace) -> None:
    rounds: dict[str, list[float]] = {"plain": [], "decode": [], "memory": [], "sqlite": []}
    for number in range(args.rounds):
        for name in rounds:
            with _Server("flood", args) as url:
                if name == "plain":
                    rate = anyio.run(_plain, url, args.frames, backend=args.backend)
                elif name == "decode":
                    rate = anyio.run(_transport_only, url, args.frames, backend=args.backend)
                else:
                    # The sqlite store is slower: a prefix of the same stream is enough.
                    frames = (
                        args.frames if name == "memory" else min(args.frames, args.sqlite_frames)
                    )
                    rate = anyio.run(_jobwatch, url, frames, name, backend=args.backend)
            rounds[name].append(rate)
            print(f"  round {number + 1} {name:6s}: {rate:9.0f} events/s", flush=True)
    plain = max(rounds["plain"])
    print(f"  plain httpx-sse + json.loads    {plain:9.0f} events/s")
    decode = max(rounds["decode"])
    print(
        f"  sse transport + Reader decoding {decode:9.0f} events/s   {decode / plain:.2f}x "
        f"plain (a host that only counts: no dedup, store or dispatch)"
    )
    for name in ("memory", "sqlite"):
        best = max(rounds[name])
        print(f"  jobwatch sse ({name} store)    {best:9.0f} events/s   {best / plain:.2f}x plain")
    # Each round against the plain round just before it: the machine's noise cancels.
    for name in ("decode", "memory", "sqlite"):
        ratios = [r / p for r, p in zip(rounds[name], rounds["plain"], strict=True)]
        print(f"  round by round, {name}: " + ", ".join(f"{r:.2f}x" for r in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="frames in the flood")
    parser.add_argument("--jobs", type=int, default=1_000, help="jobs the flood is about")
    parser.add_argument(
        "--sqlite-frames", type=int, default=5_000, help="frames counted with the sqlite store"
    )
    parser.add_argument("--samples", type=int, default=400, help="latency samples")
    parser.add_argument("--backend", default="trio", choices=["asyncio", "trio"])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds of each; the best round of each counts",
    )
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="measure with Python's cyclic garbage collector disabled in the "
        "client (what allocation costs jobwatch)",
    )
    parser.add_argument("--serve", choices=["flood", "latency", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=["memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        anyio.run(_serve, args.serve, args.frames, args.jobs, backend=args.backend)
        return
    if args.client:
        _memory_report(args)
        return
    if args.gc_off:
        gc.disable()
    print(
        f"SSE benchmark: backend {args.backend}, hypercorn on loopback in a child process, "
        f"{os.cpu_count()} CPUs{', garbage collector off' if args.gc_off else ''}"
    )
    print(f"throughput: {args.frames} job:progress frames about {args.jobs} jobs")
    _throughput(args)
    with _Server("latency", args) as url:
        delays = anyio.run(_latency, url, args.samples, backend=args.backend)
    cuts = statistics.quantiles(delays, n=100)
    print(
        f"completion latency (server writes job:completed -> callback), {args.samples} "
        f"samples: p50 {cuts[49] * 1000:.2f} ms   p99 {cuts[98] * 1000:.2f} ms"
    )
    # A fresh process, so that the figures are not those of the runs above.
    command = [sys.executable, __file__, "--client", "memory", "--backend", args.backend]
    subprocess.run(command, check=True)


def _memory_report(args: argparse.Namespace) -> None:
    with _Server("memory", args) as url:
        before, watching, after, connections = anyio.run(_memory, url, backend=args.backend)
    print(
        f"memory: {WATCHED} watched jobs on {connections} connection(s), {3 * WATCHED} "
        f"frames dispatched: resident {after:.0f} MiB (process with jobwatch imported: "
        f"{before:.0f} MiB; {WATCHED} jobs subscribed, before any frame: "
        f"{watching:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
