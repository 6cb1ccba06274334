"""Webhook receiver throughput: jobwatch's full receiver vs a bare HMAC-checking endpoint.

Both run on the same server (hypercorn via ``jobwatch.transports._serve.serve_app``, loopback,
port 0) in a child process, one at a time, while client processes send signed Reader
deliveries over keep-alive HTTP/1.1 connections on bare asyncio streams (bounded concurrency,
bounded count; an httpx client saturates near 450 requests/s per process, below the servers).
The full receiver verifies, decodes, deduplicates and records every delivery in a sqlite store
(WAL, synchronous=normal) before answering 200, then dispatches it to a callback; the bare
endpoint only checks the HMAC and answers 200.

    python bench/bench_webhook.py [--count 6000] [--clients 2] [--concurrency 16]
                                  [--backend asyncio] [--rounds 6]

Runs alternating rounds of each (the machine may be shared) and prints the best round of each:
deliveries per second, deliveries per second of the server's CPU time, their ratios, and
latency percentiles; then the median, over the rounds, of each round's ratio to the bare round
run just before it — the figure a shared machine whose speed drifts from minute to minute
disturbs least.
"""

from __future__ import annotations

import argparse
import asyncio
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
    good = hmac.compare_digest(
        headers.get(b"x-reader-signature", b""), f"sha256={expected}".encode()
    )
    reply = b'{"ok":true}' if good else b'{"ok":false}'
    await send(
        {
            "type": "http.response.start",
            "status": 200 if good else 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(reply)).encode()),
            ],
        }
    )
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
    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "transport": "webhook",
                "safety_poll": 0,
                "webhook": {"listen": "127.0.0.1:0", "secrets": [SECRET]},
            }
        }
    )
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


# -- the clients (child processes) --------------------------------------------------------


def _deliveries(count: int, run: str) -> list[tuple[dict[str, str], bytes]]:
    out = []
    stamp = str(int(time.time()))
    for n in range(count):
        body = json.dumps(
            {
                "jobId": f"job_{run}_{n}",
                "status": "completed",
                "completed": 10,
                "total": 10,
                "creditsUsed": 10,
            }
        ).encode()
        digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        out.append(
            (
                {
                    "content-type": "application/json",
                    "user-agent": "Reader-Webhook/1.0",
                    "x-reader-event": "job.completed",
                    "x-reader-delivery": f"d-{run}-{n}",
                    "x-reader-timestamp": stamp,
                    "x-reader-signature": f"sha256={digest.hexdigest()}",
                },
                body,
            )
        )
    return out


async def _drive(
    url: str, deliveries: list[tuple[dict[str, str], bytes]], concurrency: int
) -> tuple[float, list[float]]:
    # A keep-alive HTTP/1.1 client on bare asyncio streams: httpx tops out near 450
    # requests/s per process here, below what the servers can take, so it would measure
    # itself. Requests are serialized before the clock starts.
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    wire = [_request_bytes(host, headers, body) for headers, body in deliveries]
    latencies: list[float] = []
    queue = iter(wire)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for request in queue:
                begin = time.perf_counter()
                writer.write(request)
                status, closing = await _read_response(reader)
                latencies.append(time.perf_counter() - begin)
                if status != 200:
                    raise RuntimeError(f"unexpected HTTP {status}")
                if closing:  # hypercorn ends a connection after 1,000 requests
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def _request_bytes(host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        f"POST {PATH} HTTP/1.1",
        f"host: {host}",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of the next response, and whether the server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    else:  # chunked
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, fields.get("connection", "").strip().lower() == "close"


def _client(url: str, count: int, concurrency: int, run: str, backend: str) -> None:
    """One client process: warm up, wait for the start line on stdin, send, report JSON."""
    asyncio.run(_drive(url, _deliveries(min(100, count), f"{run}-warm"), concurrency))
    timed = _deliveries(count, run)
    print("ready", flush=True)
    sys.stdin.readline()
    elapsed, latencies = asyncio.run(_drive(url, timed, concurrency))
    print(json.dumps({"elapsed": elapsed, "latencies": latencies}), flush=True)


def _start_server(mode: str, args: argparse.Namespace, db: str) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--serve", mode, "--backend", args.backend, "--db", db]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_clients(
    url: str, args: argparse.Namespace, run: str, server: int
) -> tuple[float, float, list[float]]:
    per = args.count // args.clients
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--drive",
                url,
                "--count",
                str(per),
                "--concurrency",
                str(max(1, args.concurrency // args.clients)),
                "--backend",
                args.backend,
                "--run",
                f"{run}-{n}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(args.clients)
    ]
    for child in children:  # every client is warmed up before any starts
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    started, cpu = time.perf_counter(), _cpu_seconds(server)
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate(timeout=600)[0] for child in children]
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds(server) - cpu
    latencies: list[float] = []
    for child, out in zip(children, outputs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"a client failed with exit code {child.returncode}")
        latencies.extend(json.loads(out.strip().splitlines()[-1])["latencies"])
    return elapsed, cpu, latencies


