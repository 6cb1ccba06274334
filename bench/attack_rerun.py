"""Repeat the attacks of an adversarial run against jobwatch; print one table of figures.

    python bench/attack_rerun.py [--kills 50] [--senders 8] [--only NAME ...]

Loopback only. The attacks: a sqlite-backed receiver SIGKILLed under concurrent senders;
Redis killed twice under a fleet; the answer to a Redis commit lost while Redis stays away;
slow connections holding half a body; captured deliveries replayed and relabelled under each
signature scheme (to the same receiver, after a restart, after 10,000 other deliveries, once
the job runs again); hostile SSE servers (a redirect to another origin, a redirect loop, a
64 MiB line, a gzip bomb, a bomb of newlines, ``retry:`` at both extremes); a password in
``base_url`` against every log line; damaged sqlite files. Each reuses the helpers of the
test that keeps the attack in the suite — the tests assert, this prints what they measure.
The Redis rows need ``redis-server`` on the PATH and Redis on 127.0.0.1:6379 (db 15).
``NAME`` is one of: crash, redis, lost-answer, slowloris, replays, sse, redaction, damage.
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import logging
import os
import random
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent
for folder in ("tests", "tests/webhook", "tests/sse", "tests/core", "plugins/jobwatch-redis/tests"):
    sys.path.insert(0, str(ROOT / folder))

import jobwatch  # noqa: E402

MiB = 2**20


class Row(NamedTuple):
    attack: str
    measure: str
    figure: str
    holds: bool


# -- a sqlite receiver killed under concurrent senders ----------------------------------------


def crash(kills: int, senders: int) -> list[Row]:
    import test_crash

    folder = Path(tempfile.mkdtemp(prefix="jobwatch-crash-"))
    receiver = test_crash.Receiver(folder)
    receiver.start()
    sent: list[str] = []
    done = threading.Event()
    give_up = time.monotonic() + 60 + 3 * kills
    rng = random.Random(int(os.environ.get("JOBWATCH_CRASH_SEED", "18")))

    def sender(number: int) -> None:
        with httpx.Client(timeout=5) as client:
            while not done.is_set():
                job_id = f"job_{number}_{uuid.uuid4().hex[:8]}"
                sent.append(job_id)
                test_crash._send_until_acknowledged(client, receiver, job_id, give_up)

    try:
        with ThreadPoolExecutor(senders) as pool:
            running = [pool.submit(sender, n) for n in range(senders)]
            for _ in range(kills):
                time.sleep(rng.uniform(0.3, 1.5))
                receiver.kill()
                receiver.start()
            time.sleep(0.5)
            done.set()
            for future in running:
                future.result()
        deadline = time.monotonic() + 20
        while {job for _, job in test_crash._handled(folder)} < set(
            sent
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        receiver.stop()
    handled = test_crash._handled(folder)
    seen = collections.Counter(job for _, job in handled)
    lost = len(set(sent) - set(seen))
    twice_in_a_run = sum(
        (collections.Counter(handled) - collections.Counter(set(handled))).values()
    )
    again = sum(n - 1 for n in seen.values())
    shutil.rmtree(folder, ignore_errors=True)
    what = f"sqlite receiver SIGKILLed {kills}x, {senders} senders"
    return [
        Row(
            what,
            "deliveries acknowledged / dispatched",
            f"{len(sent):,} / {len(seen):,}",
            lost == 0,
        ),
        Row(what, "acknowledged and lost", str(lost), lost == 0),
        Row(what, "dispatched again after a restart", f"{again:,}", True),
        Row(what, "dispatched twice by one process", str(twice_in_a_run), twice_in_a_run == 0),
    ]


# -- Redis killed under a fleet ----------------------------------------------------------------


def redis_killed() -> list[Row]:
    import fleet
    import test_redis_restart

    folder = Path(tempfile.mkdtemp(prefix="jobwatch-redis-"))
    server = test_redis_restart.RedisServer(folder)
    server.start()
    url, prefix = server.url, "jw"
    stream = f"{prefix}:events"
    logs = [folder / f"{name}.log" for name in ("r1", "r2", "c1")]
    procs = [
        fleet.spawn("receiver", url, prefix, stream, f"r{n}", fleet.SECRET, log=logs[n - 1])
        for n in (1, 2)
    ]
    procs.append(fleet.spawn("consumer", url, prefix, stream, "c1", log=logs[2]))
    statuses: collections.Counter[int] = collections.Counter()
    try:
        urls = [fleet.first_line(proc, log) for proc, log in zip(procs, logs, strict=True)][:2]
        items = fleet.deliveries(jobs=20, pages=5)
        sends = fleet.fan_out(items, len(urls), random.Random(3))
        parts = [sends[i * len(sends) // 5 : (i + 1) * len(sends) // 5] for i in range(5)]
        statuses.update(fleet.send_all(parts[0], urls))
        for down, after in ((parts[1], parts[2]), (parts[3], parts[4])):
            server.stop()  # killed mid-run: deliveries meet receivers that cannot record
            during = threading.Thread(
                target=lambda d=down: statuses.update(fleet.send_all(d, urls, deadline=60))
            )
            during.start()
            time.sleep(2.0)
            server.start()
            during.join(timeout=90)
            statuses.update(fleet.send_all(after, urls))
        expected = {item.key for item in items}
        deadline = time.monotonic() + 30
        while len(fleet.handled(folder)) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # anything handled twice shows by now
        counts = fleet.handled(folder)
    finally:
        fleet.stop(procs)
        server.stop()
    lost = len(expected - set(counts))
    twice = sum(1 for n in counts.values() if n > 1)
    shutil.rmtree(folder, ignore_errors=True)
    what = "Redis killed twice, 2 receivers + 1 worker"
    return [
        Row(
            what,
            "events / deliveries sent (duplicates included)",
            f"{len(expected)} / {len(sends)}",
            True,
        ),
        Row(what, "answered 503 while Redis was down", str(statuses.get(503, 0)), True),
        Row(
            what,
            "events handled once / lost / twice",
            f"{sum(1 for n in counts.values() if n == 1)} / {lost} / {twice}",
            lost == 0 and twice == 0,
        ),
    ]


# -- the answer to a Redis commit lost ---------------------------------------------------------


def lost_answer() -> list[Row]:
    import redis
    import test_redis_adoption as adoption
    from jobwatch_redis._scripts import COMMIT_BATCH
    from redis_proxy import RedisProxy

    url = "redis://127.0.0.1:6379/15"
    rows = []
    for retry_to in ("the same receiver", "another receiver", "nobody"):
        prefix = f"jwrerun:{uuid.uuid4().hex[:8]}"
        client = redis.Redis.from_url(url)
        client.script_load(COMMIT_BATCH)
        proxy = RedisProxy()
        try:
            figures = anyio.run(
                _lose_an_answer, adoption, proxy, url, prefix, retry_to, backend="trio"
            )
        finally:
            proxy.close()
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()
        dispatched, seconds = figures
        rows.append(
            Row(
                "commit ran, answer lost, Redis away > record_deadline",
                f"503, retry to {retry_to}: dispatched without a restart",
                f"{dispatched} of 1, {seconds:.1f} s after Redis was back",
                dispatched == 1,
            )
        )
    return rows


async def _lose_an_answer(
    adoption: Any, proxy: Any, url: str, prefix: str, retry_to: str
) -> tuple[int, float]:
    first: list[jobwatch.JobEvent] = []
    other: list[jobwatch.JobEvent] = []
    async with (
        adoption._receiver(proxy.url(), prefix, "r1", first) as r1,
        adoption._receiver(url, prefix, "r2", other) as r2,
    ):
        await adoption._lose_the_answer(r1, proxy)
        refused_at = anyio.current_time()
        body, headers = adoption._delivery()
        if retry_to != "nobody":
            target = r1 if retry_to == "the same receiver" else r2
            await target.post(adoption.PATH, content=body, headers=headers)
        with anyio.move_on_after(10):
            while not first:  # noqa: ASYNC110 - the callback sets nothing to wait on
                await anyio.sleep(0.01)
        seconds = anyio.current_time() - refused_at
        await anyio.sleep(1.1)
    return len(first) + len(other), seconds


# -- slow connections holding half a body ------------------------------------------------------


def slowloris(connections: int = 1100, limit: int = 1024) -> list[Row]:
    import receiver_node
    import test_webhook_hostile as hostile

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(connections + 300, hard)), hard))
    rows = []
    for backend in ("trio", "asyncio"):
        folder = Path(tempfile.mkdtemp(prefix="jobwatch-slow-"))
        proc, url = hostile._start(backend, folder, nofile=limit)
        slow: list[socket.socket] = []
        answers: list[int | str] = []
        latencies: list[float] = []
        try:
            slow = hostile._open_slow(int(url.rsplit(":", 1)[1]), connections)
            with httpx.Client(timeout=5) as client:
                for n in range(20):
                    body = json.dumps(
                        {"jobId": f"job_{n}", "status": "completed", "completed": 1, "total": 1}
                    ).encode()
                    started = time.monotonic()
                    try:
                        answers.append(
                            client.post(
                                f"{url}{receiver_node.PATH}",
                                content=body,
                                headers=hostile._signed(body, receiver_node.SECRET),
                            ).status_code
                        )
                    except httpx.TransportError as exc:
                        answers.append(type(exc).__name__)
                    latencies.append(time.monotonic() - started)
            cpu = hostile._cpu_seconds(proc.pid)
        finally:
            for sock in slow:
                sock.close()
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        log_bytes = (folder / "stderr").stat().st_size
        shutil.rmtree(folder, ignore_errors=True)
        ok = answers.count(200)
        rows.append(
            Row(
                f"{connections:,} half-body connections, {limit:,} descriptors ({backend})",
                "genuine deliveries answered 200; slowest; CPU; log",
                f"{ok}/20; {max(latencies) * 1000:.0f} ms; {cpu:.1f} s; {log_bytes:,} B",
                ok == 20,
            )
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return rows


# -- captured deliveries replayed and relabelled, under each scheme -----------------------------

_SECRET = "whsec-rerun-secret-0123456789"
SCHEMES: dict[str, Any] = {
    "reader": "reader",
    "github": "github",
    "stripe": "stripe",
    "standard-webhooks": "standard-webhooks",
    "hmac-sha256": {"name": "hmac-sha256", "header": "X-Signature", "prefix": "sha256="},
}
PAGE = {"jobId": "job_9", "url": "https://example.com/p1", "markdown": "# p1"}


def replays() -> list[Row]:
    rows = []
    for name, scheme in SCHEMES.items():
        statuses, dispatched, sent = anyio.run(_replay, scheme, backend="trio")
        refused = sum(n for s, n in statuses.items() if s.startswith("400"))
        rows.append(
            Row(
                f"replays and relabels ({name})",
                "sent; dispatched; answered duplicate; refused 400",
                f"{sent}; {dispatched}; {statuses.get('duplicate', 0)}; {refused}",
                dispatched == 0 and refused + statuses.get("duplicate", 0) == sent,
            )
        )
    return rows


def _scheme_config(scheme: Any, store: dict[str, Any]) -> jobwatch.Config:
    secret = (
        "whsec_" + base64.b64encode(_SECRET.encode()).decode()
        if scheme == "standard-webhooks"
        else _SECRET
    )
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "transport": "webhook",
                "safety_poll": 0,
                **store,
                "webhook": {"secrets": [secret], "scheme": scheme},
            }
        }
    )


async def _replay(scheme: Any) -> tuple[collections.Counter[str], int, int]:
    from _webhook_helpers import receiving, until

    from jobwatch.abc import JobState
    from jobwatch.stores.memory import MemoryStore
    from jobwatch.stores.sqlite import SQLiteStore
    from jobwatch.transports.webhook import WebhookTransport

    folder = Path(tempfile.mkdtemp(prefix="jobwatch-replay-"))
    cfg = _scheme_config(scheme, {"store": "sqlite", "sqlite": {"path": str(folder / "s.db")}})
    signer = WebhookTransport.from_config(cfg).scheme
    assert signer is not None
    path = "/hooks/reader"

    def signed(body: bytes, event: str, delivery: str) -> dict[str, str]:
        return {
            **signer.sign(body, now=time.time(), delivery_id=delivery),
            "content-type": "application/json",
            "x-reader-event": event,
            "x-reader-delivery": delivery,
        }

    body = json.dumps(PAGE).encode()
    captured = signed(body, "job.page", "d-original")
    # Unsigned headers changed: the event name, the delivery id.
    forged = [
        {**captured, "x-reader-event": event, "x-reader-delivery": f"d-forged-{n}"}
        for n, event in enumerate(("job.failed", "credit.low", "job.completed"))
    ]
    again = [{**captured, "x-reader-delivery": f"d-fresh-{n}"} for n in range(3)]
    statuses: collections.Counter[str] = collections.Counter()
    dispatched = 0

    async def attack(client: Any) -> None:
        for headers in [captured, *forged, *again]:
            reply = await client.post(path, content=body, headers=headers)
            statuses[
                "duplicate"
                if reply.status_code == 200 and reply.json().get("duplicate")
                else f"{reply.status_code}"
            ] += 1

    async def run_again(store: Any) -> None:  # a poll saw the job's second run
        await store.put_job(
            JobState(
                job_id="job_9",
                run=2,
                started=True,
                watched=True,
                status=jobwatch.JobStatus.PROCESSING,
            )
        )

    async with (
        receiving(cfg, store=SQLiteStore(folder / "s.db")) as running,
        running.client() as client,
    ):
        assert (await client.post(path, content=body, headers=captured)).status_code == 200
        await until(lambda: len(running.events) == 1)
        for headers in [*forged, *again]:
            reply = await client.post(path, content=body, headers=headers)
            statuses[
                "duplicate"
                if reply.status_code == 200 and reply.json().get("duplicate")
                else f"{reply.status_code}"
            ] += 1
        await anyio.sleep(0.1)
        dispatched += len(running.events) - 1
    store = SQLiteStore(folder / "s.db")
    await store.open()
    await run_again(store)
    await store.aclose()
    async with (
        receiving(cfg, store=SQLiteStore(folder / "s.db")) as running,
        running.client() as client,
    ):  # restarted, the job in its second run
        await attack(client)
        await anyio.sleep(0.1)
        dispatched += len(running.events)
    memory = MemoryStore()
    cfg = _scheme_config(scheme, {"store": "memory"})
    async with receiving(cfg, store=memory) as running, running.client() as client:
        receiver = running.transport.receiver
        assert receiver is not None
        await receiver.handle("POST", path, captured, body)
        for n in range(10_001):
            other = json.dumps({"jobId": f"job_{n}", "url": f"https://example.com/{n}"})
            await receiver.handle(
                "POST", path, signed(other.encode(), "job.page", f"o{n}"), other.encode()
            )
        await until(lambda: len(running.events) == 10_002, 30)
        await run_again(memory)
        await attack(client)
        await anyio.sleep(0.1)
        dispatched += len(running.events) - 10_002
    shutil.rmtree(folder, ignore_errors=True)
    return statuses, dispatched, sum(statuses.values())


# -- hostile SSE servers -----------------------------------------------------------------------


@contextmanager
def _captured(level: int = logging.DEBUG) -> Iterator[list[str]]:
    """Every log line of the block, formatted as a handler would print it."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    root = logging.getLogger()
    handler, before = Keep(level), root.level
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(before)


