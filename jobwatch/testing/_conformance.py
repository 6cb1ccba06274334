"""Conformance suites for plugin authors: subclass, provide a fixture, run with pytest.

::

    from jobwatch.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def make_store(self):
            return lambda clock: MyStore(clock=clock)

The built-in stores and transports run the same suites.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from .._config import Config
from .._errors import ConfigError
from .._events import EventKind, JobStatus
from .._guard import decide
from ..abc import JobState, Store, Transport
from ..providers.reader import ReaderProvider
from ..sim import Simulator, Step
from ._host import ScriptedHost
from ._scripted import make_event
from ._sim import RunningSimulator

__all__ = ["StoreConformance", "TransportConformance"]

StoreFactory = Callable[[Callable[[], float]], Store]


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
class StoreConformance:
    """Behaviour every Store must show. Provide ``make_store(clock) -> Store`` as a fixture;
    ``clock`` is the time the store must expire dedup keys against."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        raise NotImplementedError("override the make_store fixture")

    @pytest.fixture
    def clock(self) -> _Clock:
        return _Clock()

    @pytest.fixture
    async def store(self, make_store: StoreFactory, clock: _Clock) -> AsyncIterator[Store]:
        store = make_store(clock)
        await store.open()
        try:
            yield store
        finally:
            await store.aclose()

    async def _record(self, store: Store, kind: str, job: str = "j1", **kw: Any) -> bool:
        event = make_event(kind, job, **kw)
        verdict = await store.record(job, lambda s: decide(s, event), ttl=60)
        return verdict.event is not None

    async def test_first_event_is_recorded_and_pending(self, store: Store) -> None:
        assert await self._record(store, "started")
        pending = await store.pending()
        assert [e.key for e in pending] == ["j1:started#1"]

    async def test_duplicate_key_is_dropped(self, store: Store) -> None:
        assert await self._record(store, "progress", completed=3)
        event = make_event("progress", "j2", completed=3, key="j1:progress:3")
        verdict = await store.record("j2", lambda s: decide(s, event), ttl=60)
        assert verdict.event is None and verdict.dropped == "duplicate"

    async def test_key_expires_after_ttl(self, store: Store, clock: _Clock) -> None:
        event = make_event("credit_low", None, key="workspace:credit_low:d1")
        assert (await store.record(None, lambda s: decide(s, event), ttl=10)).event is not None
        assert (await store.record(None, lambda s: decide(s, event), ttl=10)).event is None
        clock.now += 11
        assert (await store.record(None, lambda s: decide(s, event), ttl=10)).event is not None

    async def test_state_is_saved_with_the_event(self, store: Store) -> None:
        await self._record(store, "progress", completed=4, total=9)
        state = await store.get_job("j1")
        assert state is not None and (state.completed, state.total) == (4, 9)

    async def test_ack_removes_from_inbox_in_order(self, store: Store) -> None:
        for n in range(5):
            await self._record(store, "progress", completed=n)
        await store.ack("j1:progress:2#1")
        keys = [e.key for e in await store.pending()]
        assert keys == [f"j1:progress:{n}#1" for n in (0, 1, 3, 4)]

    async def test_ack_batch_removes_each_key_once_and_ignores_unknown_ones(
        self, store: Store
    ) -> None:
        for n in range(5):
            await self._record(store, "progress", completed=n)
        await store.ack_batch(["j1:progress:3#1", "j1:progress:0#1", "j1:none#1"])
        await store.ack_batch([])
        keys = [e.key for e in await store.pending()]
        assert keys == [f"j1:progress:{n}#1" for n in (1, 2, 4)]

    async def test_pending_events_round_trip(self, store: Store) -> None:
        await self._record(store, "page", url="https://example.com/a", data={"markdown": "# a"})
        (event,) = await store.pending()
        assert event.kind is EventKind.PAGE and event.data["markdown"] == "# a"

    async def test_pending_events_keep_every_field(self, store: Store) -> None:
        # What the application is handed after a restart is the event as it was recorded:
        # every field, not just its kind and key.
        sent = attrs.evolve(
            make_event(
                "failed",
                "j1",
                completed=3,
                total=7,
                source="webhook",
                occurred_at=datetime(2026, 4, 4, 12, 0, 0, 250_000, tzinfo=UTC),
                data={"error": "the browser pool crashed", "results": [{"url": "u", "n": 1}]},
            ),
            error="the browser pool crashed",
            attempt=2,
        )
        verdict = await store.record("j1", lambda s: decide(s, sent), ttl=60)
        assert verdict.event is not None
        (event,) = await store.pending()
        assert event == verdict.event
        assert event.data == verdict.event.data

    async def test_active_jobs_are_watched_and_not_terminal(self, store: Store) -> None:
        await store.put_job(JobState(job_id="a", watched=True))
        await store.put_job(JobState(job_id="b", watched=True, terminal=True))
        await store.put_job(JobState(job_id="c"))
        assert [s.job_id for s in await store.active_jobs()] == ["a"]

    async def test_put_and_get_job(self, store: Store) -> None:
        state = JobState(job_id="x", run=2, completed=5, watched=True)
        await store.put_job(state)
        assert await store.get_job("x") == state
        assert await store.get_job("nope") is None

    async def test_put_and_get_keep_every_field(self, store: Store) -> None:
        # The ordering guard reads all of them: a lost status or attempt lets a stale event
        # or an older run's report through after a restart.
        states = [
            JobState(
                job_id="x",
                run=3,
                attempt=2,
                status=JobStatus.PROCESSING,
                completed=5,
                total=9,
                started=True,
                watched=True,
                updated_at=1_700_000_000.25,
            ),
            JobState(
                job_id="y",
                run=1,
                attempt=1,
                status=JobStatus.CANCELLED,
                completed=0,
                total=0,
                started=False,
                terminal=True,
                updated_at=1_700_000_001.5,
            ),
        ]
        for state in states:
            await store.put_job(state)
        assert [await store.get_job(s.job_id) for s in states] == states

    async def test_checkpoints(self, store: Store) -> None:
        assert await store.get_checkpoint("sse:workspace") is None
        await store.put_checkpoint("sse:workspace", "42")
        await store.put_checkpoint("sse:workspace", "43")
        assert await store.get_checkpoint("sse:workspace") == "43"

    async def test_checkpoints_are_kept_per_name(self, store: Store) -> None:
        # Each stream resumes from its own last event id.
        await store.put_checkpoint("sse:job:a", "7")
        await store.put_checkpoint("sse:job:b", "12")
        assert await store.get_checkpoint("sse:job:a") == "7"
        assert await store.get_checkpoint("sse:job:b") == "12"
        assert await store.get_checkpoint("sse:job:c") is None

    async def test_terminal_state_survives(self, store: Store) -> None:
        await store.put_job(JobState(job_id="j1", watched=True))
        await self._record(store, "completed")
        state = await store.get_job("j1")
        assert state is not None and state.terminal and state.watched
        assert await store.active_jobs() == []

    async def test_the_end_s_stamp_survives(self, store: Store) -> None:
        # A poll requested before a run's end was recorded must begin no new run, in every
        # process sharing the store: the stamp of the state is what tells.
        event = make_event("completed", "j1")
        await store.record("j1", lambda s: decide(s, event, now=1_700_000_000.5), ttl=60)
        state = await store.get_job("j1")
        assert state is not None and state.updated_at == 1_700_000_000.5
        asked_before = make_event("progress", "j1", completed=1, source="poll")
        verdict = await store.record(
            "j1",
            lambda s: decide(s, asked_before, authoritative=True, as_of=1_700_000_000.0),
            ttl=60,
        )
        assert verdict.event is None and verdict.dropped == "after-terminal"

    async def test_concurrent_records_claim_a_key_once(self, store: Store) -> None:
        results: list[bool] = []

        async def one() -> None:
            results.append(await self._record(store, "progress", completed=7))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
        assert results.count(True) == 1

    async def _batch(self, store: Store, *events: Any) -> list[str | None]:
        records = [(e.job_id, lambda s, e=e: decide(s, e)) for e in events]
        verdicts = await store.record_batch(records, ttl=60)
        assert len(verdicts) == len(events)
        return [v.event.key if v.event is not None else v.dropped for v in verdicts]

    async def test_a_batch_is_recorded_in_order(self, store: Store) -> None:
        # Each record sees the state the ones before it left: the repeated `started` and
        # the lower count are dropped, and a key claimed earlier in the batch is seen.
        assert await self._batch(
            store,
            make_event("started", "j1"),
            make_event("progress", "j1", completed=3),
            make_event("started", "j1", source="poll"),
            make_event("progress", "j2", completed=0),
            make_event("progress", "j1", completed=2),
            make_event("progress", "j1", completed=3),
        ) == [
            "j1:started#1",
            "j1:progress:3#1",
            "duplicate",
            "j2:progress:0#1",
            "stale",
            "duplicate",
        ]
        state = await store.get_job("j1")
        assert state is not None and state.started and state.completed == 3
        assert [e.key for e in await store.pending()] == [
            "j1:started#1",
            "j1:progress:3#1",
            "j2:progress:0#1",
        ]

    async def test_a_duplicate_in_a_batch_leaves_the_state_as_it_was(self, store: Store) -> None:
        # Another job's event claimed the key before: within the batch, the duplicate moves
        # nothing, so the next event is judged against the state before it.
        assert await self._record(store, "progress", "j2", key="j1:progress:5", completed=5)
        assert await self._batch(
            store,
            make_event("progress", "j1", completed=1),
            make_event("progress", "j1", key="j1:progress:5", completed=5),
            make_event("progress", "j1", completed=4),
        ) == ["j1:progress:1#1", "duplicate", "j1:progress:4#1"]
        state = await store.get_job("j1")
        assert state is not None and state.completed == 4

    async def test_an_empty_batch_records_nothing(self, store: Store) -> None:
        assert await store.record_batch([], ttl=60) == []
        assert await store.pending() == []

    async def test_a_claim_is_taken_once(self, store: Store) -> None:
        assert not await store.claimed("delivery:a")
        assert await store.claim("delivery:a", ttl=60)
        assert await store.claimed("delivery:a")
        assert not await store.claim("delivery:a", ttl=60)
        assert await store.claim("delivery:b", ttl=60)

    async def test_concurrent_claims_take_a_key_once(self, store: Store) -> None:
        taken: list[bool] = []

        async def one() -> None:
            taken.append(await store.claim("delivery:c", ttl=60))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
        assert taken.count(True) == 1

    async def test_claimed_answers_beside_concurrent_records(self, store: Store) -> None:
        assert await store.claim("delivery:e", ttl=60)
        answers: dict[str, bool] = {}

        async def ask(key: str) -> None:
            answers[key] = await store.claimed(key)

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(self._record, store, "progress", f"j{n}")
                tg.start_soon(ask, "delivery:e")
                tg.start_soon(ask, f"delivery:not-{n}")
        assert answers == {"delivery:e": True, **{f"delivery:not-{n}": False for n in range(5)}}

    async def test_claims_and_event_keys_never_meet(self, store: Store) -> None:
        # A claim is not a dedup key: neither makes the other held.
        assert await store.claim("j1:started#1", ttl=60)
        assert await self._record(store, "started")
        assert await self._record(store, "progress", completed=1)
        assert not await store.claimed("j1:progress:1#1")
        assert [e.key for e in await store.pending()] == ["j1:started#1", "j1:progress:1#1"]

    async def test_a_claim_runs_out_after_its_ttl(self, store: Store, clock: _Clock) -> None:
        if type(store).claim is Store.claim:
            pytest.skip("the default claims run out on the event loop's clock, in this process")
        assert await store.claim("delivery:d", ttl=10)
        clock.now += 9
        assert await store.claimed("delivery:d")
        assert not await store.claim("delivery:d", ttl=10)
        clock.now += 2
        assert not await store.claimed("delivery:d")
        assert await store.claim("delivery:d", ttl=10)
        assert await store.claimed("delivery:d")

    async def test_a_batch_takes_its_claim_with_its_records(self, store: Store) -> None:
        # The webhook receiver hands a delivery's identity with its events.
        events = [make_event("started", "j1"), make_event("progress", "j2", completed=1)]
        records = [(e.job_id, lambda s, e=e: decide(s, e)) for e in events]
        verdicts = await store.record_batch(records, ttl=60, claim=("delivery:f", 60))
        assert [v.event and v.event.key for v in verdicts] == ["j1:started#1", "j2:progress:1#1"]
        assert await store.claimed("delivery:f")
        assert not await store.claim("delivery:f", ttl=60)
        # A claim without records, and one already held (it stays as it was).
        assert await store.record_batch([], ttl=60, claim=("delivery:g", 60)) == []
        assert await store.claimed("delivery:g")
        assert await self._batch(store, make_event("started", "j1")) == ["duplicate"]
        again = [("j3", lambda s: decide(s, make_event("started", "j3")))]
        await store.record_batch(again, ttl=60, claim=("delivery:f", 60))
        assert [e.key for e in await store.pending()][-1] == "j3:started#1"
        assert await store.claimed("delivery:f")

    async def test_a_batch_that_raises_takes_no_claim(self, store: Store) -> None:
        # Claimed once recorded, never before: a delivery answered 503 is recorded when the
        # sender retries it.
        def fails(state: JobState | None) -> Any:
            raise RuntimeError("decide failed")

        with pytest.raises(RuntimeError, match="decide failed"):
            await store.record_batch([("j1", fails)], ttl=60, claim=("delivery:h", 60))
        assert not await store.claimed("delivery:h")
        assert await store.claim("delivery:h", ttl=60)

    async def test_a_claim_taken_with_a_batch_runs_out_after_its_ttl(
        self, store: Store, clock: _Clock
    ) -> None:
        if type(store).claim is Store.claim:
            pytest.skip("the default claims run out on the event loop's clock, in this process")
        await store.record_batch([], ttl=60, claim=("delivery:i", 10))
        clock.now += 9
        assert await store.claimed("delivery:i")
        clock.now += 2
        assert not await store.claimed("delivery:i")

    async def test_records_that_succeed_strand_nothing(self, store: Store) -> None:
        await self._record(store, "started")
        assert await self._batch(store, make_event("progress", "j1", completed=2)) == [
            "j1:progress:2#1"
        ]
        assert await store.stranded() == []

    async def _dead(self, store: Store, job: str) -> str:
        """Record an event, have it dispatched, and keep it as a dead letter: its key."""
        assert await self._record(store, "completed", job)
        (event,) = [e for e in await store.pending() if e.job_id == job]
        await store.ack(event.key)
        await store.dead_letter(event, "notify", "RuntimeError: boom")
        if not await store.dead_letters():
            pytest.skip(f"the {store.name} store keeps no dead letters")
        return event.key

    async def test_a_dead_letter_is_listed_and_replayed_into_the_inbox(self, store: Store) -> None:
        key = await self._dead(store, "j9")
        [(event, subscriber, error)] = await store.dead_letters()
        assert (event.key, subscriber, error) == (key, "notify", "RuntimeError: boom")
        assert key not in [e.key for e in await store.pending()]
        assert await store.replay_dead_letter(key)
        assert await store.dead_letters() == []
        assert [e for e in await store.pending() if e.key == key] == [event]
        assert not await store.replay_dead_letter(key)

    async def test_drop_forgets_a_dead_letter_and_an_inbox_row(self, store: Store) -> None:
        assert await self._record(store, "started", "j1")
        assert await store.drop("j1:started#1")
        assert await store.pending() == []
        assert not await store.drop("j1:started#1")
        key = await self._dead(store, "j9")
        assert await store.drop(key)
        assert await store.dead_letters() == [] and await store.pending() == []
        assert not await store.replay_dead_letter(key)


