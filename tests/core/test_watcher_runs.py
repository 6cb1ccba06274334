"""What a Watcher knows of a job's runs: events replayed from the store end a run as
delivered ones do, and a finished job's new run is watched like the first."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import trio
import trio.testing

import jobwatch
from jobwatch._guard import decide
from jobwatch.abc import JobState
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event


def _config(**core: Any) -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {"jobwatch": {"api_key": "rdr_x", "store": "memory", "safety_poll": 0.5, **core}},
        environ={},
    )


class API:
    """Reader's status answer for job j1, counting the polls."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.polls += 1
        return httpx.Response(
            200,
            json={
                "success": True,
                "data": {"id": "j1", "status": self.status, "completed": 1, "total": 2},
            },
        )


def _run(main: Any) -> Any:
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_finished_jobs_new_run_is_watched_by_the_safety_net() -> None:
    api, push, seen = API("processing"), ScriptedTransport(), []

    async def main() -> None:
        second_end = trio.Event()

        def note(event: jobwatch.JobEvent) -> None:
            seen.append(event.key)
            if event.key == "j1:terminal#2":
                second_end.set()

        watcher = jobwatch.Watcher(
            _config(), transports=[push], http_transport=httpx.MockTransport(api)
        )
        async with watcher:
            watcher.subscribe(note, job_id="j1")
            await push.send(make_event("started", "j1"))
            await push.send(make_event("completed", "j1"))  # run 1 ends
            await push.send(make_event("started", "j1"))  # a retry: the check poll confirms it
            await trio.sleep(1)
            assert "j1:started#2" in seen
            api.status = "completed"  # run 2 ends, and nothing pushes it: the net must poll
            with trio.fail_after(10):
                await second_end.wait()

    _run(main)


def test_a_final_event_replayed_from_the_inbox_ends_the_run() -> None:
    api, store, seen = API("completed"), MemoryStore(), []
    final = make_event("completed", "j1", completed=2, total=2)

    async def main() -> None:
        # An earlier process recorded the job's end but stopped before dispatching it.
        await store.open()
        await store.put_job(JobState(job_id="j1", watched=True))
        await store.record("j1", functools.partial(decide, event=final), ttl=60)
        watcher = jobwatch.Watcher(
            _config(),
            transports=[ScriptedTransport()],
            store=store,
            http_transport=httpx.MockTransport(api),
        )
        watcher.subscribe(lambda event: seen.append(event.key), job_id="j1")
        async with watcher:
            await trio.sleep(5)  # ten safety-net periods
            with trio.fail_after(1):
                assert (await watcher.wait("j1")).key == "j1:terminal#1"
        assert seen == ["j1:terminal#1"]
        assert api.polls == 0, "a job whose end was replayed is not polled again"

    _run(main)


def _poll_config() -> jobwatch.Config:
    return _config(transport="poll", safety_poll=0, poll={"interval": 1.0, "max_interval": 5.0})


def test_a_job_left_unfinished_is_watched_by_the_next_watcher_until_a_deadline() -> None:
    api, store = API("processing"), MemoryStore()

    async def main() -> None:
        async with jobwatch.Watcher(
            _poll_config(), store=store, http_transport=httpx.MockTransport(api)
        ) as watcher:
            watcher.subscribe(lambda event: None, job_id="j1")
            await trio.sleep(10)
        # The process stopped (or restarted) while the job ran: the next one watches it ...
        watcher = jobwatch.Watcher(
            _poll_config(), store=store, http_transport=httpx.MockTransport(api)
        )
        async with watcher:
            polls = api.polls
            await trio.sleep(60)
            assert api.polls > polls
            # ... for the default deadline, not forever: its status may never end.
            await trio.sleep(2 * 3600)
            polls = api.polls
            await trio.sleep(3600)
            assert api.polls == polls

    _run(main)


def test_waiting_again_on_a_retried_job_waits_for_its_new_run() -> None:
    api = API("failed")

    async def main() -> None:
        async with jobwatch.Watcher(
            _poll_config(), store=MemoryStore(), http_transport=httpx.MockTransport(api)
        ) as watcher:
            first = await watcher.wait("j1", timeout=60)
            api.status = "processing"  # the job is retried: a new run
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_finish_later, api)
                second = await watcher.wait("j1", timeout=60)
        assert (first.kind, first.key) == ("failed", "j1:terminal#1")
        assert (second.kind, second.key) == ("completed", "j1:terminal#2")

    _run(main)


async def _finish_later(api: API) -> None:
    await trio.sleep(20)
    api.status = "completed"
