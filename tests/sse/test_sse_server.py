"""The SSE transport against a scriptable server: ids and replay, fallback and recovery."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

import anyio
import pytest
from _sse_support import FakeReader, serving, start_stream, write

import jobwatch
from jobwatch import JobEvent
from jobwatch.abc import Capabilities
from jobwatch.providers.reader import ReaderProvider
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedHost
from jobwatch.transports import sse as sse_module
from jobwatch.transports._serve import lifespan
from jobwatch.transports.sse import SSEOptions, SSETransport

pytestmark = pytest.mark.anyio

JOB = "job_1"


class ReaderWithIds(ReaderProvider):
    """Reader's wire formats, from a server that does send ids and replays (unlike Reader)."""

    capabilities = Capabilities(
        job_stream=True, workspace_stream=True, stream_event_ids=True, webhook_scheme="reader"
    )


def config(url: str, **sse: Any) -> jobwatch.Config:
    options = {"backoff_initial": 0.01, "backoff_max": 0.05, "heartbeat_timeout": 5.0, **sse}
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": url,
                "api_key": "rdr_test",
                "store": "memory",
                "safety_poll": 0,
                "poll": {"rpm": 100_000},
                "sse": options,
            }
        }
    )


def watcher(
    cfg: jobwatch.Config, store: MemoryStore | None = None, provider: ReaderProvider | None = None
) -> jobwatch.Watcher:
    transport = SSETransport(cfg.options("sse", SSEOptions), rng=random.Random(0))
    return jobwatch.Watcher(
        cfg,
        transports=[transport],
        store=store or MemoryStore(),
        provider=provider or ReaderProvider(cfg),
    )


def progress(
    server: FakeReader, job: str, completed: int, total: int = 50, status: str = "processing"
) -> None:
    server.add(
        "job:progress", {"jobId": job, "status": status, "completed": completed, "total": total}
    )


def completed(server: FakeReader, job: str, total: int = 50) -> None:
    server.add(
        "job:completed",
        {
            "jobId": job,
            "status": "completed",
            "completed": total,
            "total": total,
            "creditsUsed": total,
        },
    )


class Seen:
    def __init__(self) -> None:
        self.events: dict[str, list[JobEvent]] = defaultdict(list)

    def __call__(self, event: JobEvent) -> None:
        assert event.job_id is not None
        self.events[event.job_id].append(event)

    def progress(self, job: str) -> list[int]:
        return [
            e.completed
            for e in self.events[job]
            if e.kind == "progress" and e.completed is not None
        ]


def sse_stats(w: jobwatch.Watcher) -> dict[str, int]:
    return dict(w.statistics().transports.get("sse", {}))


