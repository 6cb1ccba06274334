"""Both built-in stores against a model of the Store contract, and the shipped conformance suite.

The state machine records events (through the real ordering guard and through arbitrary
verdicts), advances an injected clock past dedup expiry, saves and reads job states, acks the
inbox and keeps checkpoints; after every step the store must answer as the model does. The
stores are async: each machine drives its store from a blocking portal running trio.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from jobwatch import EventKind, JobEvent, JobStatus
from jobwatch._guard import decide
from jobwatch.abc import JobState, Store, Verdict
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import StoreConformance, make_event

JOBS = ("a", "b", "c")
URLS = ("https://example.com/1", "https://example.com/2")

statuses = st.none() | st.sampled_from(JobStatus)
job_events = st.builds(
    make_event,
    kind=st.sampled_from([k for k in EventKind if k is not EventKind.CREDIT_LOW]),
    job_id=st.sampled_from(JOBS),
    completed=st.none() | st.integers(0, 4),
    total=st.none() | st.just(4),
    url=st.sampled_from(URLS),
    source=st.sampled_from(["poll", "sse", "webhook"]),
    data=st.none() | st.fixed_dictionaries({"n": st.integers(0, 3)}),
).flatmap(
    lambda event: st.builds(
        attrs.evolve,
        st.just(event),
        attempt=st.none() | st.integers(1, 3),
        error=st.none() | st.sampled_from(["boom", ""]),
    )
)
workspace_events = st.builds(
    make_event,
    kind=st.just(EventKind.CREDIT_LOW),
    job_id=st.none(),
    key=st.sampled_from(["workspace:credit_low:d1", "workspace:credit_low:d2"]),
    data=st.fixed_dictionaries({"balance": st.integers(0, 100)}),
)
states = st.builds(
    JobState,
    job_id=st.sampled_from(JOBS),
    run=st.integers(1, 3),
    attempt=st.none() | st.integers(1, 3),
    status=statuses,
    completed=st.none() | st.integers(0, 4),
    total=st.none() | st.integers(0, 4),
    started=st.booleans(),
    terminal=st.booleans(),
    watched=st.booleans(),
    updated_at=st.floats(0, 1e6),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class StoreModel:
    """The Store contract in a few dictionaries."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.jobs: dict[str, JobState] = {}
        self.inbox: dict[str, JobEvent] = {}
        self.checkpoints: dict[str, str] = {}
        # Keys recorded again (after expiry) while still in the inbox: their place in the
        # inbox order is not specified (the memory store keeps it, sqlite moves it last).
        self.moved: set[str] = set()

    def record(self, job_id: str | None, verdict: Verdict, now: float, ttl: float) -> Verdict:
        event = verdict.event
        if event is not None and self.seen.get(event.key, float("-inf")) > now:
            return Verdict(event=None, check=verdict.check, dropped="duplicate")
        if verdict.state is not None:
            self.jobs[verdict.state.job_id] = verdict.state
        if event is not None:
            self.seen[event.key] = now + ttl
            if event.key in self.inbox:
                self.moved.add(event.key)
            self.inbox[event.key] = event
        return verdict

    def active(self) -> list[JobState]:
        return sorted(
            (s for s in self.jobs.values() if s.watched and not s.terminal), key=lambda s: s.job_id
        )


