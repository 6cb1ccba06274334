"""``GET /events`` on a real loopback server, read as an event stream over httpx and by bare
sockets: resume by Last-Event-ID, the snapshot on overflow, and a stuck client that slows
neither the Watcher nor the other clients."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _dashboard_support import RawClient, serving, sse, take

import jobwatch
from jobwatch._dashboard import DashboardApp
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event
from jobwatch.transports._sse_parser import Frame

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def dashboard(**options: Any) -> AsyncIterator[tuple[ScriptedTransport, DashboardApp, str]]:
    """A running Watcher fed by a ScriptedTransport, its dashboard served on loopback."""
    transport = ScriptedTransport()
    config = jobwatch.Config.from_mapping({"jobwatch": {"dashboard": options}})
    watcher = jobwatch.Watcher(config, transports=[transport], store=MemoryStore())
    app = watcher.dashboard_app()
    async with watcher, serving(app) as url:
        yield transport, app, url


def progress(n: int, *, pad: int = 0, job: str = "job_1") -> jobwatch.JobEvent:
    return make_event("progress", job, completed=n, total=1000, data={"pad": "x" * pad})


async def test_any_sse_client_reads_the_events_in_their_json_form_with_ids() -> None:
    async with dashboard() as (transport, app, url), httpx.AsyncClient(timeout=20) as http:
        async with sse(http, url + "/events") as events:
            (snapshot,) = await take(events, 1)
            assert snapshot.event == "snapshot" and json.loads(snapshot.data)["jobs"] == []
            sent = [make_event("started", "job_1"), progress(1), make_event("completed", "job_1")]
            await transport.send(*sent)
            got = await take(events, 3)
    epoch = app.relay.epoch
    assert [e.id for e in got] == [f"{epoch}-{n}" for n in (1, 2, 3)]
    assert all(e.event == "message" for e in got)
    delivered = [json.loads(e.data) for e in got]
    assert [d["kind"] for d in delivered] == ["started", "progress", "completed"]
    assert delivered[1] == {**sent[1].to_dict(), "key": "job_1:progress:1#1"}


async def test_a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() -> None:
    async with dashboard() as (transport, app, url), httpx.AsyncClient(timeout=20) as http:
        await transport.send(progress(1), progress(2))
        async with sse(http, url + "/events") as events:
            (snapshot,) = await take(events, 1)
            await transport.send(progress(3))
            (last,) = await take(events, 1)
        await transport.send(*(progress(n) for n in range(4, 9)))  # while it is away
        async with sse(http, url + "/events", headers={"Last-Event-ID": str(last.id)}) as events:
            missed = await take(events, 5)
            await transport.send(progress(9))
            (live,) = await take(events, 1)
    assert snapshot.id is not None and snapshot.id.endswith("-2")
    assert last.id is not None and last.id.endswith("-3")
    assert [json.loads(e.data)["completed"] for e in [*missed, live]] == [4, 5, 6, 7, 8, 9]
    assert app.relay.counts["resumed"] == 1 and app.relay.counts["snapshots"] == 1


async def test_a_client_that_fell_out_of_the_buffer_gets_a_snapshot_then_the_rest() -> None:
    async with dashboard(buffer=3) as (transport, app, url), httpx.AsyncClient(timeout=20) as http:
        await transport.send(*(progress(n) for n in range(1, 8)))
        old = f"{app.relay.epoch}-2"
        async with sse(http, url + "/events", headers={"Last-Event-ID": old}) as events:
            (snapshot,) = await take(events, 1)
            await transport.send(progress(8))
            (live,) = await take(events, 1)
    assert snapshot.event == "snapshot" and snapshot.id is not None
    assert snapshot.id.endswith("-7")
    assert json.loads(snapshot.data)["jobs"][0]["completed"] == 7
    assert live.id is not None and live.id.endswith("-8")


async def test_a_client_too_slow_for_the_flow_is_resynced_with_a_snapshot() -> None:
    async with dashboard(client_queue=5) as (transport, app, url), RawClient.open(url) as slow:
        await slow.read_until(b"event: snapshot")  # connected, and sent the (empty) table
        # Events far larger than the socket buffers: the write to this client blocks while
        # more than client_queue events arrive.
        with anyio.fail_after(30):
            for n in range(1, 201):
                await transport.send(progress(n, pad=64 * 1024))
            received = await slow.read_until(f"id: {app.relay.epoch}-200\n".encode())
    assert app.relay.counts["resyncs"] >= 1
    tail = received.split(b"event: snapshot")[-1]
    table = json.loads(tail.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert table["jobs"][0]["completed"] >= 6  # the table as of the resync, not a backlog
    ids = [int(line.rsplit(b"-", 1)[1]) for line in tail.splitlines() if line.startswith(b"id:")]
    assert ids == list(range(ids[0], 201))  # then every event after the snapshot, no gap


async def test_a_stuck_client_slows_neither_the_watcher_nor_the_others() -> None:
    async with (
        dashboard(send_timeout=1.0) as (transport, app, url),
        RawClient.open(url) as stuck,
        httpx.AsyncClient(timeout=20) as http,
    ):
        await stuck.read_until(b"event: snapshot")  # then it never reads again
        async with sse(http, url + "/events") as events:
            await take(events, 1)
            async with anyio.create_task_group() as tg:
                got: list[Frame] = []

                async def read_all() -> None:
                    got.extend(await take(events, 200))

                tg.start_soon(read_all)
                with anyio.fail_after(30):  # dispatch never waits for the stuck client
                    for n in range(1, 201):
                        await transport.send(progress(n, pad=64 * 1024))
        assert [json.loads(e.data)["completed"] for e in got] == list(range(1, 201))
        await anyio.sleep(1.5)  # past send_timeout
        # Its write is abandoned and it is let go, or (where the server does not let a write
        # be cancelled: hypercorn on trio) it is counted as stalled.
        relay = app.stats()["relay"]
        assert relay["stuck"] + relay["stalled"] == 1
    assert len(stuck.received) < 8 * 2**20  # it held the server's writes back, not memory


async def test_closing_ends_every_stream() -> None:
    async with dashboard() as (_, app, url), httpx.AsyncClient(timeout=20) as http:
        async with sse(http, url + "/events") as events:
            (snapshot,) = await take(events, 1)
            app.close()
            with anyio.fail_after(10):  # the stream ends: no more frames, and no error
                rest = [frame async for frame in events]
    assert snapshot.event == "snapshot" and rest == []


async def test_a_client_that_leaves_is_forgotten_without_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with dashboard() as (transport, app, url), httpx.AsyncClient(timeout=20) as http:
        async with sse(http, url + "/events") as events:
            await take(events, 1)
            assert len(app.relay.clients) == 1
        async with RawClient.open(url) as raw:
            await raw.read_until(b"event: snapshot")
        with anyio.fail_after(10):
            while app.relay.clients:  # the server notices the disconnects
                await transport.send(progress(len(caplog.records) + 1))
                await anyio.sleep(0.05)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "number",
    [
        "\xb2".encode("latin-1"),  # '²': a digit to str.isdigit, not to int()
        b"9" * 5000,  # past the digits int() converts
        b"0" * 5000,
        b"99999999999999999999",  # from the future
        b"",
    ],
)
async def test_a_last_event_id_that_is_garbage_huge_or_from_the_future_gets_a_snapshot(
    number: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with dashboard() as (transport, app, url), httpx.AsyncClient(timeout=20) as http:
        await transport.send(progress(1))
        last = app.relay.epoch.encode() + b"-" + number
        async with sse(http, url + "/events", headers={"Last-Event-ID": last}) as events:  # type: ignore[dict-item]
            (snapshot,) = await take(events, 1)
            await transport.send(progress(2))
            (live,) = await take(events, 1)
    assert snapshot.event == "snapshot" and json.loads(snapshot.data)["jobs"][0]["completed"] == 1
    assert json.loads(live.data)["completed"] == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