def sse() -> list[Row]:
    return anyio.run(_sse, backend="trio")


async def _sse() -> list[Row]:
    import re
    import zlib

    import test_sse_hostile as h
    from _sse_support import Hostile, hostile_process, redirect, serving, start_stream, write

    rows = []

    async def moved_stream(scope: Any, send: Any) -> None:
        await start_stream(send)
        await write(send, h.progress(h.JOB, 1))
        await anyio.sleep_forever()

    elsewhere = Hostile(moved_stream)
    async with serving(elsewhere) as other_url:

        async def moved(scope: Any, send: Any) -> None:
            await redirect(send, 302, f"{other_url}/v1/events")

        api = Hostile(moved)
        async with serving(api) as url:
            async with h.watcher(h.config(url, fallback_interval=0.05, probe_interval=30)) as w:
                await h.until(lambda: h.sse_stats(w).get("fallbacks") == 1 or elsewhere.requests)
    leaked = sum(1 for _, headers in elsewhere.requests if headers.get("x-api-key"))
    rows.append(
        Row(
            "SSE: 302 to another origin",
            "requests to the other origin; key sent",
            f"{len(elsewhere.requests)}; {leaked}",
            not elsewhere.requests,
        )
    )

    async def loop(scope: Any, send: Any) -> None:
        await redirect(send, 302, scope["path"])

    server = Hostile(loop)
    async with serving(server) as url:
        async with h.watcher(h.config(url, fallback_interval=30, probe_interval=30)) as w:
            await h.until(lambda: h.sse_stats(w).get("fallbacks") == 1)
            budget = w.statistics().requests
    rows.append(
        Row(
            "SSE: redirect loop",
            "requests made / taken from the budget",
            f"{len(server.requests)} / {budget}",
            len(server.requests) == budget,
        )
    )

    for stream, what in (
        ("line", "64 MiB line without a newline"),
        ("gzip-bomb", "gzip bomb, 64 MiB of zeros in ~64 KiB"),
    ):
        async with hostile_process() as url:
            with h.peak_memory() as peak:
                async with h.watcher(
                    h.config(f"{url}/{stream}", max_failures=3, probe_interval=30)
                ) as w:
                    await h.until(lambda w=w: h.sse_stats(w).get("fallbacks") == 1, 60)
                    dropped = h.sse_stats(w).get("oversized", 0)
        rows.append(
            Row(
                f"SSE: {what}",
                "peak traced memory; streams dropped",
                f"{peak[0] / MiB:.1f} MiB; {dropped}",
                peak[0] < h.MEMORY_BOUND and dropped == 3,
            )
        )

    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    flood = deflate.compress(b"\n" * 3 * MiB + b"data: x\n\n" * 50_000) + deflate.flush(
        zlib.Z_SYNC_FLUSH
    )
    final = deflate.compress(
        b'event: job:completed\ndata: {"jobId": "job_1", "status": '
        b'"completed", "completed": 9, "total": 9}\n\n'
    )
    final += deflate.flush(zlib.Z_SYNC_FLUSH)

    async def bomb(scope: Any, send: Any) -> None:
        await start_stream(send, encoding=b"gzip")
        await write(send, flood)
        await write(send, final)
        await anyio.sleep_forever()

    lateness = h.Lateness()
    async with serving(Hostile(bomb)) as url, anyio.create_task_group() as tg:
        tg.start_soon(lateness.run)
        async with h.watcher(h.config(url)) as w:
            with anyio.fail_after(60):
                done = await w.wait(h.JOB)
        tg.cancel_scope.cancel()
    rows.append(
        Row(
            "SSE: 3 MiB of newlines + 50,000 empty frames, gzipped",
            "longest hold of the event loop; job seen completed",
            f"{lateness.worst * 1000:.0f} ms; {done.kind == 'completed'}",
            lateness.worst < 0.25 and done.kind == "completed",
        )
    )

    jobs = [f"job_{n}" for n in range(10)]

    async def impatient(scope: Any, send: Any) -> None:
        await start_stream(send)
        await write(send, b"retry: 0\n\n" + h.progress(jobs[0], 1), more=False)

    server = Hostile(impatient)
    async with serving(server) as url:
        async with h.watcher(h.config(url, rpm=60, backoff_max=5.0)) as w:
            subs = [w.subscribe(lambda e: None, job_id=job) for job in jobs]
            await h.until(lambda: len(server.stream_opens) >= 6)
            for sub in subs:
                sub.cancel()
    opens, polls = server.stream_opens, server.poll_times
    gap = min(b - a for a, b in zip(opens, opens[1:], strict=False))
    busiest = max(sum(1 for t in polls if first <= t < first + 1.0) for first in polls)
    rows.append(
        Row(
            "SSE: retry: 0 (rpm 60, 10 jobs)",
            "shortest reconnect gap; most reconcile polls in a second",
            f"{gap:.2f} s; {busiest}",
            gap >= 0.48 and busiest <= 6,
        )
    )

    async def patient(scope: Any, send: Any) -> None:
        await start_stream(send)
        await write(send, b"retry: 99999999999\n\n" + h.progress(h.JOB, 1), more=False)

    with _captured(logging.INFO) as lines:
        async with serving(Hostile(patient)) as url:
            async with h.watcher(h.config(url)):
                await h.until(lambda: any("reconnecting in" in line for line in lines))
    delay = float(re.findall(r"reconnecting in ([0-9.]+) s", "\n".join(lines))[0])
    rows.append(Row("SSE: retry: 99999999999", "next reconnect in", f"{delay:.0f} s", delay <= 60))
    return rows