class StoreMachine(RuleBasedStateMachine):
    """Drives one store and the model side by side; subclasses say which store."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.model = StoreModel()
        self._portal_cm = start_blocking_portal("trio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.store = self.make_store(self.clock)
        self.portal.call(self.store.open)

    def make_store(self, clock: Clock) -> Store:
        raise NotImplementedError

    def teardown(self) -> None:
        try:
            self.portal.call(self.store.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def _record(
        self, job_id: str | None, decide_fn: Callable[[JobState | None], Verdict], ttl: float
    ) -> None:
        given: list[JobState | None] = []

        def spy(state: JobState | None) -> Verdict:
            given.append(state)
            return decide_fn(state)

        got = self.call(self.store.record, job_id, spy, ttl=ttl)
        # The store hands decide the saved state of that job (nothing for workspace events).
        expected_state = None if job_id is None else self.model.jobs.get(job_id)
        assert given and given[-1] == expected_state
        want = self.model.record(job_id, decide_fn(expected_state), self.clock.now, ttl)
        assert got == want
        if got.event is not None:
            assert dict(got.event.data) == dict(want.event.data)  # type: ignore[union-attr]

    @initialize()
    def nothing_yet(self) -> None:
        assert self.call(self.store.pending) == []
        assert self.call(self.store.active_jobs) == []

    @rule(event=job_events, authoritative=st.booleans(), ttl=st.sampled_from([5.0, 60.0]))
    def record_job_event(self, event: JobEvent, authoritative: bool, ttl: float) -> None:
        decide_fn = functools.partial(decide, event=event, authoritative=authoritative)
        self._record(event.job_id, decide_fn, ttl)

    @rule(
        events=st.lists(job_events | workspace_events, max_size=8),
        authoritative=st.booleans(),
        ttl=st.sampled_from([5.0, 60.0]),
    )
    def record_a_batch(self, events: list[JobEvent], authoritative: bool, ttl: float) -> None:
        # One call, as if each event were recorded in turn: every decide sees the state the
        # records before it left (a duplicate leaves it as it was), and keys claimed earlier
        # in the batch are seen.
        decides = [
            functools.partial(decide, event=event, authoritative=authoritative) for event in events
        ]
        got = self.call(
            self.store.record_batch,
            [(e.job_id, d) for e, d in zip(events, decides, strict=True)],
            ttl=ttl,
        )
        want = []
        for event, decide_fn in zip(events, decides, strict=True):
            state = None if event.job_id is None else self.model.jobs.get(event.job_id)
            want.append(self.model.record(event.job_id, decide_fn(state), self.clock.now, ttl))
        assert got == want

    @rule(event=workspace_events, ttl=st.sampled_from([5.0, 60.0]))
    def record_workspace_event(self, event: JobEvent, ttl: float) -> None:
        self._record(None, functools.partial(decide, event=event), ttl)

    @rule(event=st.none() | job_events, state=st.none() | states, check=st.booleans())
    def record_any_verdict(
        self, event: JobEvent | None, state: JobState | None, check: bool
    ) -> None:
        # The store applies whatever verdict it is given, not only the guard's.
        verdict = Verdict(
            event=event, state=state, check=check, dropped=None if event is not None else "stale"
        )
        job_id = event.job_id if event is not None else (state.job_id if state else "a")
        self._record(job_id, lambda _: verdict, 30.0)

    @rule(seconds=st.sampled_from([0.5, 4.0, 5.0, 6.0, 61.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(state=states)
    def put_job(self, state: JobState) -> None:
        self.call(self.store.put_job, state)
        self.model.jobs[state.job_id] = state

    @rule(job_id=st.sampled_from((*JOBS, "unknown")))
    def get_job(self, job_id: str) -> None:
        assert self.call(self.store.get_job, job_id) == self.model.jobs.get(job_id)

    @rule()
    def active_jobs(self) -> None:
        got = sorted(self.call(self.store.active_jobs), key=lambda s: s.job_id)
        assert got == self.model.active()

    @rule()
    def pending(self) -> None:
        got = self.call(self.store.pending)
        want = list(self.model.inbox.values())
        assert sorted(e.key for e in got) == sorted(e.key for e in want)
        moved = self.model.moved
        assert [e for e in got if e.key not in moved] == [e for e in want if e.key not in moved]
        by_key = {e.key: e for e in want}
        for event in got:
            assert event == by_key[event.key]
            assert dict(event.data) == dict(by_key[event.key].data)

    @precondition(lambda self: bool(self.model.inbox))
    @rule(data=st.data())
    def ack_pending(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.inbox)))
        self.call(self.store.ack, key)
        del self.model.inbox[key]
        self.model.moved.discard(key)

    @rule(key=st.sampled_from(["nope", "a:started#1"]))
    def ack_any(self, key: str) -> None:
        self.call(self.store.ack, key)
        self.model.inbox.pop(key, None)
        self.model.moved.discard(key)

    @rule(name=st.sampled_from(["sse:workspace", "sse:job_a"]), value=st.text(max_size=5))
    def put_checkpoint(self, name: str, value: str) -> None:
        self.call(self.store.put_checkpoint, name, value)
        self.model.checkpoints[name] = value

    @rule(name=st.sampled_from(["sse:workspace", "sse:job_a", "other"]))
    def get_checkpoint(self, name: str) -> None:
        assert self.call(self.store.get_checkpoint, name) == self.model.checkpoints.get(name)


MACHINE = settings(max_examples=50, stateful_step_count=40, deadline=None)


class MemoryStoreMachine(StoreMachine):
    def make_store(self, clock: Clock) -> Store:
        return MemoryStore(clock=clock)


class SQLiteStoreMachine(StoreMachine):
    def make_store(self, clock: Clock) -> Store:
        self.folder = tempfile.mkdtemp(prefix="jobwatch-machine-")
        return SQLiteStore(Path(self.folder) / "state.db", clock=clock)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


TestMemoryStoreMachine = MemoryStoreMachine.TestCase
TestMemoryStoreMachine.settings = MACHINE
TestSQLiteStoreMachine = SQLiteStoreMachine.TestCase
TestSQLiteStoreMachine.settings = MACHINE


# -- the shipped conformance suite, on both built-in stores ------------------------------------


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def make_store(self) -> Callable[[Callable[[], float]], Store]:
        return lambda clock: MemoryStore(clock=clock)


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[Callable[[], float]], Store]:
        return lambda clock: SQLiteStore(tmp_path / "deep" / "state.db", clock=clock)


class TestSQLiteStoreFullSync(StoreConformance):
    # Every batch in the store's thread (synchronous = full waits for the disk).
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[Callable[[], float]], Store]:
        return lambda clock: SQLiteStore(tmp_path / "state.db", synchronous="full", clock=clock)


class TestSQLiteStoreInMemory(StoreConformance):
    @pytest.fixture
    def make_store(self) -> Callable[[Callable[[], float]], Store]:
        return lambda clock: SQLiteStore(":memory:", clock=clock)


# -- what only the sqlite store promises ------------------------------------------------------


@pytest.mark.anyio
async def test_sqlite_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = SQLiteStore(path)
    await first.open()
    event = make_event("page", "j", url=URLS[0], data={"markdown": "# one"})
    await first.record("j", functools.partial(decide, event=event), ttl=60)
    await first.put_job(JobState(job_id="w", watched=True))
    await first.put_checkpoint("sse:workspace", "7")
    await first.aclose()

    second = SQLiteStore(path)
    await second.open()
    try:
        (pending,) = await second.pending()
        assert pending.key == "j:page:https://example.com/1#1"
        assert pending.data["markdown"] == "# one"
        assert [s.job_id for s in await second.active_jobs()] == ["w"]
        assert await second.get_checkpoint("sse:workspace") == "7"
        again = await second.record("j", functools.partial(decide, event=event), ttl=60)
        assert again.dropped == "duplicate"
    finally:
        await second.aclose()


@pytest.mark.anyio
async def test_sqlite_dead_letters_are_kept(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    try:
        event = make_event("completed", "j")
        await store.dead_letter(event, "callback", "RuntimeError: boom")
        assert await store.dead_letters() == [(event, "callback", "RuntimeError: boom")]
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_sqlite_unusable_path_is_a_config_error(tmp_path: Path) -> None:
    from jobwatch import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"\[jobwatch.sqlite\] path"):
        await SQLiteStore(blocker / "state.db").open()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite database"):
        await SQLiteStore(garbage).open()


@pytest.mark.anyio
async def test_sqlite_used_before_open_says_so() -> None:
    from jobwatch import JobwatchError

    with pytest.raises(JobwatchError, match="not open"):
        await SQLiteStore(":memory:").get_job("j")


def test_sqlite_store_from_config() -> None:
    from jobwatch import Config, ConfigError

    config = Config.from_mapping(
        {"jobwatch": {"sqlite": {"path": "x/y.db", "synchronous": "full"}}}
    )
    store = SQLiteStore.from_config(config)
    assert store.path == "x/y.db" and store.describe() == {"name": "sqlite", "path": "x/y.db"}
    bad = Config.from_mapping({"jobwatch": {"sqlite": {"synchronous": "sometimes"}}})
    with pytest.raises(ConfigError, match=r"\[jobwatch.sqlite\]"):
        SQLiteStore.from_config(bad)


# -- records written before events had `error` and `attempt` ----------------------------------

#: The jobs table and an event as jobwatch wrote them before either had an attempt.
_OLD_JOBS = """CREATE TABLE jobs (job_id TEXT PRIMARY KEY, run INTEGER NOT NULL,
    status TEXT, completed INTEGER, total INTEGER, started INTEGER NOT NULL,
    terminal INTEGER NOT NULL, watched INTEGER NOT NULL, updated_at REAL NOT NULL,
    active INTEGER NOT NULL)"""
_OLD_EVENT = (
    '{"kind":"failed","job_id":"j","status":"failed","completed":2,"total":5,'
    '"key":"j:terminal#1","source":"webhook","occurred_at":null,'
    '"data":{"jobId":"j","error":"quota"}}'
)


@pytest.mark.anyio
async def test_sqlite_opens_a_file_written_before_attempts(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute(_OLD_JOBS)
        db.execute("INSERT INTO jobs VALUES ('w', 2, 'processing', 3, 5, 1, 0, 1, 7.5, 1)")
        db.execute(
            "CREATE TABLE inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE,"
            " event TEXT NOT NULL)"
        )
        db.execute("INSERT INTO inbox (key, event) VALUES ('j:terminal#1', ?)", (_OLD_EVENT,))
        db.execute(
            "CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " subscriber TEXT NOT NULL, error TEXT NOT NULL, event TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO dead_letters (subscriber, error, event) VALUES ('cb', 'boom', ?)",
            (_OLD_EVENT,),
        )
    db.close()
    old_state = JobState(
        job_id="w",
        run=2,
        status=JobStatus.PROCESSING,
        completed=3,
        total=5,
        started=True,
        watched=True,
        updated_at=7.5,
    )

    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.get_job("w") == old_state
        assert await store.active_jobs() == [old_state]
        (pending,) = await store.pending()
        assert pending == JobEvent.from_json(_OLD_EVENT)
        assert (pending.error, pending.attempt) == (None, None)
        assert await store.dead_letters() == [(pending, "cb", "boom")]
        # The state takes an attempt from here on, beside the rows written before.
        event = attrs.evolve(make_event("progress", "w", completed=4), attempt=3)
        verdict = await store.record("w", functools.partial(decide, event=event), ttl=60)
        assert verdict.state is not None and verdict.state.attempt == 3
        await store.put_job(JobState(job_id="n", attempt=2, watched=True))
    finally:
        await store.aclose()

    again = SQLiteStore(path)  # a second open finds the column there
    await again.open()
    try:
        states = sorted(await again.active_jobs(), key=lambda s: s.job_id)
        assert [(s.job_id, s.attempt) for s in states] == [("n", 2), ("w", 3)]
    finally:
        await again.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_an_event_read_from_an_older_line_is_recorded_and_replayed(
    kind: str,
    tmp_path: Path,
) -> None:
    event = JobEvent.from_json(_OLD_EVENT.replace("#1", ""))
    store: Store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "state.db")
    await store.open()
    try:
        verdict = await store.record("j", functools.partial(decide, event=event), ttl=60)
        assert verdict.event is not None
        (pending,) = await store.pending()
        assert pending == verdict.event and (pending.error, pending.attempt) == (None, None)
    finally:
        await store.aclose()
