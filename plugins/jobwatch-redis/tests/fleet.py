"""Test helpers for fleets of real processes: start nodes, sign and send Reader deliveries."""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import os
import random
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import httpx

NODE = Path(__file__).with_name("fleet_node.py")
SECRET = "whsec-fleet-test-secret"


@attrs.frozen
class Delivery:
    """One Reader webhook delivery and the key a worker sees for its event."""

    event: str
    body: bytes
    delivery_id: str
    key: str


def spawn(role: str, *args: str, log: Path) -> subprocess.Popen[str]:
    """Start a fleet node (see fleet_node.py); its errors go to ``log``, and a consumer's
    record of what it handled beside it."""
    with log.open("w") as errors:
        return subprocess.Popen(
            [sys.executable, str(NODE), role, *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={**os.environ, "FLEET_DIR": str(log.parent)},
        )


def first_line(proc: subprocess.Popen[str], log: Path) -> str:
    """A node's first line of output: its URL (``listening on`` stripped) or ``ready``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=20)
    line = proc.stdout.readline().strip() if ready else ""
    if not line:
        stop([proc])
        raise AssertionError(f"a fleet node did not start: {log.read_text()[-2000:]}")
    return line.removeprefix("listening on ")


def stop(procs: Iterable[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def deliveries(jobs: int, pages: int) -> list[Delivery]:
    """``pages`` job.page deliveries and one job.completed for each of ``jobs`` jobs."""
    out = []
    for j in range(jobs):
        job = f"job_{uuid.uuid4().hex[:8]}"
        for p in range(pages):
            url = f"https://example.com/{j}/{p}"
            body: dict[str, object] = {"jobId": job, "url": url, "markdown": f"# page {p}"}
            out.append(
                Delivery(
                    "job.page", json.dumps(body).encode(), str(uuid.uuid4()), f"{job}:page:{url}#1"
                )
            )
        body = {"jobId": job, "status": "completed", "completed": pages, "total": pages}
        out.append(
            Delivery(
                "job.completed", json.dumps(body).encode(), str(uuid.uuid4()), f"{job}:terminal#1"
            )
        )
    return out


def fan_out(
    items: Sequence[Delivery], receivers: int, rng: random.Random
) -> list[tuple[Delivery, int]]:
    """Each delivery to one to three receivers (duplicates spread across them), shuffled."""
    sends = []
    for item in items:
        for target in rng.sample(range(receivers), min(receivers, rng.choice((1, 2, 2, 3)))):
            sends.append((item, target))
    rng.shuffle(sends)
    return sends


def signed(item: Delivery) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + item.body, hashlib.sha256)
    return {
        "content-type": "application/json",
        "x-reader-event": item.event,
        "x-reader-delivery": item.delivery_id,
        "x-reader-timestamp": stamp,
        "x-reader-signature": f"sha256={digest.hexdigest()}",
    }


def send_all(
    sends: Sequence[tuple[Delivery, int]], urls: Sequence[str], *, deadline: float = 30.0
) -> dict[int, int]:
    """Send concurrently; like Reader, retry each until 2xx. Returns a count per status."""
    statuses: dict[int, int] = {}

    def send(client: httpx.Client, item: Delivery, target: int) -> None:
        give_up = time.monotonic() + deadline
        while True:
            try:
                status = client.post(
                    urls[target], content=item.body, headers=signed(item)
                ).status_code
            except httpx.TransportError:
                status = 0
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                return
            if time.monotonic() > give_up:
                raise AssertionError(f"delivery {item.delivery_id} kept failing: {status}")
            time.sleep(0.2)

    with httpx.Client(timeout=15) as client, ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(send, client, item, t) for item, t in sends]:
            future.result()
    return statuses


def wait_for(check: object, timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def handled(folder: Path) -> collections.Counter[str]:
    """How many times the consumers spawned with logs in ``folder`` handled each key."""
    counts: collections.Counter[str] = collections.Counter()
    for record in folder.glob("handled-*.txt"):
        counts.update(line for line in record.read_text().splitlines() if line)
    return counts


def assert_each_handled_once(
    client: Any, folder: Path, stream: str, items: Sequence[Delivery]
) -> None:
    """Wait until the workers handled and acknowledged every delivery; each exactly once."""
    expected = {item.key for item in items}
    wait_for(lambda: len(handled(folder)) >= len(expected), 30, "every event to be handled")
    wait_for(lambda: client.xpending(stream, "g")["pending"] == 0, 10, "every ack")
    counts = handled(folder)
    assert set(counts) == expected
    assert {k: n for k, n in counts.items() if n != 1} == {}