# -- a password in base_url --------------------------------------------------------------------


def redaction() -> list[Row]:
    return anyio.run(_redaction, backend="trio")


async def _redaction() -> list[Row]:
    import test_redaction as r
    from jobwatch_redis import RedisOptions

    from jobwatch._doctor import doctor
    from jobwatch._policy import Signals
    from jobwatch.sim import Simulator, running

    errors: list[str] = []
    with _captured() as lines:
        sim = Simulator(time_scale=100)
        job_id = sim.create_job(urls=["https://example.com/a", "https://example.com/b"])
        async with running(sim) as url:
            secret = url.replace("http://", f"http://reader:{r.PASSWORD}@")
            async with jobwatch.Watcher(r._config(secret, api_key=sim.api_key)) as watcher:
                await watcher.wait(job_id, timeout=30)
            report = io.StringIO()
            await doctor(
                r._config(secret, api_key=sim.api_key),
                report,
                environ={},
                signals=Signals(tty=False, notebook=False, web_server=False),
            )
        unreachable = f"http://reader:{r.PASSWORD}@127.0.0.1:{r._closed_port()}"
        async with jobwatch.Watcher(r._config(unreachable)) as watcher:
            with anyio.move_on_after(2.0):
                await watcher.wait("job_1", timeout=5)
            with anyio.move_on_after(30):
                try:
                    async for _ in watcher.results("job_1"):
                        pass
                except jobwatch.JobwatchError as exc:
                    errors.append(str(exc))
            await doctor(
                r._config(unreachable),
                report,
                environ={},
                signals=Signals(tty=False, notebook=False, web_server=False),
            )
    shown = [
        repr(RedisOptions(url=f"redis://user:{r.PASSWORD}@127.0.0.1:6379/0")),
        repr(RedisOptions(url=f"unix:///run/redis.sock?password={r.PASSWORD}")),
    ]
    leaks = sum(r.PASSWORD in line for line in lines)
    what = "password in base_url (a simulator run, an unreachable API)"
    return [
        Row(
            what,
            "log lines with the password / all lines",
            f"{leaks} / {len(lines)}",
            leaks == 0 and len(lines) > 0,
        ),
        Row(
            what,
            "doctor reports, error messages, Redis reprs with it / all",
            f"{sum(r.PASSWORD in text for text in [report.getvalue(), *errors, *shown])} / "
            f"{1 + len(errors) + len(shown)}",
            all(r.PASSWORD not in text for text in [report.getvalue(), *errors, *shown]),
        ),
    ]


