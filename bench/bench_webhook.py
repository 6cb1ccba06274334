"""Webhook receiver throughput: jobwatch's full receiver vs a bare HMAC-checking endpoint.

Both run on the same server (hypercorn via ``jobwatch.transports._serve.serve_app``, loopback,
port 0) in a child process, one at a time, while this process sends signed Reader deliveries
with an httpx client (bounded concurrency, bounded count). The full receiver verifies,
decodes, deduplicates and records every delivery in a sqlite store (WAL, synchronous=normal)
before answering 200, then dispatches it to a callback; the bare endpoint only checks the
HMAC and answers 200.

    python bench/bench_webhook.py [--count 4000] [--concurrency 32] [--backend asyncio]

Runs alternating rounds of each (the machine may be shared) and prints the best round of each:
deliveries per second, their ratio, and latency percentiles.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
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

SECRET = "bench-webhook-secret-0123456789"
PATH = "/hooks/reader"


# -- the two servers (child process) -----------------------------------------------------


async def _bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the body, checks Reader's HMAC, answers 200 or 401 — nothing else."""
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    headers = dict(scope["headers"])
    stamp = headers.get(b"x-reader-timestamp", b"")
    expected = hmac.new(SECRET.encode(), stamp + b"." + body, hashlib.sha256).hexdigest()
    good = hmac.compare_digest(headers.get(b"x-reader-signature", b""),
                               f"sha256={expected}".encode())
    reply = b'{"ok":true}' if good else b'{"ok":false}'
    await send({"type": "http.response.start", "status": 200 if good else 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(reply)).encode())]})
    await send({"type": "http.response.body", "body": reply})


async def _serve(mode: str, db: str) -> None:
    import jobwatch
    from jobwatch.stores.sqlite import SQLiteStore
    from jobwatch.transports._serve import serve_app
    from jobwatch.transports.webhook import WebhookTransport

    if mode == "bare":
        async with anyio.create_task_group() as tg:
            url = await tg.start(serve_app, _bare_app, "127.0.0.1", 0)
            print(url, flush=True)
        return
    config = jobwatch.Config.from_mapping({"jobwatch": {
        "transport": "webhook", "safety_poll": 0,
        "webhook": {"listen": "127.0.0.1:0", "secrets": [SECRET]}}})
    transport = WebhookTransport.from_config(config)
    store = SQLiteStore(db)
    dispatched = 0

    def count(event: jobwatch.JobEvent) -> None:
        nonlocal dispatched
        dispatched += 1

    watcher = jobwatch.Watcher(config, transports=[transport], store=store)
    watcher.subscribe(count)
    async with watcher:
        print(transport.bound_url, flush=True)
        await anyio.sleep_forever()


# -- the client (this process) -----------------------------------------------------------


def _deliveries(count: int, run: str) -> list[tuple[dict[str, str], bytes]]:
    out = []
    stamp = str(int(time.time()))
    for n in range(count):
        body = json.dumps({"jobId": f"job_{run}_{n}", "status": "completed", "completed": 10,
                           "total": 10, "creditsUsed": 10}).encode()
        digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        out.append(({
            "content-type": "application/json", "user-agent": "Reader-Webhook/1.0",
            "x-reader-event": "job.completed", "x-reader-delivery": f"d-{run}-{n}",
            "x-reader-timestamp": stamp, "x-reader-signature": f"sha256={digest.hexdigest()}",
        }, body))
    return out


async def _drive(url: str, deliveries: list[tuple[dict[str, str], bytes]],
                 concurrency: int) -> tuple[float, list[float]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    queue = iter(deliveries)
    async with httpx.AsyncClient(base_url=url, limits=limits, trust_env=False) as client:

        async def worker() -> None:
            for headers, body in queue:
                begin = time.perf_counter()
                reply = await client.post(PATH, content=body, headers=headers)
                latencies.append(time.perf_counter() - begin)
                if reply.status_code != 200:
                    raise RuntimeError(f"unexpected {reply.status_code}: {reply.text}")

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        return time.perf_counter() - started, latencies


def _measure(mode: str, args: argparse.Namespace, run: str) -> dict[str, float]:
    folder = tempfile.TemporaryDirectory(prefix="jobwatch-bench-")
    command = [sys.executable, __file__, "--serve", mode, "--backend", args.backend,
               "--db", os.path.join(folder.name, "state.db")]
    with folder, subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            url = child.stdout.readline().strip()
            if not url.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"the {mode} server did not start: {url!r}")
            warm = _deliveries(min(200, args.count), f"{mode}-{run}-warm")
            anyio.run(_drive, url, warm, args.concurrency, backend=args.backend)
            timed = _deliveries(args.count, f"{mode}-{run}")
            elapsed, latencies = anyio.run(_drive, url, timed, args.concurrency,
                                           backend=args.backend)
        finally:
            child.terminate()
            child.wait(10)
    cuts = statistics.quantiles(latencies, n=100)
    return {"rate": args.count / elapsed, "p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=4000, help="deliveries per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of each; the best round of each counts")
    parser.add_argument("--serve", choices=["bare", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        anyio.run(_serve, args.serve, args.db, backend=args.backend)
        return
    print(f"webhook receiver benchmark: {args.count} deliveries, concurrency "
          f"{args.concurrency}, backend {args.backend}, hypercorn on loopback, "
          f"{os.cpu_count()} CPUs")
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "full": []}
    for number in range(args.rounds):
        for mode in ("bare", "full"):
            rounds[mode].append(_measure(mode, args, f"{number}"))
            print(f"  round {number + 1} {mode}: {rounds[mode][-1]['rate']:.0f}/s", flush=True)
    bare = max(rounds["bare"], key=lambda r: r["rate"])
    full = max(rounds["full"], key=lambda r: r["rate"])
    for name, figures in (("bare HMAC endpoint", bare), ("jobwatch receiver (sqlite)", full)):
        print(f"  {name:28s} {figures['rate']:8.0f} deliveries/s   "
              f"p50 {figures['p50']:6.1f} ms   p99 {figures['p99']:6.1f} ms")
    print(f"  ratio: {full['rate'] / bare['rate']:.0%} of the bare endpoint's rate")


if __name__ == "__main__":
    main()
