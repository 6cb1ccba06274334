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
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

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
from jobwatch._pipeline import Pipeline
from jobwatch.abc import JobState, Store, Verdict
from jobwatch.providers.reader import ReaderProvider
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
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
            facts.append(
                make_event("progress", job, status="queued", completed=0, total=self.total)
            )
        facts.append(make_event("started", job, total=self.total))
        facts += [make_event("progress", job, completed=c, total=self.total) for c in self.counts]
        facts += [
            make_event("page_failed" if failed else "page", job, url=url)
            for url, failed in self.pages
        ]
        done = self.total if self.end is EventKind.COMPLETED else max(self.counts, default=0)
        facts.append(
            make_event(
                self.end, job, total=self.total, completed=done if self.final_count else None
            )
        )
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
        return [
            await store.record(e.job_id, functools.partial(decide, event=e), ttl=TTL)
            for e in inputs
        ]

    return trio.run(feed)


def batches(inputs: Sequence[JobEvent], seed: int) -> list[list[JobEvent]]:
    """``inputs`` cut into consecutive batches of random sizes (1 to all of them)."""
    rng, out, start = random.Random(seed), [], 0
    while start < len(inputs):
        size = rng.choice([1, 2, 3, 5, 8, len(inputs)])
        out.append(list(inputs[start : start + size]))
        start += size
    return out


def run_store_batched(store: Store, inputs: Sequence[JobEvent], seed: int) -> list[Verdict]:
    async def feed() -> list[Verdict]:
        await store.open()
        try:
            verdicts = []
            for batch in batches(inputs, seed):
                verdicts += await store.record_batch(
                    [(e.job_id, functools.partial(decide, event=e)) for e in batch], ttl=TTL
                )
            return verdicts
        finally:
            await store.aclose()

    return trio.run(feed)


# -- the properties --------------------------------------------------------------------------


def by_job(events: Sequence[JobEvent]) -> dict[str | None, list[JobEvent]]:
    out: dict[str | None, list[JobEvent]] = defaultdict(list)
    for event in events:
        out[event.job_id].append(event)
    return out


def check_run(
    job: Lifecycle,
    seen: Sequence[JobEvent],
    arrived: Sequence[JobEvent],
    run: int = 1,
    opened_by: Sequence[JobEvent] = (),
) -> None:
    """The application's view of one run of one job, given the order reports arrived in.

    ``opened_by``: the polled snapshot's events that began this run (a retry), if any.
    """
    facts = {fact.key: fact for fact in job.facts()}
    assert all(e.key.endswith(f"#{run}") and e.key.rsplit("#", 1)[0] in facts for e in seen)
    seen, arrived = [*opened_by, *seen], [*opened_by, *arrived]
    # Exactly one terminal event, of the job's end; nothing but pages after it.
    terminals = [i for i, e in enumerate(seen) if e.terminal]
    assert len(terminals) == 1 and seen[terminals[0]].kind is job.end
    assert all(e.kind in (EventKind.PAGE, EventKind.PAGE_FAILED) for e in seen[terminals[0] :][1:])
    # Status never moves backwards; progress counts only rise.
    ranks = [e.status.rank for e in seen if e.status is not None]
    assert ranks == sorted(ranks)
    counts = [e.completed for e in seen if e.kind is EventKind.PROGRESS]
    assert counts == sorted(set(counts))  # type: ignore[type-var]
    # Every page, once.
    pages = sorted(e.key for e in seen if e.kind in (EventKind.PAGE, EventKind.PAGE_FAILED))
    assert pages == sorted(
        f"{k}#{run}" for k, f in facts.items() if f.kind in (EventKind.PAGE, EventKind.PAGE_FAILED)
    )
    # Liveness: started and the freshest progress that arrived before the end get through.
    first_end = next(i for i, e in enumerate(arrived) if e.terminal)
    before = arrived[:first_end]
    started = [e for e in seen if e.kind is EventKind.STARTED]
    assert len(started) == int(any(e.kind is EventKind.STARTED for e in before))
    running = [
        e.completed
        for e in before
        if e.kind is EventKind.PROGRESS and e.status is JobStatus.PROCESSING
    ]
    if running:
        assert max(running) in counts  # type: ignore[type-var]


