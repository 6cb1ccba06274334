"""Deliveries per second through webhook receivers on the redis store vs the sqlite store.

    python bench/bench_redis.py [--deliveries 2000] [--concurrency 32]

Runs on loopback only. Starts its own redis-server on a free port (so that its command
statistics count only this benchmark), then, for each scenario, real receiver processes
(``jobwatch`` Watchers with the webhook transport on port 0) and a sender that posts signed
Reader deliveries (20 % of them duplicates, spread over the receivers) as fast as
``--concurrency`` connections allow. Prints deliveries per second, and for the redis store the
Redis commands per delivery. Needs the plugin installed (``pip install -e
plugins/jobwatch-redis``) and ``redis-server`` on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SECRET = "whsec-bench-secret"


# -- a receiver node (this script, run with --node) --------------------------------------------


def _node(store: str, redis_url: str, sqlite_path: str, owner: str, relay: bool) -> None:
    import anyio

    from jobwatch import Config, Watcher
    from jobwatch.transports.webhook import WebhookTransport

    doc: dict[str, Any] = {
        "transport": "webhook",
        "store": store,
        "safety_poll": 0,
        "webhook": {"listen": "127.0.0.1:0", "secrets": [SECRET], "scheme": "reader"},
        "redis": {"url": redis_url, "prefix": "bench", "owner": owner},
        "sqlite": {"path": sqlite_path},
    }
    if relay:
        doc["relay"] = {"url": redis_url, "stream": "bench:events", "role": "publish"}
    config = Config.from_mapping({"jobwatch": doc})

    async def main() -> None:
        webhook = WebhookTransport.from_config(config)
        transports: list[Any] = [webhook]
        if relay:
            from jobwatch_redis import RelayTransport

            transports.append(RelayTransport.from_config(config))
        async with Watcher(config, transports=transports):
            print(webhook.url, flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)  # until the bench closes stdin

    anyio.run(main, backend="trio")


# -- the benchmark -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.RedisError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def _receivers(
    n: int, store: str, redis_url: str, sqlite_path: str, relay: bool
) -> tuple[list[subprocess.Popen[str]], list[str]]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--node",
                store,
                redis_url,
                sqlite_path,
                f"r{i}",
                "1" if relay else "0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    urls = []
    for proc in procs:
        assert proc.stdout is not None
        urls.append(proc.stdout.readline().strip())
    return procs, urls


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()


def _deliveries(count: int, rng: random.Random) -> list[tuple[bytes, str]]:
    unique = []
    for n in range(int(count * 0.8)):
        body = {"jobId": f"job_{n // 20}", "url": f"https://example.com/{n}", "markdown": "# x"}
        unique.append((json.dumps(body).encode(), str(uuid.uuid4())))
    sends = unique + rng.choices(unique, k=count - len(unique))
    rng.shuffle(sends)
    return sends


async def _send(urls: list[str], sends: list[tuple[bytes, str]], concurrency: int) -> float:
    import httpx

    queue = list(enumerate(sends))
    rng = random.Random(5)

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            _, (body, delivery) = queue.pop()
            stamp = str(int(time.time()))
            digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
            headers = {
                "content-type": "application/json",
                "x-reader-event": "job.page",
                "x-reader-delivery": delivery,
                "x-reader-timestamp": stamp,
                "x-reader-signature": f"sha256={digest.hexdigest()}",
            }
            reply = await client.post(rng.choice(urls), content=body, headers=headers)
            if reply.status_code != 200:
                raise SystemExit(f"receiver answered {reply.status_code}: {reply.text}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - started


def _commands(redis_url: str) -> int:
    import redis

    stats = redis.Redis.from_url(redis_url).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if not k.endswith(("info", "ping")))


def _scenario(
    name: str,
    receivers: int,
    store: str,
    relay: bool,
    args: argparse.Namespace,
    redis_url: str,
    folder: Path,
) -> float:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    sqlite_path = str(folder / f"{uuid.uuid4().hex}.db")
    procs, urls = _receivers(receivers, store, redis_url, sqlite_path, relay)
    try:
        sends = _deliveries(args.deliveries, random.Random(1))
        before = _commands(redis_url)
        seconds = asyncio.run(_send(urls, sends, args.concurrency))
        time.sleep(0.5)  # let acknowledgements and publishes land before counting
        ops = (_commands(redis_url) - before) / len(sends)
    finally:
        _stop(procs)
    rate = len(sends) / seconds
    extra = f"   {ops:5.1f} Redis commands/delivery" if store == "redis" else ""
    print(f"{name:<34} {rate:8.0f} deliveries/s{extra}", flush=True)
    return rate


def _store_rate(
    store_name: str, redis_url: str, folder: Path, count: int, concurrency: int
) -> float:
    """Records per second through one store in one process (record + ack, no HTTP)."""
    import functools

    import anyio
    from jobwatch_redis import RedisOptions, RedisStore

    from jobwatch._guard import decide
    from jobwatch.stores.sqlite import SQLiteStore
    from jobwatch.testing import make_event

    store: Any = (
        RedisStore(RedisOptions(url=redis_url, prefix="raw", owner="raw"))
        if store_name == "redis"
        else SQLiteStore(folder / f"{uuid.uuid4().hex}.db")
    )
    events = [make_event("page", f"job_{n // 20}", url=f"https://e/{n}") for n in range(count)]

    async def one(event: Any) -> None:
        verdict = await store.record(event.job_id, functools.partial(decide, event=event), ttl=60)
        if verdict.event is not None:
            await store.ack(verdict.event.key)

    async def main() -> float:
        await store.open()
        limiter = anyio.Semaphore(concurrency)

        async def bounded(event: Any) -> None:
            async with limiter:
                await one(event)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for event in events:
                tg.start_soon(bounded, event)
        elapsed = time.perf_counter() - started
        await store.aclose()
        return count / elapsed

    rate: float = anyio.run(main, backend="trio")
    print(f"store only, {store_name:<6} (record + ack)   {rate:8.0f} records/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server, url = _start_redis(folder)
        try:
            print(
                f"{args.deliveries} signed job.page deliveries (20 % duplicates), "
                f"{args.concurrency} connections, loopback\n"
            )
            raw_sqlite = _store_rate("sqlite", url, folder, args.deliveries, args.concurrency)
            raw_redis = _store_rate("redis", url, folder, args.deliveries, args.concurrency)
            print(f"store only: redis / sqlite = {raw_redis / raw_sqlite:.2f}\n")
            base = _scenario("1 receiver,  sqlite", 1, "sqlite", False, args, url, folder)
            one = _scenario("1 receiver,  redis", 1, "redis", False, args, url, folder)
            three_sqlite = _scenario(
                "3 receivers, sqlite (one file)", 3, "sqlite", False, args, url, folder
            )
            three = _scenario("3 receivers, redis", 3, "redis", False, args, url, folder)
            relay = _scenario(
                "3 receivers, redis + relay publish", 3, "redis", True, args, url, folder
            )
            print(
                f"\nratios vs 1 receiver on sqlite: redis x1 {one / base:.2f}, "
                f"sqlite x3 {three_sqlite / base:.2f}, redis x3 {three / base:.2f}, "
                f"redis x3 + relay {relay / base:.2f}"
            )
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--node":
        _node(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] == "1")
    else:
        main()
