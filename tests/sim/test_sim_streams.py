"""Both SSE streams over a real loopback server: Reader's wire format, pings, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from simcheck import wait_until

from jobwatch.sim import ManualClock, Simulator, Step, running

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def served(simulator: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running(simulator) as url,
        httpx.AsyncClient(
            base_url=url, headers={"x-api-key": simulator.api_key}, timeout=10
        ) as client,
    ):
        yield client


async def read_frames(
    client: httpx.AsyncClient, path: str, items: list[tuple[str, Any]] | None = None
) -> list[tuple[str, Any]]:
    """Read ``(event, data)`` frames, ``("ping", None)`` for keep-alive comments, into
    `items` as they come, until the server closes the stream; ``("dropped", None)`` last if
    it closed the connection in the middle of the body.

    Stop an endless stream by cancelling the reading task: a cancellation (unlike a `return`
    mid-iteration) also closes httpx's inner async generators.
    """
    items = [] if items is None else items
    async with client.stream("GET", path) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        buffer = b""
        try:
            async for chunk in response.aiter_raw():
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    items.append(_parse(raw.decode()))
        except httpx.RemoteProtocolError:
            items.append(("dropped", None))
    return items


async def read_some(
    client: httpx.AsyncClient, path: str, count: int, items: list[tuple[str, Any]]
) -> None:
    """Read frames of an endless stream into `items` until `count` arrived."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(read_frames, client, path, items)
        await wait_until(lambda: len(items) >= count)
        tg.cancel_scope.cancel()


def _parse(raw: str) -> tuple[str, Any]:
    if raw == ": ping":
        return ("ping", None)
    event_line, data_line = raw.split("\n")
    assert event_line.startswith("event: ") and data_line.startswith("data: ")
    return event_line[len("event: ") :], json.loads(data_line[len("data: ") :])


async def test_job_stream_wire_format() -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock)
    async with served(simulator) as client:
        steps = [Step(kind="page"), Step(kind="page_error", error="HTTP 500"), Step(kind="page")]
        job_id = simulator.create_job(steps=steps)
        frames: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_frames, client, f"/v1/jobs/{job_id}/stream", frames)
            await wait_until(lambda: len(frames) == 1)
            clock.advance(10)
    names = [name for name, _ in frames]
    assert names == [
        "progress",
        "progress",
        "page",
        "progress",
        "error",
        "progress",
        "page",
        "progress",
        "done",
    ]
    assert frames[0][1] == {"status": "queued", "completed": 0, "total": 3}
    assert frames[4][1] == {"url": "https://example.com/scripted/page-2", "error": "HTTP 500"}
    assert frames[-1][1] == {"status": "completed", "completed": 3, "total": 3}
    assert simulator.request_counts().by_endpoint == {"GET /v1/jobs/{id}/stream": 1}


async def test_done_on_cancel_and_failure_and_workspace_events() -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock)
    async with served(simulator) as client:
        cancelled = simulator.create_job(urls=["https://example.com/"])
        failed = simulator.create_job(steps=[Step(kind="page"), Step(kind="fail", error="boom")])
        workspace: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_some, client, "/v1/events", 3, workspace)
            await wait_until(lambda: simulator.request_counts().total == 1)  # stream is open
            assert (await client.delete(f"/v1/jobs/{cancelled}")).status_code == 200
            clock.advance(5)
        done = await read_frames(client, f"/v1/jobs/{cancelled}/stream")
        assert done == [("done", {"status": "cancelled", "completed": 0, "total": 1})]
        done = await read_frames(client, f"/v1/jobs/{failed}/stream")
        assert done == [("done", {"status": "failed", "completed": 1, "total": 1})]
    assert workspace == [
        ("job:progress", {"jobId": failed, "status": "processing", "completed": 0, "total": 1}),
        ("job:progress", {"jobId": failed, "status": "processing", "completed": 1, "total": 1}),
        ("job:failed", {"jobId": failed, "error": "boom"}),
    ]