def check_view(
    jobs: Sequence[Lifecycle], inputs: Sequence[JobEvent], verdicts: Sequence[Verdict]
) -> None:
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


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.integers(0, 2**32 - 1))
def test_batches_of_any_size_through_the_stores(
    scenario: tuple[list[Lifecycle], list[JobEvent]],
    seed: int,
) -> None:
    # A store's record_batch answers what recording each event in turn would.
    _, inputs = scenario
    verdicts = run_model(inputs)
    assert run_store_batched(MemoryStore(clock=lambda: 0.0), inputs, seed) == verdicts
    assert run_store_batched(SQLiteStore(":memory:", clock=lambda: 0.0), inputs, seed) == verdicts


# -- runs: a retried job ---------------------------------------------------------------------


def snapshot(job_id: str, status: str, completed: int = 0) -> list[JobEvent]:
    """What a poll of a job in ``status`` reports (as the Reader provider decodes it)."""
    events = []
    if status == "processing":
        events.append(make_event("started", job_id, source="poll", completed=completed))
    events.append(make_event("progress", job_id, status=status, completed=completed, source="poll"))
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
    for event in (
        make_event("started", "j"),
        make_event("progress", "j", completed=2),
        make_event("completed", "j", completed=2),
    ):
        assert store.record(event).event is not None
    assert [
        v.event.key
        for v in map(
            functools.partial(store.record, authoritative=True), snapshot("j", "processing", 0)
        )
        if v.event
    ] == ["j:started#2", "j:progress:0#2"]
    assert store.record(make_event("progress", "j", completed=2)).event.key == (  # type: ignore[union-attr]
        "j:progress:2#2"
    )
    assert store.record(make_event("completed", "j")).event.key == "j:terminal#2"  # type: ignore[union-attr]
    assert store.states["j"] == JobState(
        job_id="j", run=2, status=JobStatus.COMPLETED, completed=2, started=True, terminal=True
    )


def test_new_run_keeps_the_watched_flag() -> None:
    state = JobState(job_id="j", run=1, terminal=True, status=JobStatus.FAILED, watched=True)
    verdict = decide(
        state, make_event("progress", "j", status="queued", completed=0), authoritative=True
    )
    assert verdict.state == JobState(
        job_id="j", run=2, status=JobStatus.QUEUED, completed=0, watched=True
    )


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


@pytest.mark.parametrize(
    ("first", "second", "dropped"),
    [
        (
            make_event("progress", "j", completed=5),
            make_event("progress", "j", completed=3),
            "stale",
        ),
        (
            make_event("progress", "j", completed=5),
            make_event("progress", "j", status="queued", completed=6),
            "backwards",
        ),
        (make_event("started", "j"), make_event("started", "j", source="sse"), "duplicate"),
        (make_event("failed", "j"), make_event("progress", "j", completed=1), "after-terminal"),
        (make_event("cancelled", "j"), make_event("completed", "j"), "duplicate"),
    ],
)
def test_drop_reasons(first: JobEvent, second: JobEvent, dropped: str) -> None:
    store = ModelStore()
    store.record(first)
    assert store.record(second).dropped == dropped


# -- attempts: re-runs that the API numbers ------------------------------------------------


def numbered(life: Lifecycle, attempt: int) -> list[JobEvent]:
    """The facts of one attempt of a job, as an API that numbers attempts reports them."""
    return [attrs.evolve(fact, attempt=attempt) for fact in life.facts()]


@st.composite
def reruns(draw: st.DrawFn) -> tuple[list[Lifecycle], list[JobEvent]]:
    """One job re-run up to twice (attempts 1..3), every report in any order.

    Reports of an older attempt may come after those of a newer one: a late webhook, a stream
    that lagged, a poll answered late.
    """
    lives = [draw(lifecycles("job_a")) for _ in range(draw(st.integers(1, 3)))]
    facts = [fact for n, life in enumerate(lives, 1) for fact in numbered(life, n)]
    return lives, draw(deliveries(facts))


