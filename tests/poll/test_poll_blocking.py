"""The blocking helpers ``jobwatch.wait`` and ``jobwatch.iter_events``: from a plain script,
and from code that already runs an event loop (a notebook), against a real loopback simulator
served from its own thread."""

from __future__ import annotations

import asyncio
import queue
import threading
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