async def test_pings_every_30_simulated_seconds() -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock)
    async with served(simulator) as client:
        frames: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_some, client, "/v1/events", 2, frames)
            await wait_until(lambda: simulator.request_counts().total == 1)
            clock.advance(29.9)
            await anyio.sleep(0.05)
            assert frames == []
            clock.advance(30.2)
    assert frames == [("ping", None), ("ping", None)]


async def test_errors_before_the_stream_are_json() -> None:
    simulator = Simulator(time_scale=100)
    async with served(simulator) as client:
        missing = await client.get("/v1/jobs/job_missing/stream")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert missing.json()["error"]["code"] == "not_found"
        stranger = await client.get("/v1/events", headers={"x-api-key": "rdr_nope"})
        assert stranger.status_code == 401
        assert stranger.json()["error"]["code"] == "unauthenticated"


async def test_stream_opens_count_toward_rpm() -> None:
    simulator = Simulator(clock=ManualClock(), tier="free")
    async with served(simulator) as client:
        job_id = simulator.create_job(urls=["https://example.com/"])
        for _ in range(10):
            async with client.stream("GET", f"/v1/jobs/{job_id}/stream") as opened:
                assert opened.status_code == 200
        limited = await client.get(f"/v1/jobs/{job_id}/stream")
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"


async def test_drop_after_n_events() -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock, faults="drop_sse_after=2")
    async with served(simulator) as client:
        job_id = simulator.create_job(urls=[f"https://example.com/{n}" for n in range(3)])
        frames: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_frames, client, f"/v1/jobs/{job_id}/stream", frames)
            await wait_until(lambda: len(frames) == 1)
            clock.advance(10)
        assert [name for name, _ in frames] == ["progress", "progress", "dropped"]
        assert simulator.fault_counts()["drop_sse_after"] == 1


async def test_random_drops_and_stall() -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock, faults="drop_sse_p=1")
    async with served(simulator) as client:
        job_id = simulator.create_job(urls=["https://example.com/"])
        assert await read_frames(client, f"/v1/jobs/{job_id}/stream") == [("dropped", None)]
        assert simulator.fault_counts()["drop_sse_p"] == 1

        simulator.set_faults("stall_sse=1@60s")
        frames: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_frames, client, f"/v1/jobs/{job_id}/stream", frames)
            await wait_until(lambda: len(frames) == 1)
            clock.advance(59)  # the job finishes and a ping falls due: all held back
            await anyio.sleep(0.1)
            assert frames == [("progress", {"status": "queued", "completed": 0, "total": 1})]
            clock.advance(2)
    assert [name for name, _ in frames] == ["progress", "progress", "page", "progress", "done"]
    assert simulator.fault_counts()["stall_sse"] == 1


async def test_stall_before_the_first_event() -> None:
    # stall_sse=0@D: the stream opens, then says nothing for D, not even its first frame.
    clock = ManualClock()
    simulator = Simulator(clock=clock, faults="stall_sse=0@60s")
    async with served(simulator) as client:
        job_id = simulator.create_job(urls=["https://example.com/"])
        frames: list[tuple[str, Any]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_frames, client, f"/v1/jobs/{job_id}/stream", frames)
            await wait_until(lambda: simulator.fault_counts()["stall_sse"] == 1)
            clock.advance(59)
            await anyio.sleep(0.1)
            assert frames == []
            clock.advance(2)
    assert [name for name, _ in frames] == ["progress", "progress", "page", "progress", "done"]


async def test_closed_streams_leave_nothing_behind() -> None:
    # One entry per job ever streamed would grow for as long as the simulator runs.
    clock = ManualClock()
    simulator = Simulator(clock=clock)
    async with served(simulator) as client:

        async def stream_a_job_to_its_end() -> str:
            job_id = simulator.create_job(steps=[Step(kind="page")])
            frames: list[tuple[str, Any]] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_frames, client, f"/v1/jobs/{job_id}/stream", frames)
                await wait_until(lambda: len(frames) == 1)
                clock.advance(5)
            return frames[-1][0]

        assert [await stream_a_job_to_its_end() for _ in range(3)] == ["done"] * 3
    assert simulator._service._subscriptions == {}
