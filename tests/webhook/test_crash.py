"""SIGKILL a sqlite-backed receiver at random moments under concurrent senders: no delivery it
acknowledged is lost, and an event is dispatched twice only across a restart.

The receiver (``receiver_node.py``, the public API in a process of its own) writes a line for
each event its callback receives; senders retry each delivery until it is answered 2xx, as
webhook senders do. Each delivery completes its own job, so each is one event.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import receiver_node

NODE = Path(receiver_node.__file__)
SENDERS = 6
KILLS = 4


class Receiver:
    """The receiver process of the moment, restarted after each kill (alternating backends)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.generation = -1
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        self.generation += 1
        backend = ("trio", "asyncio")[self.generation % 2]
        with (self.folder / f"stderr-{self.generation}").open("w") as errors:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(NODE),
                    backend,
                    str(self.folder / "state.db"),
                    str(self.folder / "handled"),
                    str(self.generation),
                ],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            proc.kill()
            raise AssertionError(
                f"generation {self.generation} did not start: "
                f"{(self.folder / f'stderr-{self.generation}').read_text()}"
            )
        with self.lock:
            self.proc, self.url = proc, line.removeprefix("listening on ").strip()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def _signed(body: bytes, delivery_id: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(
        receiver_node.SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return {
        "content-type": "application/json",
        "x-reader-event": "job.completed",
        "x-reader-delivery": delivery_id,
        "x-reader-timestamp": stamp,
        "x-reader-signature": f"sha256={digest}",
    }


def _send_until_acknowledged(
    client: httpx.Client, receiver: Receiver, job_id: str, give_up: float
) -> int:
    """Post one delivery until it is answered 2xx; returns the attempts it took."""
    body = json.dumps({"jobId": job_id, "status": "completed", "completed": 1, "total": 1}).encode()
    headers = _signed(body, str(uuid.uuid4()))
    attempts = 0
    while True:
        attempts += 1
        with receiver.lock:
            url = receiver.url
        try:
            status = client.post(
                url + receiver_node.PATH, content=body, headers=headers
            ).status_code
        except httpx.TransportError:  # killed under it, or not started yet
            status = 0
        if 200 <= status < 300:
            return attempts
        if time.monotonic() > give_up:
            raise AssertionError(f"the delivery for {job_id} kept failing: {status}")
        time.sleep(0.02)


def _handled(folder: Path) -> list[tuple[int, str]]:
    path = folder / "handled"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # A line cut by the kill has no newline yet at the end: it is not a dispatch.
    return [
        (int(generation), job_id)
        for generation, job_id, *_ in (line.split(" ", 3) for line in lines if line.count(" ") >= 3)
    ]


@pytest.mark.slow
def test_no_acknowledged_delivery_is_lost_when_the_receiver_is_killed(tmp_path: Path) -> None:
    seed = int(os.environ.get("JOBWATCH_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    receiver = Receiver(tmp_path)
    receiver.start()
    sent: list[str] = []  # every delivery, each answered 2xx in the end
    attempts: list[int] = []
    done = threading.Event()
    give_up = time.monotonic() + 60

    def sender(number: int) -> None:
        with httpx.Client(timeout=5) as client:
            while not done.is_set():
                job_id = f"job_{number}_{uuid.uuid4().hex[:8]}"
                sent.append(job_id)
                attempts.append(_send_until_acknowledged(client, receiver, job_id, give_up))
                time.sleep(0.002)

    try:
        with ThreadPoolExecutor(SENDERS) as pool:
            senders = [pool.submit(sender, n) for n in range(SENDERS)]
            for _ in range(KILLS):
                # Killed at a random moment, deliveries in flight on every sender.
                time.sleep(rng.uniform(0.3, 1.5))
                receiver.kill()
                receiver.start()
            time.sleep(0.5)
            done.set()
            for future in senders:
                future.result()
        # Every acknowledged event is dispatched, by the last generation if not before.
        deadline = time.monotonic() + 20
        while {job for _, job in _handled(tmp_path)} < set(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        receiver.stop()

    handled = _handled(tmp_path)
    seen = collections.Counter(job for _, job in handled)
    lost = set(sent) - set(seen)
    within_one_run = collections.Counter(handled) - collections.Counter(set(handled))
    again = sum(n - 1 for n in seen.values())
    print(
        f"seed {seed}: {len(sent)} deliveries acknowledged after {sum(attempts) - len(sent)} "
        f"retries across {KILLS} kills; {len(handled)} dispatched, {again} of them again "
        "after a restart"
    )
    assert len(sent) == len(attempts) and len(sent) > 100
    assert lost == set(), f"seed {seed}: {len(lost)} lost, e.g. {sorted(lost)[:3]}"
    assert within_one_run == collections.Counter(), f"seed {seed}: {within_one_run}"
    assert sum(attempts) > len(sent), "no delivery was in flight at a kill"