def record_all(store: ModelStore, inputs: Sequence[JobEvent]) -> list[Verdict]:
    # Polls are authoritative; where attempts are numbered that changes nothing.
    return [store.record(event, authoritative=event.source == "poll") for event in inputs]


def run_number(event: JobEvent) -> int:
    return int(event.key.rsplit("#", 1)[1])


def check_attempts(
    lives: Sequence[Lifecycle], inputs: Sequence[JobEvent], verdicts: Sequence[Verdict]
) -> None:
    seen = [v.event for v in verdicts if v.event is not None]
    assert len({e.key for e in seen}) == len(seen), "a key reached the application twice"
    # The application sees attempts in order, each in a run of its own, and never needs a
    # poll to tell them apart.
    attempts = [e.attempt for e in seen if e.attempt is not None]
    assert len(attempts) == len(seen) and attempts == sorted(attempts)
    runs = {e.attempt: run_number(e) for e in seen}
    assert [run_number(e) for e in seen] == [runs[e.attempt] for e in seen]
    assert sorted(runs.values()) == list(range(1, len(runs) + 1))
    assert not any(v.check for v in verdicts)
    # An event is dropped as old exactly when a newer attempt was reported before it.
    newest = 0
    for event, verdict in zip(inputs, verdicts, strict=True):
        assert event.attempt is not None
        assert (verdict.dropped == "old-attempt") is (event.attempt < newest)
        newest = max(newest, event.attempt)
    # Each attempt's run: at most one terminal event — its own, never an older attempt's —
    # then only data; status and counts only move forward.
    for attempt, life in enumerate(lives, 1):
        view = [e for e in seen if e.attempt == attempt]
        ends = [i for i, e in enumerate(view) if e.terminal]
        assert len(ends) <= 1
        if ends:
            assert view[ends[0]].kind is life.end
            assert all(e.kind.carries_data for e in view[ends[0] + 1 :])
        ranks = [e.status.rank for e in view if e.status is not None]
        assert ranks == sorted(ranks)
        counts = [e.completed for e in view if e.kind is EventKind.PROGRESS]
        assert counts == sorted(set(counts))  # type: ignore[type-var]
    # The last attempt is whole: one terminal event, of its end, every page, its started.
    last = len(lives)
    check_run(
        lives[-1],
        [e for e in seen if e.attempt == last],
        [e for e in inputs if e.attempt == last],
        run=runs[last],
    )


@PROPERTY
@given(reruns())
def test_attempts_under_any_interleaving(
    scenario: tuple[list[Lifecycle], list[JobEvent]],
) -> None:
    lives, inputs = scenario
    verdicts = record_all(ModelStore(), inputs)
    check_attempts(lives, inputs, verdicts)


@settings(max_examples=200, deadline=None)
@given(reruns())
def test_attempts_through_the_memory_store(
    scenario: tuple[list[Lifecycle], list[JobEvent]],
) -> None:
    _, inputs = scenario
    assert run_memory_store(inputs) == run_model(inputs)


def github_rerun() -> list[tuple[JobEvent, bool]]:
    """A GitHub-style re-run: attempt 1 finished, but its `completed` webhook comes late.

    Meanwhile the run was re-run: polls show attempt 2 queued, then in progress; attempt 2
    then completes. Each report with whether it is a polled snapshot.
    """
    run = "run_42"

    def report(kind: str, attempt: int, source: str, **fields: object) -> JobEvent:
        return attrs.evolve(
            make_event(kind, run, source=source, **fields),  # type: ignore[arg-type]
            attempt=attempt,
        )

    return [
        (report("started", 1, "webhook"), False),
        (report("progress", 2, "poll", status="queued", completed=0), True),
        (report("started", 2, "poll"), True),
        (report("completed", 1, "webhook"), False),  # late: attempt 1 ended long ago
        (report("started", 1, "webhook"), False),  # a retried delivery, later still
        (report("failed", 2, "poll", completed=0), True),
        (report("failed", 2, "webhook", completed=0), False),
    ]


