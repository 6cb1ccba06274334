"""Properties of dedup and the ordering guard under any interleaving of three sources.

Jobs have realistic lifecycles (maybe queued, started, rising progress counts, pages, one
terminal event). Each fact is reported by one to three sources, some twice, and the reports
arrive in any order. Fed through the pure ``decide`` and the store's dedup — a model of the
store, the real MemoryStore, and the real Watcher with ScriptedTransports — the application
must see each key once, no status going backwards within a run, exactly one terminal event
per run and every page.
"""

from __future__ import annotations

import functools
import random
from collections import defaultdict
from collections.abc import Sequence

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import jobwatch
from jobwatch import EventKind, JobEvent, JobStatus
from jobwatch._guard import decide, qualify
from jobwatch.abc import JobState, Verdict
from jobwatch.providers.reader import ReaderProvider
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event

SOURCES = ("poll", "sse", "webhook")
TTL = 3600.0
PROPERTY = settings(max_examples=400, deadline=None)


# -- lifecycles ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Lifecycle:
    """One run of one job, as the facts the API reports."""

    job_id: str
    queued: bool
    counts: tuple[int, ...]
    total: int
    pages: tuple[tuple[str, bool], ...]
    end: EventKind
    final_count: bool

    def facts(self) -> list[JobEvent]:
        job = self.job_id
        facts = []
        if self.queued:
            facts.append(make_event("progress", job, status="queued", completed=0,
                                    total=self.total))
        facts.append(make_event("started", job, total=self.total))
        facts += [make_event("progress", job, completed=c, total=self.total)
                  for c in self.counts]
        facts += [make_event("page_failed" if failed else "page", job, url=url)
                  for url, failed in self.pages]
        done = self.total if self.end is EventKind.COMPLETED else max(self.counts, default=0)
        facts.append(make_event(self.end, job, total=self.total,
                                completed=done if self.final_count else None))
        return facts


@st.composite
def lifecycles(draw: st.DrawFn, job_id: str) -> Lifecycle:
    total = draw(st.integers(1, 12))
    counts = draw(st.lists(st.integers(1, total), unique=True, max_size=5))
    pages = draw(st.lists(st.integers(0, 9), unique=True, max_size=4))
    return Lifecycle(
        job_id=job_id,
        queued=draw(st.booleans()),
        counts=tuple(sorted(counts)),
        total=total,
        pages=tuple((f"https://example.com/{job_id}/{n}", draw(st.booleans())) for n in pages),
        end=draw(st.sampled_from([EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED])),
        final_count=draw(st.booleans()),
    )


@st.composite
def deliveries(draw: st.DrawFn, facts: Sequence[JobEvent]) -> list[JobEvent]:
    """Every fact from one to three sources, some twice, in some order.

    The order is drawn from a seed (hypothesis shrinks the jobs; drawing hundreds of swaps
    one by one would cost more than the check). ``order`` biases it: fully shuffled, in
    lifecycle order with a few swaps, or reversed.
    """
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    out = []
    for fact in facts:
        for source in rng.sample(SOURCES, rng.randint(1, len(SOURCES))):
            out += [attrs.evolve(fact, source=source)] * rng.randint(1, 2)
    order = draw(st.sampled_from(["shuffled", "nearly", "reversed"]))
    if order == "shuffled":
        rng.shuffle(out)
    elif order == "reversed":
        out.reverse()
    else:
        for _ in range(max(1, len(out) // 8)):
            i, j = rng.randrange(len(out)), rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Lifecycle], list[JobEvent]]:
    count = draw(st.integers(1, 5))
    jobs = [draw(lifecycles(f"job_{n}")) for n in range(count)]
    facts = [fact for job in jobs for fact in job.facts()]
    return jobs, draw(deliveries(facts))


# -- a model of the store's record() ---------------------------------------------------------


class ModelStore:
    """What Store.record promises: decide, drop a seen key, else save state and claim it."""

    def __init__(self) -> None:
        self.states: dict[str, JobState] = {}
        self.seen: set[str] = set()

    def record(self, event: JobEvent, *, authoritative: bool = False) -> Verdict:
        state = None if event.job_id is None else self.states.get(event.job_id)
        verdict = decide(state, event, authoritative=authoritative)
        if verdict.event is not None and verdict.event.key in self.seen:
            return Verdict(event=None, check=verdict.check, dropped="duplicate")
        if verdict.state is not None:
            self.states[verdict.state.job_id] = verdict.state
        if verdict.event is not None:
            self.seen.add(verdict.event.key)
        return verdict