@pytest.mark.anyio
class TransportConformance:
    """Behaviour every Transport must show, up to running it against a live API.

    Provide ``transport`` as a fixture returning a new, not yet running instance. The running
    tests serve the Reader simulator (the ``reader_sim`` fixture) and run the transport in a
    :class:`ScriptedHost`: it must start, report a watched job to its terminal event, take
    every request it makes from the host's budget, count under its own name and stop when
    cancelled. Override :meth:`config` for the options it needs and :meth:`start_job` where
    the API must be told where to report (a webhook URL, say). A transport that learns
    nothing from an API of its own (a relay fed by other processes) sets
    ``reports_from_api = False``.
    """

    #: Whether the transport learns about jobs from the API by itself (poll, stream, webhook).
    reports_from_api: ClassVar[bool] = True

    @pytest.fixture
    def transport(self) -> Transport:
        raise NotImplementedError("override the transport fixture")

    def config(self, url: str, api_key: str) -> Config:
        """The configuration the running tests use against the simulator at ``url``."""
        return Config.from_mapping(
            {
                "jobwatch": {
                    "base_url": url,
                    "api_key": api_key,
                    "store": "memory",
                    "safety_poll": 0,
                }
            },
            environ={},
        )

    def start_job(self, simulator: Simulator, transport: Transport) -> str:
        """Create a short job in ``simulator`` and return its id."""
        return simulator.create_job(steps=[Step(kind="page"), Step(kind="page")])

    def test_has_a_name(self, transport: Transport) -> None:
        assert isinstance(transport.name, str) and transport.name

    def test_push_is_a_bool(self, transport: Transport) -> None:
        assert isinstance(transport.push, bool)

    def test_watch_and_unwatch_before_running(self, transport: Transport) -> None:
        transport.watch("job_x")
        transport.unwatch("job_x")

    def test_from_config_builds_an_instance(self, transport: Transport) -> None:
        config = Config.from_mapping({"jobwatch": {}}, environ={})
        try:
            built = type(transport).from_config(config)
        except ConfigError:
            return  # a transport may need options the empty configuration lacks
        assert isinstance(built, type(transport))

    async def test_run_starts_and_stops_when_cancelled(
        self, transport: Transport, reader_sim: RunningSimulator
    ) -> None:
        host = ScriptedHost(
            self.config(reader_sim.url, reader_sim.api_key),
            ReaderProvider(self.config(reader_sim.url, reader_sim.api_key)),
        )
        with anyio.fail_after(10):
            async with host, anyio.create_task_group() as tg:
                await tg.start(transport.run, host)  # task_status.started() was called
                tg.cancel_scope.cancel()

    async def test_run_reports_a_watched_job_to_its_end(
        self, transport: Transport, reader_sim: RunningSimulator
    ) -> None:
        if not self.reports_from_api:
            pytest.skip(f"the {transport.name} transport learns nothing from an API itself")
        config = self.config(reader_sim.url, reader_sim.api_key)
        host = ScriptedHost(config, ReaderProvider(config))
        with anyio.fail_after(30):
            async with host, anyio.create_task_group() as tg:
                await tg.start(transport.run, host)
                job_id = self.start_job(reader_sim.simulator, transport)
                host.watch(transport, job_id)
                final = await host.final(job_id)
                tg.cancel_scope.cancel()
        assert final.kind is EventKind.COMPLETED and final.job_id == job_id
        # Every request the API saw was taken from the host's budget, and counted as the
        # transport's own.
        assert reader_sim.simulator.request_counts().total <= host.requests
        assert all(name == transport.name for name, _ in host.counts)