def test_a_late_terminal_event_of_an_older_attempt_is_dropped() -> None:
    store = ModelStore()
    verdicts = [store.record(event, authoritative=polled) for event, polled in github_rerun()]
    assert [(v.event.key if v.event else None, v.dropped, v.check) for v in verdicts] == [
        ("run_42:started#1", None, False),
        ("run_42:progress:0#2", None, False),
        ("run_42:started#2", None, False),
        (None, "old-attempt", False),
        (None, "old-attempt", False),
        ("run_42:terminal#2", None, False),
        (None, "duplicate", False),
    ]
    delivered = [v.event for v in verdicts if v.event is not None]
    assert [(e.kind, e.attempt) for e in delivered if e.terminal] == [(EventKind.FAILED, 2)]
    assert store.states["run_42"] == JobState(
        job_id="run_42",
        run=2,
        attempt=2,
        status=JobStatus.FAILED,
        completed=0,
        started=True,
        terminal=True,
    )


def test_a_pushed_higher_attempt_begins_a_run_without_a_poll() -> None:
    store = ModelStore()
    for event in (make_event("started", "j"), make_event("completed", "j", completed=4)):
        assert store.record(attrs.evolve(event, attempt=1)).event is not None
    # A pushed `started` after the end would only ask for a poll; with a higher attempt it
    # is a new run, delivered as it comes.
    verdict = store.record(attrs.evolve(make_event("started", "j", source="webhook"), attempt=2))
    assert verdict.event is not None and verdict.event.key == "j:started#2"
    assert not verdict.check
    assert (store.states["j"].run, store.states["j"].attempt) == (2, 2)
    # The same attempt after its end is no new run, and needs no poll to say so.
    late = store.record(attrs.evolve(make_event("completed", "j"), attempt=2))
    assert late.event is not None and late.event.key == "j:terminal#2"
    again = store.record(
        attrs.evolve(make_event("started", "j", source="poll"), attempt=2), authoritative=True
    )
    assert (again.event, again.check, again.dropped) == (None, False, "after-terminal")


def test_an_authoritative_snapshot_of_the_same_attempt_is_no_new_run() -> None:
    # A poll that reads a lagging replica shows attempt 1 still running after its end.
    store = ModelStore()
    store.record(attrs.evolve(make_event("completed", "j", completed=3), attempt=1))
    verdict = store.record(
        attrs.evolve(make_event("progress", "j", completed=2), attempt=1), authoritative=True
    )
    assert (verdict.event, verdict.dropped) == (None, "after-terminal")
    assert store.states["j"].run == 1


def test_pages_carry_attempts_too() -> None:
    store = ModelStore()
    first = store.record(attrs.evolve(make_event("page", "j", url="u1"), attempt=1))
    assert first.event is not None and first.state == JobState(job_id="j", attempt=1)
    # A page of a newer attempt begins its run; a late page of the older one is dropped.
    newer = store.record(attrs.evolve(make_event("page", "j", url="u1"), attempt=2))
    assert newer.event is not None and newer.event.key == "j:page:u1#2"
    assert newer.state == JobState(job_id="j", run=2, attempt=2)
    old = store.record(attrs.evolve(make_event("page_failed", "j", url="u2"), attempt=1))
    assert (old.event, old.dropped) == (None, "old-attempt")
    # A page of the current attempt leaves the state as it is.
    assert store.record(attrs.evolve(make_event("page", "j", url="u3"), attempt=2)).state is None