def run_model(inputs: Sequence[JobEvent]) -> list[Verdict]:
    store = ModelStore()
    return [store.record(event) for event in inputs]


def run_memory_store(inputs: Sequence[JobEvent]) -> list[Verdict]:
    store = MemoryStore(clock=lambda: 0.0)

    async def feed() -> list[Verdict]:
        return [await store.record(e.job_id, functools.partial(decide, event=e), ttl=TTL)
                for e in inputs]

    return trio.run(feed)


# -- the properties --------------------------------------------------------------------------


def by_job(events: Sequence[JobEvent]) -> dict[str | None, list[JobEvent]]:
    out: dict[str | None, list[JobEvent]] = defaultdict(list)
    for event in events:
        out[event.job_id].append(event)
    return out


def check_run(job: Lifecycle, seen: Sequence[JobEvent], arrived: Sequence[JobEvent],
              run: int = 1, opened_by: Sequence[JobEvent] = ()) -> None:
    """The application's view of one run of one job, given the order reports arrived in.

    ``opened_by``: the polled snapshot's events that began this run (a retry), if any.
    """
    facts = {fact.key: fact for fact in job.facts()}
    assert all(e.key.endswith(f"#{run}") and e.key.rsplit("#", 1)[0] in facts for e in seen)
    seen, arrived = [*opened_by, *seen], [*opened_by, *arrived]
    # Exactly one terminal event, of the job's end; nothing but pages after it.
    terminals = [i for i, e in enumerate(seen) if e.terminal]
    assert len(terminals) == 1 and seen[terminals[0]].kind is job.end
    assert all(e.kind in (EventKind.PAGE, EventKind.PAGE_FAILED) for e in seen[terminals[0]:][1:])
    # Status never moves backwards; progress counts only rise.
    ranks = [e.status.rank for e in seen if e.status is not None]
    assert ranks == sorted(ranks)
    counts = [e.completed for e in seen if e.kind is EventKind.PROGRESS]
    assert counts == sorted(set(counts))  # type: ignore[type-var]
    # Every page, once.
    pages = sorted(e.key for e in seen if e.kind in (EventKind.PAGE, EventKind.PAGE_FAILED))
    assert pages == sorted(f"{k}#{run}" for k, f in facts.items()
                           if f.kind in (EventKind.PAGE, EventKind.PAGE_FAILED))
    # Liveness: started and the freshest progress that arrived before the end get through.
    first_end = next(i for i, e in enumerate(arrived) if e.terminal)
    before = arrived[:first_end]
    started = [e for e in seen if e.kind is EventKind.STARTED]
    assert len(started) == int(any(e.kind is EventKind.STARTED for e in before))
    running = [e.completed for e in before
               if e.kind is EventKind.PROGRESS and e.status is JobStatus.PROCESSING]
    if running:
        assert max(running) in counts  # type: ignore[type-var]


def check_view(jobs: Sequence[Lifecycle], inputs: Sequence[JobEvent],
               verdicts: Sequence[Verdict]) -> None:
    seen = [v.event for v in verdicts if v.event is not None]
    keys = [e.key for e in seen]
    assert len(keys) == len(set(keys)), "a key reached the application twice"
    views, arrivals = by_job(seen), by_job(inputs)
    for job in jobs:
        check_run(job, views[job.job_id], arrivals[job.job_id])
    # After a job's terminal event: pushed `started` asks for a check and is dropped;
    # a repeated terminal event is a plain duplicate; pages still flow.
    ended: set[str] = set()
    for event, verdict in zip(inputs, verdicts, strict=True):
        assert event.job_id is not None
        if event.job_id in ended and event.kind is EventKind.STARTED:
            assert verdict.event is None and verdict.check
            assert verdict.dropped == "after-terminal"
        if event.job_id in ended and event.terminal:
            assert (verdict.event, verdict.check) == (None, False)
        if event.kind in (EventKind.PAGE, EventKind.PAGE_FAILED):
            assert not verdict.check
        if verdict.event is not None and verdict.event.terminal:
            ended.add(event.job_id)
        if verdict.event is None:
            assert verdict.dropped in ("duplicate", "stale", "backwards", "after-terminal")


