"""The official Python SDK (reader-py) runs against the simulator unchanged.

The SDK is synchronous, so the simulator runs in a portal thread's event loop and the SDK is
called from the test's thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from reader_py import ConflictError, NotFoundError, ReaderClient, UnauthenticatedError
from reader_py.types import DoneEvent, ErrorEvent, Job, PageEvent, ProgressEvent

from jobwatch.sim import ManualClock, Simulator, Step, running

URLS = [f"https://example.com/blog/post-{n}" for n in range(6)]


@contextmanager
def in_thread(simulator: Simulator, backend: str) -> Iterator[tuple[str, BlockingPortal]]:
    """Serve `simulator` from an event loop in another thread."""
    with start_blocking_portal(backend) as portal:
        with portal.wrap_async_context_manager(running(simulator)) as url:
            yield url, portal


@pytest.fixture
def served(anyio_backend: str) -> Iterator[tuple[Simulator, str, BlockingPortal]]:
    # Fast pages, so that the SDK's first poll already sees a finished job (it then sleeps 2 s).
    simulator = Simulator(time_scale=1000.0, page_interval=0.01, start_delay=0.0, seed=7)
    with in_thread(simulator, anyio_backend) as (url, portal):
        yield simulator, url, portal


@pytest.fixture
def client(served: tuple[Simulator, str, BlockingPortal]) -> Iterator[ReaderClient]:
    _, url, _ = served
    with ReaderClient(api_key="rdr_sim", base_url=url, max_retries=0) as sdk:
        yield sdk


def _create(url: str, body: dict[str, object]) -> str:
    response = httpx.post(f"{url}/v1/read", json=body, headers={"x-api-key": "rdr_sim"})
    response.raise_for_status()
    return str(response.json()["data"]["id"])


def _wait(client: ReaderClient, job_id: str) -> Job:
    """The SDK's own wait for the end of a job, polling every 50 ms."""
    # reader-py annotates poll_interval as int; it sleeps any number of seconds.
    return client.wait_for_job(job_id, poll_interval=0.05)  # type: ignore[arg-type]


def test_read_batch_and_wait(
    client: ReaderClient, served: tuple[Simulator, str, BlockingPortal]
) -> None:
    result = client.read(urls=URLS)
    assert result.kind == "job"
    assert result.data.status == "completed"
    assert sorted(page.url for page in result.data.results) == sorted(URLS)
    assert all(page.markdown and page.metadata for page in result.data.results)

    job_id = _create(served[1], {"urls": URLS * 30})
    job = _wait(client, job_id)
    assert job.status == "completed" and len(job.results) == 180  # all pages, followed


def test_scrape_and_credits(client: ReaderClient) -> None:
    result = client.read(url="https://example.com")
    assert result.kind == "scrape" and result.data.metadata.duration > 0
    credits = client.get_credits()
    assert credits.tier == "pro" and credits.used == 1


def test_stream(anyio_backend: str) -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock)
    steps = [Step(kind="page"), Step(kind="page_error", error="HTTP 404"), Step(kind="page")]
    with in_thread(simulator, anyio_backend) as (url, portal):
        job_id = portal.call(lambda: simulator.create_job(steps=steps))
        with ReaderClient(api_key="rdr_sim", base_url=url, max_retries=0) as client:
            stream = client.stream(job_id)
            events = [next(stream)]  # the snapshot: the stream is open
            portal.call(clock.advance, 10)
            events += list(stream)
    assert isinstance(events[0], ProgressEvent) and events[0].status == "queued"
    assert [type(e) for e in events if not isinstance(e, ProgressEvent)] == [
        PageEvent,
        ErrorEvent,
        PageEvent,
        DoneEvent,
    ]
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert (done.status, done.completed, done.total) == ("completed", 3, 3)


def test_cancel_then_conflict(
    client: ReaderClient, served: tuple[Simulator, str, BlockingPortal]
) -> None:
    simulator, _, portal = served
    job_id = portal.call(lambda: simulator.create_job(urls=URLS, page_interval=3600))
    client.cancel_job(job_id)
    with pytest.raises(ConflictError) as conflict:
        client.cancel_job(job_id)
    assert conflict.value.details == {"status": "cancelled"}
    assert conflict.value.request_id
    events = list(client.stream(job_id))
    (done,) = events
    assert isinstance(done, DoneEvent) and done.status == "cancelled"


def test_retry(client: ReaderClient, served: tuple[Simulator, str, BlockingPortal]) -> None:
    simulator, _, portal = served
    job_id = portal.call(
        lambda: simulator.create_job(
            steps=[Step(kind="page"), Step(kind="page_error"), Step(kind="page_error")]
        )
    )
    job = _wait(client, job_id)
    assert [page.error is not None for page in job.results] == [False, True, True]
    assert client.retry_job(job_id) == {"id": job_id, "status": "queued", "retrying": 2}
    job = _wait(client, job_id)
    assert job.status == "completed" and all(page.error is None for page in job.results)


def test_typed_errors(client: ReaderClient, served: tuple[Simulator, str, BlockingPortal]) -> None:
    with pytest.raises(NotFoundError):
        client.get_job("job_missing")
    with ReaderClient(api_key="rdr_other", base_url=served[1], max_retries=0) as stranger:
        with pytest.raises(UnauthenticatedError):
            stranger.get_credits()