def test_events_without_an_attempt_keep_the_rules_of_runs() -> None:
    # Once a run's attempt is known, a report without one is taken as of the current run.
    store = ModelStore()
    store.record(attrs.evolve(make_event("started", "j"), attempt=3))
    verdict = store.record(make_event("progress", "j", completed=2))
    assert verdict.event is not None and verdict.event.key == "j:progress:2#1"
    assert store.states["j"].attempt == 3
    # A terminal state reached without attempts: only a poll begins a new run, and the run
    # learns its attempt from it.
    store = ModelStore()
    store.record(make_event("completed", "j"))
    pushed = store.record(attrs.evolve(make_event("started", "j"), attempt=2))
    assert (pushed.event, pushed.check) == (None, True)
    polled = store.record(
        attrs.evolve(make_event("started", "j", source="poll"), attempt=2), authoritative=True
    )
    assert polled.event is not None and polled.event.key == "j:started#2"
    assert (store.states["j"].run, store.states["j"].attempt) == (2, 2)


# -- status changes without counts -------------------------------------------------------------


def status_change(status: str, source: str = "poll") -> JobEvent:
    """queued -> processing on an API without counts: a progress event keyed by status."""
    return make_event("progress", "j", status=status, source=source, key=f"j:status:{status}")


def test_a_status_change_without_counts_is_delivered_once_and_never_backwards() -> None:
    store = ModelStore()
    assert [
        store.record(e).dropped
        for e in (
            status_change("queued"),
            status_change("processing"),
            status_change("processing", "webhook"),
            status_change("queued", "webhook"),
        )
    ] == [None, None, "duplicate", "backwards"]
    # Under another key (a provider that keys by time, a dedup window that expired) the
    # guard still delivers a status once.
    again = attrs.evolve(status_change("processing"), key="j:status:processing:later")
    assert store.record(again).dropped == "duplicate"
    assert store.states["j"].status is JobStatus.PROCESSING
    # A count still moves it on, and the terminal event ends it.
    assert store.record(make_event("progress", "j", completed=1)).event is not None
    assert store.record(make_event("completed", "j")).event is not None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_status_changes_without_counts_under_any_interleaving(data: st.DataObject) -> None:
    statuses = ["queued", "processing"][data.draw(st.integers(0, 1)) :]
    end = data.draw(st.sampled_from(["completed", "failed", "cancelled"]))
    facts = [status_change(s) for s in statuses] + [make_event(end, "j")]
    inputs = data.draw(deliveries(facts))
    seen = [v.event for v in run_model(inputs) if v.event is not None]
    ranks = [e.status.rank for e in seen if e.status is not None]
    assert ranks == sorted(ranks) and len(ranks) == len(set(ranks))
    assert [e.kind for e in seen if e.terminal] == [EventKind(end)]
    first_end = next(i for i, e in enumerate(inputs) if e.terminal)
    # The furthest status reported before the end reaches the application.
    before = [e.status.rank for e in inputs[:first_end] if e.status is not None]
    if before:
        assert max(before) in ranks


# -- the same, end to end through the Watcher ------------------------------------------------

CONFIG = jobwatch.Config.from_mapping({"jobwatch": {"store": "memory", "safety_poll": 0}})
NO_HTTP = httpx.MockTransport(lambda request: httpx.Response(500))