@PROPERTY
@given(scenarios())
def test_any_interleaving(scenario: tuple[list[Lifecycle], list[JobEvent]]) -> None:
    jobs, inputs = scenario
    verdicts = run_model(inputs)
    check_view(jobs, inputs, verdicts)
    # The first report of a fact names its source.
    first: dict[str, str] = {}
    for event in inputs:
        first.setdefault(event.key, event.source)
    for verdict in verdicts:
        if verdict.event is not None:
            assert verdict.event.source == first[verdict.event.key.rsplit("#", 1)[0]]
    # The real MemoryStore agrees with the model, verdict by verdict.
    assert run_memory_store(inputs) == verdicts


# -- runs: a retried job ---------------------------------------------------------------------


def snapshot(job_id: str, status: str, completed: int = 0) -> list[JobEvent]:
    """What a poll of a job in ``status`` reports (as the Reader provider decodes it)."""
    events = []
    if status == "processing":
        events.append(make_event("started", job_id, source="poll", completed=completed))
    events.append(make_event("progress", job_id, status=status, completed=completed,
                             source="poll"))
    return events


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_each_run_of_a_retried_job_is_new(data: st.DataObject) -> None:
    runs = data.draw(st.integers(1, 3))
    job_id = "job_r"
    store = ModelStore()
    for run in range(1, runs + 1):
        life = data.draw(lifecycles(job_id))
        if run > 1:
            # Only a polled snapshot that is not terminal after a terminal one begins a run.
            reopen = snapshot(job_id, data.draw(st.sampled_from(["queued", "processing"])))
            verdicts = [store.record(e, authoritative=True) for e in reopen]
            opened = [v.event for v in verdicts if v.event is not None]
            assert [e.key for e in opened] == [f"{e.key}#{run}" for e in reopen]
            assert store.states[job_id].run == run
        else:
            opened = []
        inputs = data.draw(deliveries(life.facts()))
        seen = [v.event for v in (store.record(e) for e in inputs) if v.event is not None]
        check_run(life, seen, inputs, run=run, opened_by=opened)
        # Late pushes of the finished run are dropped; those that contradict the terminal
        # state (a `started`, a higher count) ask for one confirming poll.
        final = store.states[job_id].completed
        for event in data.draw(st.lists(st.sampled_from(life.facts()), max_size=4)):
            verdict = store.record(event)
            assert verdict.event is None and store.states[job_id].run == run
            if event.kind in (EventKind.PAGE, EventKind.PAGE_FAILED) or event.terminal:
                assert (verdict.dropped, verdict.check) == ("duplicate", False)
                continue
            assert verdict.dropped == "after-terminal"
            higher = event.completed is not None and (final is None or event.completed > final)
            assert verdict.check == (event.kind is EventKind.STARTED or higher)


def test_pushed_started_after_terminal_asks_for_a_check() -> None:
    store = ModelStore()
    store.record(make_event("started", "j"))
    store.record(make_event("completed", "j", completed=3))
    verdict = store.record(make_event("started", "j", source="webhook"))
    assert verdict == Verdict(event=None, check=True, dropped="after-terminal")
    assert store.states["j"].run == 1


def test_pushed_progress_beyond_the_final_count_asks_for_a_check() -> None:
    store = ModelStore()
    store.record(make_event("completed", "j", completed=3))
    assert store.record(make_event("progress", "j", completed=5)).check
    assert not store.record(make_event("progress", "j", completed=2)).check


def test_authoritative_terminal_snapshot_does_not_begin_a_run() -> None:
    store = ModelStore()
    store.record(make_event("completed", "j"))
    verdict = store.record(make_event("completed", "j", source="poll"), authoritative=True)
    assert (verdict.event, verdict.dropped) == (None, "duplicate")
    assert store.states["j"].run == 1


def test_authoritative_snapshot_begins_a_run_with_new_keys() -> None:
    store = ModelStore()
    for event in (make_event("started", "j"), make_event("progress", "j", completed=2),
                  make_event("completed", "j", completed=2)):
        assert store.record(event).event is not None
    assert [v.event.key for v in map(functools.partial(store.record, authoritative=True),
                                     snapshot("j", "processing", 0)) if v.event] == [
        "j:started#2", "j:progress:0#2"]
    assert store.record(make_event("progress", "j", completed=2)).event.key == (  # type: ignore[union-attr]
        "j:progress:2#2")
    assert store.record(make_event("completed", "j")).event.key == "j:terminal#2"  # type: ignore[union-attr]
    assert store.states["j"] == JobState(job_id="j", run=2, status=JobStatus.COMPLETED,
                                         completed=2, started=True, terminal=True)


