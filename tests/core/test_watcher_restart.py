"""A Watcher that finds a job already finished in its store (a restart) answers wait() again.

The terminal event is re-read by one poll; it must look like the event the pipeline delivered
the first time (same key) and must survive a transient error of that one poll.
"""

from __future__ import annotations

import httpx
import pytest
import trio.testing

import jobwatch
from jobwatch.abc import JobState
from jobwatch.providers.reader import ReaderProvider
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport

pytestmark = pytest.mark.anyio

MOCK = [
    pytest.param(
        ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
    )
]
CONFIG = jobwatch.Config.from_mapping({"jobwatch": {"store": "memory", "safety_poll": 0}})
DONE = {
    "id": "job_1",
    "status": "completed",
    "completed": 3,
    "total": 3,
    "completedAt": "2026-04-04T12:05:00Z",
}


def api(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[str]]:
    """A mock Reader answering status requests with ``answers`` in turn (the last repeats)."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return answers[min(len(calls), len(answers)) - 1]

    return httpx.MockTransport(handle), calls


def ok(data: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "data": data})


async def finished_store() -> MemoryStore:
    store = MemoryStore()
    await store.put_job(
        JobState(
            job_id="job_1",
            status=jobwatch.JobStatus.COMPLETED,
            completed=3,
            total=3,
            started=True,
            terminal=True,
            watched=True,
        )
    )
    return store


def watcher(store: MemoryStore, transport: httpx.MockTransport) -> jobwatch.Watcher:
    return jobwatch.Watcher(
        CONFIG,
        transports=[ScriptedTransport()],
        store=store,
        provider=ReaderProvider(),
        http_transport=transport,
    )


@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_wait_on_a_job_finished_before_the_restart() -> None:
    transport, calls = api(ok(DONE))
    async with watcher(await finished_store(), transport) as w:
        final = await w.wait("job_1", timeout=60)
    assert final.kind is jobwatch.EventKind.COMPLETED and final.completed == 3
    assert calls == ["/v1/jobs/job_1"]


@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_re_read_terminal_event_has_the_delivered_key() -> None:
    transport, _ = api(ok(DONE))
    async with watcher(await finished_store(), transport) as w:
        final = await w.wait("job_1", timeout=60)
    assert final.key == "job_1:terminal#1"


@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_re_read_survives_a_transient_error() -> None:
    transport, calls = api(
        httpx.Response(
            503,
            json={
                "success": False,
                "error": {"code": "upstream_unavailable", "message": "try again", "docsUrl": "x"},
            },
        ),
        ok(DONE),
    )
    async with watcher(await finished_store(), transport) as w:
        final = await w.wait("job_1", timeout=60)
    assert final.kind is jobwatch.EventKind.COMPLETED
    assert len(calls) == 2


@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_re_read_of_an_unknown_job_raises_job_not_found() -> None:
    transport, _ = api(
        httpx.Response(
            404,
            json={
                "success": False,
                "error": {"code": "not_found", "message": "Job not found", "docsUrl": "x"},
            },
        )
    )
    async with watcher(await finished_store(), transport) as w:
        with pytest.raises(jobwatch.JobNotFound):
            await w.wait("job_1", timeout=60)