async def through_watcher(
    inputs: Sequence[JobEvent], seed: int | None = None, *, prune_from: int | None = None
) -> list[JobEvent]:
    """The events the Watcher dispatches for ``inputs``: one delivery each, or (with a seed)
    in batches of random sizes, as one network read hands them over. With ``prune_from``,
    the pipeline lets go of quiet jobs' records from that many on (as it does past
    thousands)."""
    transports = {name: ScriptedTransport(name=name) for name in SOURCES}
    seen: list[JobEvent] = []
    # No network here: a mock HTTP transport (also spares the TLS setup) and a ready provider.
    watcher = jobwatch.Watcher(
        CONFIG,
        transports=list(transports.values()),
        store=MemoryStore(),
        provider=ReaderProvider(),
        http_transport=NO_HTTP,
    )
    watcher.subscribe(seen.append)
    if prune_from is not None:
        watcher._pipeline.prune_from = prune_from
    async with watcher:
        for batch in [[e] for e in inputs] if seed is None else batches(inputs, seed):
            await transports[batch[0].source].send(*batch)
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


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.integers(0, 2**32 - 1))
def test_any_interleaving_in_batches_through_the_watcher(
    scenario: tuple[list[Lifecycle], list[JobEvent]],
    seed: int,
) -> None:
    # A batch is grouped by job: each job's events keep their order, and what the
    # application sees of each job is what one delivery per event would show.
    jobs, inputs = scenario
    seen = trio.run(through_watcher, inputs, seed)
    expected = [v.event for v in run_model(inputs) if v.event is not None]
    assert by_job(seen) == by_job(expected)
    views, arrivals = by_job(seen), by_job(inputs)
    for job in jobs:
        check_run(job, views[job.job_id], arrivals[job.job_id])


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_records_let_go_change_nothing(
    scenario: tuple[list[Lifecycle], list[JobEvent]], seed: int, prune_from: int
) -> None:
    # The pipeline's records of quiet jobs are a shortcut: letting them go at every chance
    # leaves what the application sees as it was.
    jobs, inputs = scenario
    seen = trio.run(functools.partial(through_watcher, inputs, seed, prune_from=prune_from))
    expected = [v.event for v in run_model(inputs) if v.event is not None]
    assert by_job(seen) == by_job(expected)
    views, arrivals = by_job(seen), by_job(inputs)
    for job in jobs:
        check_run(job, views[job.job_id], arrivals[job.job_id])


@settings(max_examples=100, deadline=None)
@given(reruns(), st.integers(0, 2**32 - 1))
def test_attempts_in_batches_through_the_watcher(
    scenario: tuple[list[Lifecycle], list[JobEvent]],
    seed: int,
) -> None:
    _, inputs = scenario
    seen = trio.run(through_watcher, inputs, seed)
    assert seen == [v.event for v in run_model(inputs) if v.event is not None]


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
        watcher = jobwatch.Watcher(
            CONFIG,
            transports=[push],
            store=MemoryStore(),
            provider=ReaderProvider(),
            http_transport=httpx.MockTransport(api),
        )
        watcher.subscribe(lambda event: seen.append(event.key))
        async with watcher, trio.open_nursery() as nursery:
            await push.send(make_event("started", "job_1", source="webhook"))
            nursery.start_soon(push.reconcile, "job_1")
            await answered.wait()
            await push.send(
                make_event("completed", "job_1", completed=9, total=9, source="webhook")
            )
            release.set()
            await trio.testing.wait_all_tasks_blocked()
        return seen

    assert trio.run(main) == ["job_1:started#1", "job_1:terminal#1"]


@settings(max_examples=100, deadline=None)
@given(reruns())
def test_attempts_through_the_watcher(scenario: tuple[list[Lifecycle], list[JobEvent]]) -> None:
    lives, inputs = scenario
    seen = trio.run(through_watcher, inputs)
    assert seen == [v.event for v in run_model(inputs) if v.event is not None]


def test_a_late_terminal_event_of_an_older_attempt_never_ends_the_watch() -> None:
    async def main() -> tuple[list[str], JobEvent]:
        poll = ScriptedTransport(name="poll", authoritative=True)
        webhook = ScriptedTransport(name="webhook")
        seen: list[str] = []
        watcher = jobwatch.Watcher(
            CONFIG,
            transports=[poll, webhook],
            store=MemoryStore(),
            provider=ReaderProvider(),
            http_transport=NO_HTTP,
        )
        watcher.subscribe(lambda event: seen.append(event.key))
        async with watcher:
            for event, polled in github_rerun():
                await (poll if polled else webhook).send(event)
                await trio.testing.wait_all_tasks_blocked()
            final = await watcher.wait("run_42", timeout=1)
            assert watcher.statistics().dropped["old-attempt"] == 2
        return seen, final

    seen, final = trio.run(main)
    assert seen == [
        "run_42:started#1",
        "run_42:progress:0#2",
        "run_42:started#2",
        "run_42:terminal#2",
    ]
    assert (final.kind, final.attempt) == (EventKind.FAILED, 2)