def test_new_run_keeps_the_watched_flag() -> None:
    state = JobState(job_id="j", run=1, terminal=True, status=JobStatus.FAILED, watched=True)
    verdict = decide(state, make_event("progress", "j", status="queued", completed=0),
                     authoritative=True)
    assert verdict.state == JobState(job_id="j", run=2, status=JobStatus.QUEUED, completed=0,
                                     watched=True)


def test_workspace_events_are_not_qualified_or_guarded() -> None:
    event = make_event("credit_low", None, key="workspace:credit_low:d1")
    assert decide(None, event) == Verdict(event=event)
    assert qualify(event, 3) is event


def test_page_after_terminal_is_delivered() -> None:
    store = ModelStore()
    store.record(make_event("completed", "j"))
    verdict = store.record(make_event("page", "j", url="u"))
    assert verdict.event is not None and verdict.event.key == "j:page:u#1"
    assert not verdict.check


@pytest.mark.parametrize(("first", "second", "dropped"), [
    (make_event("progress", "j", completed=5), make_event("progress", "j", completed=3),
     "stale"),
    (make_event("progress", "j", completed=5),
     make_event("progress", "j", status="queued", completed=6), "backwards"),
    (make_event("started", "j"), make_event("started", "j", source="sse"), "duplicate"),
    (make_event("failed", "j"), make_event("progress", "j", completed=1), "after-terminal"),
    (make_event("cancelled", "j"), make_event("completed", "j"), "duplicate"),
])
def test_drop_reasons(first: JobEvent, second: JobEvent, dropped: str) -> None:
    store = ModelStore()
    store.record(first)
    assert store.record(second).dropped == dropped


# -- the same, end to end through the Watcher ------------------------------------------------

CONFIG = jobwatch.Config.from_mapping({"jobwatch": {"store": "memory", "safety_poll": 0}})
NO_HTTP = httpx.MockTransport(lambda request: httpx.Response(500))


async def through_watcher(inputs: Sequence[JobEvent]) -> list[JobEvent]:
    transports = {name: ScriptedTransport(name=name) for name in SOURCES}
    seen: list[JobEvent] = []
    # No network here: a mock HTTP transport (also spares the TLS setup) and a ready provider.
    watcher = jobwatch.Watcher(CONFIG, transports=list(transports.values()), store=MemoryStore(),
                               provider=ReaderProvider(), http_transport=NO_HTTP)
    watcher.subscribe(seen.append)
    async with watcher:
        for event in inputs:
            await transports[event.source].send(event)
        await trio.testing.wait_all_tasks_blocked()
        assert await watcher.store.pending() == []
        stats = watcher.statistics()
    assert (stats.events_in, stats.events_out) == (len(inputs), len(seen))
    assert stats.events_in - stats.events_out == sum(stats.dropped.values())
    return seen


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_any_interleaving_through_the_watcher(
    scenario: tuple[list[Lifecycle], list[JobEvent]],
) -> None:
    jobs, inputs = scenario
    seen = trio.run(through_watcher, inputs)
    assert seen == [v.event for v in run_model(inputs) if v.event is not None]
    views, arrivals = by_job(seen), by_job(inputs)
    for job in jobs:
        check_run(job, views[job.job_id], arrivals[job.job_id])


def test_a_poll_answered_before_the_end_does_not_begin_a_run() -> None:
    # The race: a poll leaves while the job is processing; before its answer is delivered, a
    # pushed terminal event arrives. The stale "processing" snapshot is authoritative, but it
    # is older than the terminal event: it is not a retry.
    answered = trio.Event()
    release = trio.Event()

    async def api(request: httpx.Request) -> httpx.Response:
        answered.set()
        await release.wait()
        data = {"id": "job_1", "status": "processing", "completed": 5, "total": 9}
        return httpx.Response(200, json={"success": True, "data": data})

    async def main() -> list[str]:
        push = ScriptedTransport(name="webhook")
        seen: list[str] = []
        watcher = jobwatch.Watcher(CONFIG, transports=[push], store=MemoryStore(),
                                   provider=ReaderProvider(),
                                   http_transport=httpx.MockTransport(api))
        watcher.subscribe(lambda event: seen.append(event.key))
        async with watcher, trio.open_nursery() as nursery:
            await push.send(make_event("started", "job_1", source="webhook"))
            nursery.start_soon(push.reconcile, "job_1")
            await answered.wait()
            await push.send(make_event("completed", "job_1", completed=9, total=9,
                                       source="webhook"))
            release.set()
            await trio.testing.wait_all_tasks_blocked()
        return seen

    assert trio.run(main) == ["job_1:started#1", "job_1:terminal#1"]
