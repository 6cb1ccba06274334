"""The blocking helpers ``jobwatch.wait`` and ``jobwatch.iter_events``: from a plain script,
and from code that already runs an event loop (a notebook), against a real loopback simulator
served from its own thread."""

from __future__ import annotations

import asyncio
import math
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import trio

import jobwatch
from jobwatch import JobNotFound, WatchTimeout
from jobwatch.sim import Simulator, serve


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator(seed=21, tier="enterprise", page_interval=0.02, start_delay=0.0)
    found: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.CancelScope]] = queue.Queue()

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(serve, simulator)
                found.put((url, trio.lowlevel.current_trio_token(), scope))

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    url, token, scope = found.get(timeout=10)
    simulator.token = token  # type: ignore[attr-defined]
    yield simulator, url
    token.run_sync_soon(scope.cancel)
    thread.join(timeout=10)


def config(url: str) -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "base_url": url,
                "transport": "poll",
                "store": "memory",
                "poll": {"interval": 0.2, "max_interval": 1.0, "rpm": 1000},
            }
        }
    )


def job(simulator: Simulator, pages: int = 8) -> str:
    """Create a job on the simulator's own thread (its clock is that thread's trio clock)."""
    urls = [f"https://example.com/b/{n}" for n in range(pages)]
    return trio.from_thread.run_sync(
        lambda: simulator.create_job(urls=urls),
        trio_token=simulator.token,  # type: ignore[attr-defined]
    )


def test_wait_from_a_plain_script(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    final = jobwatch.wait(job(simulator), config=config(url), timeout=20)
    assert final.kind == "completed" and final.completed == 8


def test_wait_inside_a_running_asyncio_loop(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    job_id = job(simulator)

    async def notebook_cell() -> jobwatch.JobEvent:
        return jobwatch.wait(job_id, config=config(url), timeout=20)

    assert asyncio.run(notebook_cell()).kind == "completed"


def test_wait_inside_a_running_trio_program(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    job_id = job(simulator)

    async def program() -> jobwatch.JobEvent:
        return jobwatch.wait(job_id, config=config(url), timeout=20, transport="poll")

    assert trio.run(program).kind == "completed"


def test_wait_raises_the_jobs_own_error(sim: tuple[Simulator, str]) -> None:
    _, url = sim
    with pytest.raises(JobNotFound, match="404"):
        jobwatch.wait("job_missing", config=config(url), timeout=20)


def test_wait_times_out(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    with pytest.raises(WatchTimeout, match="did not finish"):
        jobwatch.wait(job(simulator, pages=5000), config=config(url), timeout=0.5)


def test_iter_events_yields_until_the_terminal_event(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    events = list(jobwatch.iter_events(job(simulator, 40), config=config(url), timeout=20))
    assert events[-1].kind == "completed"
    assert all(not e.terminal for e in events[:-1])
    assert {e.kind for e in events[:-1]} <= {"started", "progress"}


def test_iter_events_inside_asyncio_and_leaving_early(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    job_id = job(simulator, 5000)

    async def notebook_cell() -> jobwatch.JobEvent:
        for event in jobwatch.iter_events(job_id, config=config(url), timeout=20):
            return event  # leaving the loop stops the Watcher's thread
        raise AssertionError("no event")

    assert asyncio.run(notebook_cell()).job_id == job_id
    assert not [t for t in threading.enumerate() if t.name.startswith("jobwatch-iter")]


def test_iter_events_times_out(sim: tuple[Simulator, str]) -> None:
    simulator, url = sim
    with pytest.raises(WatchTimeout):
        for _ in jobwatch.iter_events(job(simulator, 5000), config=config(url), timeout=0.5):
            pass


_INTERRUPTED = """
import asyncio, sys, threading
import jobwatch

url, job_id, helper, caller = sys.argv[1:]
config = jobwatch.Config.from_mapping(
    {"jobwatch": {"api_key": "rdr_sim", "base_url": url, "transport": "poll", "store": "memory",
                  "poll": {"interval": 0.2, "max_interval": 1.0, "rpm": 1000}}}
)

def block():
    if helper == "wait":
        jobwatch.wait(job_id, config=config, timeout=600)
    else:
        for _ in jobwatch.iter_events(job_id, config=config, timeout=600):
            pass

async def cell():
    block()

try:
    if caller == "script":
        block()
    elif caller == "asyncio.run":  # answers Ctrl-C by cancelling its task
        asyncio.run(cell())
    else:  # a notebook kernel's loop: Ctrl-C raises KeyboardInterrupt where the cell runs
        asyncio.new_event_loop().run_until_complete(cell())
except KeyboardInterrupt:
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    print("interrupted", left, flush=True)
"""


@pytest.mark.parametrize("helper", ["wait", "iter_events"])
@pytest.mark.parametrize("caller", ["script", "asyncio.run", "notebook"])
def test_ctrl_c_stops_the_watch_and_leaves_nothing_running(
    sim: tuple[Simulator, str], helper: str, caller: str
) -> None:
    simulator, url = sim
    job_id = job(simulator, 5000)  # 100 s of pages: far longer than the test waits

    def polls() -> int:
        counts = trio.from_thread.run_sync(
            simulator.request_counts,
            trio_token=simulator.token,  # type: ignore[attr-defined]
        )
        return int(counts.by_endpoint.get("GET /v1/jobs/{id}", 0))

    before = polls()
    proc = subprocess.Popen(
        [sys.executable, "-W", "default", "-c", _INTERRUPTED, url, job_id, helper, caller],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while polls() == before:  # the Watcher is watching
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    # Interrupted at once (not after the job's end), with the Watcher's thread ended, its
    # connections closed, and no coroutine left unawaited.
    assert out == "interrupted []\n", (out, err)
    assert "never awaited" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("seconds", [0, -1.0, -math.inf])
@pytest.mark.parametrize("helper", ["wait", "iter_events"])
def test_a_deadline_already_past_times_out_at_once(
    sim: tuple[Simulator, str], helper: str, seconds: float
) -> None:
    # A negative timeout (a remaining time the caller computed) is a deadline already past,
    # for iter_events as for wait; iter_events raised trio's "`seconds` must be non-negative".
    simulator, url = sim
    job_id = job(simulator, 5000)
    with pytest.raises(WatchTimeout, match=f"{job_id} did not finish within"):
        if helper == "wait":
            jobwatch.wait(job_id, config=config(url), timeout=seconds)
        else:
            list(jobwatch.iter_events(job_id, config=config(url), timeout=seconds))