# -- damaged sqlite files ----------------------------------------------------------------------


def damage() -> list[Row]:
    return anyio.run(_damage, backend="trio")


async def _damage() -> list[Row]:
    import test_sqlite_damage as d

    from jobwatch import ConfigError

    base = Path(tempfile.mkdtemp(prefix="jobwatch-damage-"))

    async def outcome(path: Path) -> tuple[str, bool]:
        try:
            kept = await d._pending(path)
        except ConfigError as exc:
            one_line = "\n" not in str(exc) and "damaged-store.md" in str(exc)
            return "refused at open, one line" if one_line else f"refused: {exc}", one_line
        return f"opened with {kept} of {d.EVENTS} events", kept == d.EVENTS

    async def crashed(name: str) -> Path:
        await d._recorded(base / name / "live" / "state.db", crash_copy=base / name / "c")
        return base / name / "c" / "state.db"

    async def closed(name: str, count: int = d.EVENTS) -> Path:
        await d._recorded(base / name / "state.db", count)
        return base / name / "state.db"

    def zero_page(path: Path) -> None:
        pages = path.stat().st_size // 4096
        with path.open("r+b") as f:
            f.seek((pages - 2) * 4096)
            f.write(bytes(4096))

    cases: list[tuple[str, Callable[[], Any]]] = []
    path = await crashed("crash")
    cases.append(("left by a SIGKILL (not damaged)", lambda: None))
    path0 = await closed("zero")
    cases.append(("database truncated to 0 bytes", lambda: path0.write_bytes(b"")))
    path1 = await closed("deleted", 3)
    cases.append(("database deleted", lambda: path1.unlink()))
    path2 = await crashed("nodb")
    cases.append(("WAL without its database", lambda: path2.write_bytes(b"")))
    path3 = await crashed("half")
    cases.append(("WAL cut in half", lambda: d._truncate(Path(f"{path3}-wal"), half=True)))
    path4 = await crashed("frame")
    frames = d._committed_frames(Path(f"{path4}-shm"))
    cases.append(
        (
            "WAL cut at a frame boundary",
            lambda: d._truncate(Path(f"{path4}-wal"), 32 + (frames - 1) * (24 + 4096)),
        )
    )
    path5 = await closed("page")
    cases.append(("a zeroed page", lambda: zero_page(path5)))
    path6, theirs = await closed("ours", 3), await closed("theirs", 1)
    cases.append(("another store's database", lambda: shutil.copy(theirs, path6)))
    targets = [path, path0, path1, path2, path3, path4, path5, path6]
    rows = []
    for (name, harm), target in zip(cases, targets, strict=True):
        harm()
        text, holds = await outcome(target)
        rows.append(Row(f"sqlite store: {name}", "at the next start", text, holds))
    listen = await closed("listen", 50)
    zero_page(listen)
    config = listen.parent / "jobwatch.toml"
    config.write_text(
        '[jobwatch]\nstore = "sqlite"\nsafety_poll = 0\n'
        f"[jobwatch.sqlite]\npath = {str(listen)!r}\n"
        '[jobwatch.webhook]\nlisten = "127.0.0.1:0"\nsecrets = ["s3cret"]\n'
    )
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "jobwatch", "listen", "--config", str(config)],
            check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
    printed = b"listening on" in done.stdout
    rows.append(
        Row(
            "sqlite store: a zeroed page, `jobwatch listen`",
            "listened before refusing; exit code; stderr lines",
            f"{printed}; {done.returncode}; {len(done.stderr.strip().splitlines())}",
            not printed and done.returncode == 2,
        )
    )
    shutil.rmtree(base, ignore_errors=True)
    return rows