def test_a_snapshot_older_than_the_end_it_reports_begins_no_run_within_one_batch() -> None:
    # A poll requested before a job's end shows it ending and, in the same batch, still
    # running (a provider that reports both). The end is recorded first: what follows in
    # the batch is no longer evidence of a new run.
    async def main() -> tuple[list[str], dict[str, int]]:
        seen: list[JobEvent] = []

        async def dispatch(event: JobEvent) -> None:
            seen.append(event)

        pipeline = Pipeline(MemoryStore(), dedup_ttl=TTL, dispatch=dispatch)
        pipeline.ready.set()
        asked = time.time() - 1.0  # wall clock, as Response.sent_at
        await pipeline.deliver(
            [
                make_event("completed", "j", completed=2, source="poll"),
                make_event("progress", "j", completed=1, source="poll"),
            ],
            authoritative=True,
            as_of=asked,
        )
        return [e.key for e in seen], dict(pipeline.dropped)

    assert trio.run(main) == (["j:terminal#1"], {"after-terminal": 1})


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_poll_asked_before_another_process_recorded_the_end_begins_no_run(
    store: str, tmp_path: Path
) -> None:
    # Two processes share a store: one asks for a job's status while it is processing; the
    # other records the job's end (a webhook, say); then the first one's answer arrives. It
    # shows the run that ended, not a new one.
    async def main() -> tuple[list[str], list[str], JobState | None]:
        shared = MemoryStore() if store == "memory" else SQLiteStore(tmp_path / "state.db")
        await shared.open()
        seen: dict[str, list[str]] = {"poller": [], "receiver": []}

        def pipeline(name: str) -> Pipeline:
            async def dispatch(event: JobEvent) -> None:
                seen[name].append(event.key)

            made = Pipeline(shared, dedup_ttl=TTL, dispatch=dispatch)
            made.ready.set()
            return made

        poller, receiver = pipeline("poller"), pipeline("receiver")
        await poller.deliver([make_event("started", "j", source="poll")], authoritative=True)
        asked = time.time()
        await receiver.deliver([make_event("completed", "j", completed=2, source="webhook")])
        await poller.deliver(
            [
                make_event("started", "j", source="poll"),
                make_event("progress", "j", completed=1, source="poll"),
            ],
            authoritative=True,
            as_of=asked,
        )
        # Asked after the end, such an answer is a new run.
        await poller.deliver(
            [make_event("progress", "j", completed=2, source="poll")],
            authoritative=True,
            as_of=time.time(),
        )
        state = await shared.get_job("j")
        await shared.aclose()
        return seen["poller"], seen["receiver"], state

    poller, receiver, state = trio.run(main)
    assert receiver == ["j:terminal#1"]
    assert poller == ["j:started#1", "j:progress:2#2"]
    assert state is not None and (state.run, state.terminal) == (2, False)


def test_a_poll_asked_while_the_end_waited_for_the_store_begins_no_run() -> None:
    # The end's batch waits for the store (another process holds its lock) while a poll is
    # asked; the poll's answer, still showing the job running, comes after the end is
    # recorded: it was asked before that, so it is no new run.
    class Locked(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.held = trio.Event()
            self.waiting = trio.Event()

        async def record_batch(self, records, *, ttl, claim=None):  # type: ignore[no-untyped-def]
            if not self.held.is_set():
                self.waiting.set()
                await self.held.wait()
            return await super().record_batch(records, ttl=ttl, claim=claim)

    async def main() -> list[str]:
        seen: list[str] = []

        async def dispatch(event: JobEvent) -> None:
            seen.append(event.key)

        store = Locked()
        pipeline = Pipeline(store, dedup_ttl=TTL, dispatch=dispatch)
        pipeline.ready.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                pipeline.deliver,
                [make_event("started", "j"), make_event("completed", "j", completed=2)],
            )
            await store.waiting.wait()
            asked = time.time()
            while time.time() <= asked:  # the clock moves on before the lock is let go
                pass
            store.held.set()
        await pipeline.deliver(
            [make_event("progress", "j", completed=1, source="poll")],
            authoritative=True,
            as_of=asked,
        )
        return seen

    assert trio.run(main) == ["j:started#1", "j:terminal#1"]