async def until(condition: Any, limit: float = 10.0) -> None:
    """Wait until ``condition()`` holds, at most ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - no event to wait on: a predicate to poll
            await anyio.sleep(0.01)


async def test_a_server_with_ids_is_resumed_with_last_event_id_and_not_polled() -> None:
    server = FakeReader(
        snapshots={JOB: {"status": "processing", "completed": 0, "total": 50}}, drop_after=4
    )
    async with serving(server) as url:
        cfg = config(url, scope="workspace")
        seen = Seen()
        store = MemoryStore()
        async with watcher(cfg, store, ReaderWithIds(cfg)) as w:
            w.subscribe(seen)
            waiting = w.subscribe(lambda e: None, job_id=JOB)  # watched from the start
            await until(lambda: len(server.stream_opens) >= 1)
            for n in range(1, 50):
                progress(server, JOB, n)
            completed(server, JOB)
            with anyio.fail_after(10):
                final = await w.wait(JOB)
            waiting.cancel()
            stats = sse_stats(w)
        checkpoint = await store.get_checkpoint("sse:workspace")
    assert final.kind == "completed"
    # Every frame arrived once, in order, across a dozen reconnects: no gap, no duplicate.
    # (0 comes from the poll on start, which may arrive after the first frames.)
    assert [n for n in seen.progress(JOB) if n] == list(range(1, 50))
    assert stats["reconnects"] >= 10
    sent = server.last_event_ids
    assert sent[0] is None and all(ident is not None for ident in sent[1:])
    resumed = [int(ident or 0) for ident in sent[1:]]
    assert resumed == sorted(resumed)
    # Resumed, not reconciled: no poll per reconnect, only those on start (the Watcher's
    # and the stream's first connection).
    assert server.polls.get(JOB, 0) <= 2
    assert checkpoint == "50"


async def test_a_restarted_process_resumes_from_its_checkpoint() -> None:
    server = FakeReader(snapshots={JOB: {"status": "processing", "completed": 0, "total": 50}})
    store = MemoryStore()
    await store.put_checkpoint("sse:workspace", "3")
    for n in range(1, 7):
        progress(server, JOB, n)
    async with serving(server) as url:
        cfg = config(url, scope="workspace")
        seen = Seen()
        async with watcher(cfg, store, ReaderWithIds(cfg)) as w:
            w.subscribe(seen)
            await until(lambda: seen.progress(JOB) == [4, 5, 6])
    assert server.last_event_ids[0] == "3"
    assert server.polls == {}  # resumed by the server: nothing to reconcile


async def test_a_server_without_ids_gets_one_poll_per_job_after_each_reconnect() -> None:
    server = FakeReader(
        snapshots={JOB: {"status": "processing", "completed": 0, "total": 9}}, drop_after=2
    )

    def frames(*counts: int) -> None:
        for n in counts:
            server.add(
                "job:progress",
                {"jobId": JOB, "status": "processing", "completed": n, "total": 9},
                with_id=False,
            )

    async with serving(server) as url:
        cfg = config(url, scope="workspace")
        seen = Seen()
        async with watcher(cfg) as w:
            w.subscribe(seen)
            sub = w.subscribe(lambda e: None, job_id=JOB)
            await until(lambda: len(server.stream_opens) == 1 and server.polls.get(JOB) == 1)
            polls = server.polls[JOB]  # the stream's first connection reconciled
            # The job finishes while its terminal frame is lost: the connection drops
            # instead of sending 3, and the reconcile poll after the reconnect finds it.
            server.snapshots[JOB] = {"status": "completed", "completed": 9, "total": 9}
            frames(1, 2, 3)
            with anyio.fail_after(10):
                final = await w.wait(JOB)
            sub.cancel()
    assert final.kind == "completed" and final.source == "poll"
    assert all(ident is None for ident in server.last_event_ids)
    assert server.polls[JOB] == polls + 1
    progress = seen.progress(JOB)
    assert progress == sorted(set(progress)) and {1, 2} <= set(progress) and 3 not in progress


@pytest.mark.parametrize("refusal", [404, 405, "html"])
@pytest.mark.parametrize("scope", ["job", "workspace"])
async def test_fallback_to_polling_and_back(scope: str, refusal: str | int) -> None:
    server = FakeReader(
        snapshots={JOB: {"status": "processing", "completed": 1, "total": 10}}, stream_mode=refusal
    )
    async with serving(server) as url:
        cfg = config(url, scope=scope, fallback_interval=0.05, probe_interval=0.3)
        seen = Seen()
        async with watcher(cfg) as w:
            w.subscribe(seen)
            sub = w.subscribe(lambda e: None, job_id=JOB)
            # Fallen back: the job's progress arrives by polling.
            server.snapshots[JOB] = {"status": "processing", "completed": 5, "total": 10}
            await until(lambda: 5 in seen.progress(JOB))
            stats = sse_stats(w)
            assert stats["fallbacks"] == 1 and stats.get("streams_opened", 0) == 0
            assert seen.events[JOB][-1].source == "poll"
            # The stream comes back: the next probe returns to it.
            server.stream_mode = "sse"
            await until(lambda: sse_stats(w).get("recoveries") == 1)
            polls = server.polls[JOB]
            if scope == "job":
                server.add(
                    "progress",
                    {"status": "processing", "completed": 8, "total": 10},
                    job_id=JOB,
                    with_id=False,
                )
                server.add(
                    "done",
                    {"status": "completed", "completed": 10, "total": 10},
                    job_id=JOB,
                    with_id=False,
                )
            else:
                progress(server, JOB, 8, total=10)
                completed(server, JOB, total=10)
            with anyio.fail_after(10):
                final = await w.wait(JOB)
            sub.cancel()
    assert final.source == "sse" and seen.progress(JOB)[-1] == 8
    # Back on the stream, polling stopped (one reconcile poll when it reopened at most).
    assert server.polls[JOB] <= polls + 1


async def test_a_malformed_frame_is_counted_and_the_stream_goes_on() -> None:
    server = FakeReader(snapshots={JOB: {"status": "processing", "completed": 0, "total": 3}})
    async with serving(server) as url:
        cfg = config(url, scope="workspace")
        seen = Seen()
        async with watcher(cfg) as w:
            w.subscribe(seen)
            await until(lambda: len(server.stream_opens) >= 1)
            progress(server, JOB, 1, total=3)
            server.add("job:progress", {}, raw='{"jobId": "job_1", "completed": "two"')
            server.add("job:teleported", {"jobId": JOB})
            progress(server, JOB, 2, total=3)
            completed(server, JOB, total=3)
            await until(lambda: any(e.terminal for e in seen.events[JOB]))
            stats = sse_stats(w)
    assert stats["malformed"] == 2
    assert stats["streams_opened"] == 1 and stats.get("reconnects", 0) == 0
    assert seen.progress(JOB) == [1, 2]


async def test_repeated_failures_fall_back_and_a_401_ends_the_jobs() -> None:
    server = FakeReader(
        snapshots={JOB: {"status": "processing", "completed": 0, "total": 3}}, stream_mode=503
    )
    async with serving(server) as url:
        cfg = config(
            url, scope="workspace", max_failures=3, fallback_interval=0.05, probe_interval=0.2
        )
        # The refused workspace stream stops the only transport: the Watcher ends with it too.
        with pytest.raises(jobwatch.AuthenticationError):
            async with watcher(cfg) as w:
                sub = w.subscribe(lambda e: None, job_id=JOB)
                await until(lambda: sse_stats(w).get("fallbacks") == 1)
                assert len(server.stream_opens) == 3
                server.stream_mode = 401
                with anyio.fail_after(10), pytest.raises(jobwatch.AuthenticationError):
                    await w.wait(JOB)
                sub.cancel()
    assert "check api_key" in w.statistics().stopped["sse"]


def described(url: str) -> jobwatch.Config:
    """A described API whose job streams carry ids and resume, with one way of ending."""
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "provider": "generic",
                "base_url": url,
                "store": "memory",
                "safety_poll": 0,
                "poll": {"rpm": 100_000},
                "sse": {"backoff_initial": 0.01, "backoff_max": 0.05, "heartbeat_timeout": 5.0},
                "generic": {
                    "api": "Resuming",
                    "auth": {"style": "none"},
                    "job": {"get": "GET /jobs/{id}", "id": "id"},
                    "status": {
                        "path": "status",
                        "map": {"running": "processing", "ok": "completed"},
                    },
                    "stream": {
                        "url": "GET /jobs/{id}/stream",
                        "resume": True,
                        "events": {"done": "done"},
                        "done": {"path": "reason", "map": {"": "completed"}},
                    },
                },
            }
        }
    )


async def test_a_resumed_job_stream_that_ended_without_a_readable_final_frame_polls_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server ends the job's stream after a final frame the description cannot read; a
    # resumed connection then has nothing more to say (it only pings): one poll must learn
    # how the job ended, as the provider's warning promises.
    opens: list[str | None] = []
    polled, ended = anyio.Event(), anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["path"].endswith("/stream"):
            opens.append(dict(scope["headers"]).get(b"last-event-id"))
            await start_stream(send)
            if len(opens) == 1:
                await polled.wait()  # the poll of the first connection is answered first
                await write(send, b'id: 1\nevent: done\ndata: {"reason": "expired"}\n\n')
                ended.set()
                await write(send, b"", more=False)
                return
            while True:
                await write(send, b": ping\n\n")
                await anyio.sleep(0.05)
        status = "ok" if ended.is_set() else "running"
        polled.set()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": b'{"id": "j1", "status": "%s"}' % status.encode(),
            }
        )

    async with serving(app) as url:
        cfg = described(url)
        transport = SSETransport(cfg.options("sse", SSEOptions), rng=random.Random(0))
        async with jobwatch.Watcher(cfg, transports=[transport], store=MemoryStore()) as w:
            with anyio.fail_after(10):
                final = await w.wait("j1")
    assert final.kind == "completed" and final.source == "poll"
    assert "polling finds out how the job ended" in caplog.text


class SlowToExplain(FakeReader):
    """A FakeReader whose status requests for ``hung`` jobs never answer."""

    hung: set[str] = set()

    async def _poll(self, job_id: str, send: Any) -> None:
        if job_id in self.hung:
            self.polls[job_id] = self.polls.get(job_id, 0) + 1
            await anyio.sleep_forever()
        await super()._poll(job_id, send)


def failed_frames(jobs: list[str]) -> str:
    """One chunk holding a reasonless job:failed frame per job (written at once: one read)."""
    frames = [json.dumps({"jobId": job, "completed": 1, "total": 2}) for job in jobs]
    return "\n\nevent: job:failed\ndata: ".join(frames)


async def test_many_failures_without_a_reason_hold_a_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each failure without its reason was asked about in turn, each holding the read's
    # delivery up to the deadline: a read of four failures from an API that did not answer
    # status requests was delivered after four deadlines, not one.
    monkeypatch.setattr(sse_module, "_EXPLAIN_DEADLINE", 0.5)
    jobs = [f"job_h{n}" for n in range(4)]
    server = SlowToExplain()
    server.hung = set(jobs)
    async with serving(server) as url:
        cfg = config(url, scope="workspace")
        seen = Seen()
        async with watcher(cfg) as w:
            w.subscribe(seen)
            subs = [w.subscribe(lambda e: None, job_id=job) for job in jobs]
            await until(lambda: len(server.stream_opens) == 1)
            server.add("job:failed", {}, raw=failed_frames(jobs), with_id=False)
            started = anyio.current_time()
            with anyio.fail_after(10):
                finals = [await w.wait(job) for job in jobs]
            took = anyio.current_time() - started
            for sub in subs:
                sub.cancel()
    assert [f.kind for f in finals] == ["failed"] * 4
    assert took < 1.5, took  # one deadline (0.5 s) for the read, not one per failure


async def test_a_failure_of_a_job_no_one_watches_costs_no_status_request() -> None:
    # A failure without its reason was asked about whatever the job: one status request for
    # every failed job of the workspace, and again for a job that had ended when the stream
    # repeated its failure (as a server replaying after a reconnect does).
    server = FakeReader(snapshots={JOB: {"status": "failed", "completed": 1, "total": 2}})
    async with serving(server) as url:
        cfg = config(url, scope="workspace")
        seen = Seen()
        async with watcher(cfg) as w:
            w.subscribe(seen)
            await until(lambda: len(server.stream_opens) == 1)
            server.add("job:failed", {"jobId": JOB, "completed": 1, "total": 2}, with_id=False)
            await until(lambda: any(e.terminal for e in seen.events[JOB]))
            server.add("job:failed", {"jobId": JOB, "completed": 1, "total": 2}, with_id=False)
            progress(server, "job_other", 1)  # after the repeat: seen once it was handled
            await until(lambda: bool(seen.events["job_other"]))
    assert server.polls == {}


class _CountingHost(ScriptedHost):
    """Counts how often the transport lists the watched jobs (a set of all of them)."""

    listed = 0

    def watched(self) -> frozenset[str]:
        self.listed += 1
        return super().watched()


async def test_reads_without_a_failure_do_not_list_the_watched_jobs() -> None:
    # Every read listed every watched job, to look for failures without a reason among its
    # events: with ten thousand watched jobs, a set of ten thousand for every read of a busy
    # stream.
    server = FakeReader()
    async with serving(server) as url:
        cfg = config(url, scope="workspace", reconcile_on_watch=False)
        transport = SSETransport(cfg.options("sse", SSEOptions), rng=random.Random(0))
        host = _CountingHost(cfg, ReaderProvider(cfg))
        async with host, anyio.create_task_group() as tg:
            await tg.start(transport.run, host)
            await until(lambda: len(server.stream_opens) == 1)
            listed = host.listed
            for n in range(1, 21):
                progress(server, "job_1", n)
                await until(lambda n=n: len(host.delivered) >= n)  # one read each
            assert host.listed == listed
            tg.cancel_scope.cancel()