# -- the table -----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    head = Row("attack", "measure", "figure", True)
    widths = [max(len(getattr(row, f)) for row in [head, *rows]) for f in Row._fields[:3]]
    lines = []
    for row in [head, *rows]:
        mark = "holds" if row is head else ("yes" if row.holds else "NO").ljust(5)
        cells = [getattr(row, f).ljust(w) for f, w in zip(Row._fields[:3], widths, strict=True)]
        lines.append("| " + " | ".join([*cells, mark]) + " |")
        if row is head:
            lines.append("| " + " | ".join(["-" * w for w in widths] + ["-----"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    attacks: dict[str, Callable[[], list[Row]]] = {
        "crash": lambda: crash(args.kills, args.senders),
        "redis": redis_killed,
        "lost-answer": lost_answer,
        "slowloris": slowloris,
        "replays": replays,
        "sse": sse,
        "redaction": redaction,
        "damage": damage,
    }
    rows: list[Row] = []
    for name, attack in attacks.items():
        if args.only and name not in args.only:
            continue
        if name in ("redis", "lost-answer") and shutil.which("redis-server") is None:
            rows.append(Row(name, "skipped", "needs redis-server", True))
            continue
        started = time.monotonic()
        print(f"{name} ...", end=" ", file=sys.stderr, flush=True)
        try:
            found = attack()
        except Exception as exc:  # one attack that cannot run says so in the table
            found = [Row(name, "could not run", f"{type(exc).__name__}: {exc}"[:120], False)]
        print(f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        rows += found
    load = os.getloadavg()[0]
    print(
        f"jobwatch {jobwatch.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores, 1-minute load {load:.2f} at the end"
    )
    print(table(rows))
    return 0 if all(row.holds for row in rows) else 1


if __name__ == "__main__":
    # Quiet: the attacks make the receivers log plenty, and the table is what counts.
    logging.getLogger().addHandler(logging.NullHandler())
    sys.exit(main())