def _measure(mode: str, args: argparse.Namespace, run: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="jobwatch-bench-") as folder:
        server = _start_server(mode, args, os.path.join(folder, "state.db"))
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            if not url.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"the {mode} server did not start: {url!r}")
            elapsed, cpu, latencies = _run_clients(url, args, f"{mode}-{run}", server.pid)
        finally:
            server.terminate()
            server.wait(10)
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "rate": len(latencies) / elapsed,
        "per_cpu": len(latencies) / max(cpu, 1e-9),
        "p50": cuts[49] * 1000,
        "p99": cuts[98] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=6000, help="deliveries per measurement")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight, over all client processes"
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="alternating rounds of each; the best round of each counts",
    )
    parser.add_argument("--serve", choices=["bare", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    parser.add_argument("--run", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        anyio.run(_serve, args.serve, args.db, backend=args.backend)
        return
    if args.drive:
        _client(args.drive, args.count, args.concurrency, args.run, args.backend)
        return
    print(
        f"webhook receiver benchmark: {args.count} deliveries per round, {args.clients} "
        f"client processes, {args.concurrency} requests in flight, backend "
        f"{args.backend}, hypercorn on loopback, {os.cpu_count()} CPUs"
    )
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "full": []}
    for number in range(args.rounds):
        for mode in ("bare", "full"):
            rounds[mode].append(_measure(mode, args, f"{number}"))
            last = rounds[mode][-1]
            print(
                f"  round {number + 1} {mode}: {last['rate']:.0f}/s, "
                f"{last['per_cpu']:.0f} per server CPU second",
                flush=True,
            )
    bare = max(rounds["bare"], key=lambda r: r["rate"])
    full = max(rounds["full"], key=lambda r: r["rate"])
    cheap = {mode: max(r["per_cpu"] for r in rounds[mode]) for mode in rounds}
    for name, mode, figures in (
        ("bare HMAC endpoint", "bare", bare),
        ("jobwatch receiver (sqlite)", "full", full),
    ):
        print(
            f"  {name:28s} {figures['rate']:6.0f} deliveries/s  "
            f"{cheap[mode]:6.0f} per server CPU s  "
            f"p50 {figures['p50']:5.1f} ms  p99 {figures['p99']:6.1f} ms"
        )
    print(
        f"  ratio: {full['rate'] / bare['rate']:.0%} of the bare endpoint's rate; "
        f"{cheap['full'] / cheap['bare']:.0%} of its deliveries per server CPU second"
    )
    paired = [f["rate"] / b["rate"] for b, f in zip(rounds["bare"], rounds["full"], strict=True)]
    print(
        f"  round by round: {', '.join(f'{r:.0%}' for r in paired)}; "
        f"median {statistics.median(paired):.0%}"
    )


if __name__ == "__main__":
    main()
