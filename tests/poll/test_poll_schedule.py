"""The sans-I/O poll scheduler, with explicit ``now`` values, alone and with the budget."""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwatch import JobStatus
from jobwatch._budget import RequestBudget
from jobwatch.abc import Snapshot
from jobwatch.transports._schedule import Estimate, PollSchedule


def snap(status: str, completed: int | None = None, total: int | None = None) -> Snapshot:
    return Snapshot(
        job_id="j", status=JobStatus(status), raw_status=status, completed=completed, total=total
    )


def schedule(**kw: float) -> PollSchedule:
    return PollSchedule(rng=random.Random(7), jitter=0.0, **kw)  # type: ignore[arg-type]


def test_first_poll_is_due_at_once() -> None:
    s = schedule()
    s.add("j", 5.0)
    assert s.next_due() == 5.0
    assert s.pick(4.9) is None
    assert s.pick(5.0) == "j"
    assert s.next_due() is None  # being polled


def test_gap_grows_to_max_interval_without_progress() -> None:
    s = schedule(interval=2.0, max_interval=10.0)
    s.add("j", 0.0)
    now, gaps = 0.0, []
    for _ in range(7):
        assert s.pick(now) == "j"
        due = s.observe("j", now, snap("queued", 0, 10))
        assert due is not None
        gaps.append(round(due - now, 3))
        now = due
    assert gaps == [2.0, 3.0, 4.5, 6.75, 10.0, 10.0, 10.0]


def test_prediction_places_polls_near_the_end() -> None:
    """A steady job of 200 units at 0.5 s each ends at 100 s: a handful of polls, the
    last one shortly after the end."""
    s = schedule(interval=2.0, max_interval=30.0)
    s.add("j", 0.0)
    end, now, polls = 100.0, 0.0, 0
    while True:
        assert s.pick(now) == "j"
        polls += 1
        done = min(200, int(now / 0.5))
        status = "completed" if now >= end else "processing"
        due = s.observe("j", now, snap(status, done, 200))
        if due is None:
            break
        now = due
    assert now - end <= 2.0
    assert polls <= 14  # fixed 2 s polling: 51


def test_tail_gap_never_exceeds_interval_and_backs_off_when_overrun() -> None:
    s = schedule(interval=2.0, max_interval=30.0)
    s.add("j", 0.0)
    s.pick(0.0)
    s.observe("j", 0.0, snap("processing", 0, 10))
    s.pick(5.0)
    due = s.observe("j", 5.0, snap("processing", 9, 10))  # the end is about 5.3 s
    assert due is not None and due - 5.0 <= 2.0
    gaps = []
    now = due
    for _ in range(8):  # the job stalls on its last unit
        s.pick(now)
        nxt = s.observe("j", now, snap("processing", 9, 10))
        assert nxt is not None
        gaps.append(nxt - now)
        now = nxt
    assert gaps[0] <= 2.0
    assert gaps[-1] > gaps[0]  # a stalled job stops costing a fast poll
    assert max(gaps) <= 30.0


def test_jitter_only_shortens_and_is_reproducible() -> None:
    def gaps(seed: int) -> list[float]:
        s = PollSchedule(interval=2.0, jitter=0.2, rpm=1000, rng=random.Random(seed))
        out = []
        for n in range(20):
            s.add(f"j{n}", 0.0)
            s.pick(0.0)
            due = s.observe(f"j{n}", 0.0, snap("queued", 0, 1))
            assert due is not None
            out.append(due)
        return out

    first = gaps(1)
    assert first == gaps(1)
    assert all(1.6 <= g <= 2.0 for g in first)
    assert len(set(first)) == 20  # no lockstep


def test_failures_back_off_exponentially_with_jitter_up_to_max() -> None:
    s = PollSchedule(interval=2.0, max_interval=30.0, rng=random.Random(3))
    s.add("j", 0.0)
    now, steps = 0.0, []
    for _ in range(7):
        s.pick(now)
        due = s.failed("j", now)
        assert due is not None
        steps.append(due - now)
        now = due
    bounds = [2, 4, 8, 16, 30, 30, 30]
    assert all(b / 2 <= step <= b for step, b in zip(steps, bounds, strict=True))
    s.pick(now)
    assert s.observe("j", now, snap("queued", 0, 1)) == pytest.approx(now + 2.0, abs=0.2)


def test_defer_moves_the_poll_without_counting_an_error() -> None:
    s = schedule()
    s.add("j", 0.0)
    s.pick(0.0)
    s.defer("j", 12.0)
    assert s.next_due() == 12.0
    s.pick(12.0)
    assert s.failed("j", 12.0) == pytest.approx(12.0 + 2.0 * 0.5, abs=1.0)


def test_terminal_snapshot_and_remove_forget_the_job() -> None:
    s = schedule()
    s.add("a", 0.0)
    s.add("b", 0.0)
    s.pick(0.0)
    assert s.observe("a", 0.0, snap("completed", 3, 3)) is None
    assert "a" not in s
    s.remove("b")
    assert len(s) == 0 and s.next_due() is None
    assert s.observe("b", 1.0, snap("processing", 1, 3)) is None
    assert s.failed("b", 1.0) is None


def test_pick_prefers_jobs_near_their_predicted_end() -> None:
    s = schedule(interval=2.0, max_interval=30.0)
    for job in ("far", "near"):
        s.add(job, 0.0)
        s.pick(0.0)
        s.observe(job, 0.0, snap("processing", 0, 100))
    s.pick(10.0)
    s.observe("far", 10.0, snap("processing", 10, 100))  # ~90 s to go
    s.pick(10.0)
    s.observe("near", 10.0, snap("processing", 98, 100))  # ~0.2 s to go
    assert [s.pick(200.0), s.pick(200.0), s.pick(200.0)] == ["near", "far", None]


def test_many_jobs_stretch_to_their_fair_share_of_the_budget() -> None:
    s = schedule(interval=2.0, max_interval=30.0, rpm=10)
    for n in range(20):
        s.add(f"j{n}", 0.0)
    s.pick(0.0)
    due = s.observe("j0", 0.0, snap("queued", 0, 5))
    # 20 jobs in 10 requests a minute (90 % planned): one poll each per 133 s.
    assert due == pytest.approx(20 * 60 / 9)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        PollSchedule(interval=5.0, max_interval=1.0)
    with pytest.raises(ValueError, match="growth"):
        PollSchedule(jitter=1.0)


# -- the budget and the scheduler together --------------------------------------------------


def _job_model(rng: random.Random, duration: float, unit: float) -> list[float]:
    times, t = [], rng.uniform(0, 3)
    for _ in range(max(1, round(duration / unit))):
        t += unit * rng.uniform(0.5, 1.5)
        times.append(t)
    return times


def _snapshot(times: list[float], now: float, start: float) -> Snapshot:
    if now < start:
        return snap("queued", 0, len(times))
    done = sum(1 for t in times if t <= now)
    return snap("completed" if done == len(times) else "processing", done, len(times))


def drive(
    rpm: int,
    jobs: list[tuple[float, float, float]],
    seed: int,
    *,
    skews: Sequence[float | None] | None = None,
    observed: Callable[[PollSchedule, str, float, float | None], None] | None = None,
) -> tuple[list[float], dict[str, float]]:
    """Run many jobs (added at, duration, unit) through one schedule and one budget in
    virtual time, as the poll transport does; return the request times and detections.
    ``skews``: each job's API states its start this far off (None: states none);
    ``observed(schedule, job, now, due)`` is called after each poll."""
    rng = random.Random(seed)
    budget = RequestBudget(rpm)
    s = PollSchedule(rpm=rpm, rng=random.Random(seed))
    skews = skews or [None] * len(jobs)
    models = {
        f"j{n}": (added, added + 0.1, [added + t for t in _job_model(rng, d, u)], skews[n])
        for n, (added, d, u) in enumerate(jobs)
    }
    pending = sorted((model[0], job) for job, model in models.items())
    sent: list[float] = []
    detected: dict[str, float] = {}
    now = 0.0
    while len(detected) < len(models):
        while pending and pending[0][0] <= now:
            s.add(pending.pop(0)[1], now)
        job = s.pick(now) if budget.delay(now) == 0 else None
        if job is not None:
            budget.take(now)
            sent.append(now)
            _, start, times, skew = models[job]
            started = None if skew is None else start + skew
            due = s.observe(job, now, _snapshot(times, now, start), started=started)
            if observed is not None:
                observed(s, job, now, due)
            if due is None:
                detected[job] = now - times[-1]
            continue
        due = s.next_due()
        candidates = [t for t in (due, pending[0][0] if pending else None) if t is not None]
        now = max(now + budget.delay(now), min(candidates, default=now))
    return sent, detected


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.sampled_from([10, 60, 200]),
    jobs=st.lists(
        st.tuples(st.floats(0, 300), st.floats(1, 900), st.floats(0.05, 20)),
        min_size=1,
        max_size=40,
    ),
    seed=st.integers(0, 2**16),
)
def test_budget_is_never_exceeded_for_any_mix_of_jobs(
    rpm: int, jobs: list[tuple[float, float, float]], seed: int
) -> None:
    sent, detected = drive(rpm, jobs, seed)
    assert len(detected) == len(jobs)  # every completion is reported
    for i, t in enumerate(sent):
        in_window = sum(1 for u in sent[i:] if u < t + 60.0)
        assert in_window <= rpm


def test_a_light_load_detects_completions_quickly() -> None:
    rng = random.Random(5)
    jobs = [(0.0, rng.uniform(10, 120), 0.5) for _ in range(10)]
    sent, detected = drive(1000, jobs, 5)
    fixed = sum(int((d + 3) / 2) + 1 for _, d, _ in jobs)  # polling every 2 s
    assert len(sent) <= fixed / 4
    assert sum(detected.values()) / len(detected) <= 1.0


# -- short jobs, and how irregular units are ------------------------------------------------


def _short_jobs(
    seed: int, watched: tuple[float, float] = (0.0, 0.0), phase: bool = False
) -> tuple[int, int, float, float]:
    """Six jobs of 4-16 s (units of 0.5 s +/- 50 %, started after one unit in the queue),
    watched from ``watched`` seconds after their creation on by the schedule and, for
    comparison, polled every second plus one results request (what an SDK's
    ``wait_for_job(poll_interval=1)`` costs), from their creation or, with ``phase``, from a
    random moment in the first second. Returns both request counts and both mean detection
    delays."""
    rng = random.Random(seed)
    s = PollSchedule(interval=2.0, max_interval=30.0, rpm=1000, rng=random.Random(seed))
    jobs = {}
    arrivals = []
    began = rng.uniform(*watched)
    for n in range(6):
        start = 0.5 * rng.uniform(0.5, 1.5)
        times = [start]
        for _ in range(round((4 + 12 * n / 5) / 0.5)):
            times.append(times[-1] + 0.5 * rng.uniform(0.5, 1.5))
        jobs[f"j{n}"] = (start, times[1:])
        arrivals.append((began + rng.uniform(0.0, 0.1) if watched[1] else 0.0, f"j{n}"))
    arrivals.sort()
    polls, delays, now = 0, [], 0.0
    while arrivals or len(s):
        due = s.next_due()
        now = max(now, min(t for t in (due, arrivals[0][0] if arrivals else None) if t is not None))
        while arrivals and arrivals[0][0] <= now:
            s.add(arrivals.pop(0)[1], now)
        job = s.pick(now)
        if job is None:
            continue
        polls += 1
        start, times = jobs[job]
        if s.observe(job, now, _snapshot(times, now, start)) is None:
            delays.append(now - times[-1])
    fixed, fixed_delays = 0, []
    for _, times in jobs.values():
        first = rng.uniform(0.0, 1.0) if phase else 0.0
        seen = first + max(0, math.ceil(times[-1] - first))
        fixed += round(seen - first) + 2
        fixed_delays.append(seen - times[-1])
    return polls, fixed, sum(delays) / 6, sum(fixed_delays) / 6


def test_short_jobs_cost_a_third_of_a_one_second_poll_and_are_seen_as_soon() -> None:
    runs = [_short_jobs(seed) for seed in range(40)]
    polls, fixed = sum(r[0] for r in runs), sum(r[1] for r in runs)
    assert polls <= 0.35 * fixed
    delay, fixed_delay = (sum(r[i] for r in runs) / len(runs) for i in (2, 3))
    assert delay <= fixed_delay + 0.1


def test_most_runs_of_short_jobs_meet_both_bounds() -> None:
    """Run by run, not only on average: six short jobs watched a moment after their creation
    (as a script does), against a one-second poll at a random phase, cost at most 0.35 of its
    requests and see completions at most 0.1 s later than it in most runs."""
    runs = [_short_jobs(seed, watched=(0.15, 0.45), phase=True) for seed in range(200)]
    met = sum(p <= 0.35 * f and d <= fd + 0.1 for p, f, d, fd in runs)
    assert met >= 0.75 * len(runs)


def _estimate_after(steps: list[float]) -> float:
    """The prediction's standard deviation for a job of 40 units seen at 0 s, then after
    each of ``steps`` (seconds) two more units."""
    s = schedule(interval=2.0, max_interval=30.0)
    s.add("j", 0.0)
    now, done = 0.0, 0
    s.pick(now)
    s.observe("j", now, snap("processing", done, 40))
    for step in steps:
        now, done = now + step, done + 2
        s.pick(now)
        s.observe("j", now, snap("processing", done, 40))
    estimate = s.estimate("j")
    assert estimate is not None
    return estimate.sigma


def test_the_prediction_narrows_as_units_prove_regular() -> None:
    # The same pace on average (1 s for two units), steady or erratic: the schedule measures
    # how irregular the steps are and is surer of the steady job's end.
    steady = _estimate_after([1.0] * 8)
    erratic = _estimate_after([0.4, 1.6] * 4)
    assert steady < 0.6 * erratic


def test_a_job_stalled_for_days_keeps_a_bounded_gap() -> None:
    # Thousands of polls past its predicted end: the back-off stays at max_interval (its
    # growth must not overflow).
    s = schedule(interval=2.0, max_interval=30.0)
    s.add("j", 0.0)
    s.pick(0.0)
    s.observe("j", 0.0, snap("processing", 0, 10))
    s.pick(5.0)
    now = s.observe("j", 5.0, snap("processing", 9, 10))
    for _ in range(3000):
        assert now is not None
        s.pick(now)
        due = s.observe("j", now, snap("processing", 9, 10))
        assert due is not None and 0 < due - now <= 30.0 + 1e-9
        now = due


# -- what jobs show of each other ------------------------------------------------------------


def _steady(s: PollSchedule, job: str, unit: float, polls: int = 4, every: float = 2.5) -> float:
    """Show ``job`` from its start at 0 s: polls every ``every`` seconds of a job whose units
    take ``unit`` seconds each. Returns the time of the last poll."""
    s.add(job, 0.0)
    now = 0.0
    s.observe(job, now, snap("processing", 0, 1000))
    for _ in range(polls):
        now += every
        s.observe(job, now, snap("processing", int(now / unit), 1000))
    return now


def _newcomer(s: PollSchedule, done: int = 2) -> Estimate:
    """A job first seen at 10 s with nothing done, then at 11.6 s with ``done`` units done
    (its own pace: 0.8 s a unit for two)."""
    s.add("new", 10.0)
    s.observe("new", 10.0, snap("processing", 0, 40))
    s.observe("new", 11.6, snap("processing", done, 40))
    estimate = s.estimate("new")
    assert estimate is not None
    return estimate


def test_a_job_leans_on_the_pace_other_jobs_show() -> None:
    # Five jobs have shown 20 units each at 0.5 s; a job that has shown only two units, at
    # 0.8 s each, is predicted nearer the others' pace than its own, and more surely.
    alone = _newcomer(schedule())
    s = schedule()
    for n in range(5):
        _steady(s, f"other{n}", 0.5)
    pooled = _newcomer(s)
    assert alone.unit == pytest.approx(0.8)
    assert 0.5 < pooled.unit < 0.6
    assert pooled.sigma < 0.5 * alone.sigma


def test_a_job_faster_than_the_others_is_not_held_to_their_pace() -> None:
    # Leaning on slower jobs would predict a fast job's end late, and a poll planned there
    # would see it late: what its own units show beyond their error counts first.
    s = schedule()
    for n in range(5):
        _steady(s, f"other{n}", 0.5)
    fast = _newcomer(s, done=6)  # 0.27 s a unit
    assert fast.unit < 0.33


def test_a_job_keeps_its_own_pace_when_the_others_disagree() -> None:
    # The other jobs' paces differ tenfold from each other: they say little of this one's.
    s = schedule()
    for n, unit in enumerate((0.05, 0.2, 0.5, 2.0, 5.0)):
        _steady(s, f"other{n}", unit, polls=8, every=unit * 10)
    pooled = _newcomer(s)
    assert pooled.unit == pytest.approx(0.8, rel=0.1)


def test_other_jobs_pace_replans_a_job_planned_on_its_own() -> None:
    # A job planned on its own two units approaches its end from far and unsure; once other
    # jobs show their pace, its next poll is planned again on the surer prediction.
    s = schedule()
    before = _newcomer(s)
    due = s.due_at("new")
    for n in range(5):
        _steady(s, f"other{n}", 0.5, every=0.5)
    after = s.estimate("new")
    assert after is not None and after.sigma < 0.5 * before.sigma
    assert s.due_at("new") != due
    assert s.due_at("new") >= 11.6


def test_replanning_keeps_a_back_off_and_a_pause() -> None:
    s = schedule()
    _newcomer(s)
    s.add("paused", 10.0)
    s.observe("paused", 10.0, snap("processing", 0, 20))
    s.observe("paused", 11.6, snap("processing", 2, 20))
    backoff = s.failed("new", 11.7)
    s.defer("paused", 30.0)
    for n in range(5):
        _steady(s, f"other{n}", 0.5, every=0.5)
    assert s.due_at("new") == backoff
    assert s.due_at("paused") >= 30.0


def test_predicted_polls_are_not_jittered() -> None:
    # Jitter keeps jobs added together apart before they show progress; a poll placed on a
    # prediction is the job's own, and moving it earlier would only cost a poll.
    def due(jitter: float) -> float:
        s = PollSchedule(jitter=jitter, rng=random.Random(1))
        _newcomer(s)
        return s.due_at("new")

    assert due(0.5) == due(0.0)


def _estimate(polls: Sequence[tuple[float, Snapshot]], started: float | None) -> Estimate | None:
    """The estimate for a job polled at these times with these answers, each of which says
    it started at ``started`` (None: says nothing of it)."""
    s = schedule(interval=2.0, max_interval=30.0)
    s.add("j", 0.0)
    for now, shot in polls:
        s.pick(now)
        s.observe("j", now, shot, started=started)
    return s.estimate("j")


#: A job of 20 units seen waiting at 0 s, then with 4 units done at 2 s.
_WAITED = [(0.0, snap("queued", 0, 20)), (2.0, snap("processing", 4, 20))]


def _after_a_wait(started: float | None) -> Estimate | None:
    return _estimate(_WAITED, started)


def test_a_start_the_api_states_times_the_pace_from_there() -> None:
    # Not told, the start is guessed in the middle of its span (0.4 s: one part in five);
    # told, the four units took the time since then, less half a unit of sighting lag.
    guessed, early, late = _after_a_wait(None), _after_a_wait(0.1), _after_a_wait(1.2)
    assert guessed is not None and early is not None and late is not None
    assert early.unit == pytest.approx(1.9 * (4 / 4.5) / 4)
    assert late.unit == pytest.approx(0.8 * (4 / 4.5) / 4)
    assert late.end < guessed.end < early.end
    # A stated start the polls rule out (a server clock far off): one before the waiting poll
    # is held at it; one at or after this poll leaves no time for the units done, and the
    # start is guessed as if the API had not stated one.
    assert _after_a_wait(-100.0) == _after_a_wait(0.0)
    assert _after_a_wait(100.0) == _after_a_wait(2.0) == guessed


def test_a_stated_start_changes_nothing_for_a_job_first_seen_running() -> None:
    def unit(started: float | None) -> float:
        polls = [(0.0, snap("processing", 0, 20)), (2.0, snap("processing", 4, 20))]
        estimate = _estimate(polls, started)
        assert estimate is not None
        return estimate.unit

    assert unit(-0.5) == unit(None)  # first sightings at both ends: their lags cancel


def test_a_stated_start_after_the_poll_is_not_taken_as_a_start_with_nothing_done() -> None:
    # A server clock ahead of ours by more than the span the polls allow says nothing of when
    # the job started: the four units done by 2 s were not all done after it.
    def estimate(started: float | None) -> Estimate | None:
        return _estimate([*_WAITED, (4.0, snap("processing", 8, 20))], started)

    assert estimate(100.0) == estimate(None)


def test_a_job_queued_again_is_timed_from_its_new_start() -> None:
    # A retried job (a new run, queued again) is timed from the start of that run, not from
    # the start of the run before it.
    def unit(retried: bool) -> float:
        s = schedule(interval=2.0, max_interval=30.0)
        s.add("j", 0.0)
        now = 0.0
        if retried:
            for now, shot, started in (
                (0.0, snap("queued", 0, 20), None),
                (2.0, snap("processing", 4, 20), 1.0),
                (4.0, snap("processing", 8, 20), 1.0),
                (6.0, snap("queued", 0, 20), None),
            ):
                s.pick(now)
                s.observe("j", now, shot, started=started)
        s.pick(now + 10.0)
        s.observe("j", now + 10.0, snap("queued", 0, 20))
        s.pick(now + 12.0)
        s.observe("j", now + 12.0, snap("processing", 2, 20), started=now + 11.0)
        estimate = s.estimate("j")
        assert estimate is not None
        return estimate.unit

    assert unit(retried=True) == pytest.approx(unit(retried=False))


_ANY_START = st.one_of(
    st.none(),
    st.floats(-1e3, 1e3),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]),
)


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.sampled_from([10, 60, 200]),
    jobs=st.lists(
        st.tuples(st.floats(0, 300), st.floats(1, 900), st.floats(0.05, 20), _ANY_START),
        min_size=1,
        max_size=20,
    ),
    seed=st.integers(0, 2**16),
)
def test_any_stated_start_keeps_the_budget_and_finite_due_times(
    rpm: int, jobs: list[tuple[float, float, float, float | None]], seed: int
) -> None:
    # Whatever start an API states (its clock off either way, a stale run's, not a number),
    # the schedule stays within the budget, reports every completion, and plans every poll
    # at a finite time no sooner than the poll that planned it.
    def finite(s: PollSchedule, job: str, now: float, due: float | None) -> None:
        if due is not None:
            assert math.isfinite(due) and due >= now
            estimate = s.estimate(job)
            assert estimate is None or all(
                math.isfinite(v) for v in (estimate.end, estimate.sigma, estimate.unit)
            )

    sent, detected = drive(
        rpm, [job[:3] for job in jobs], seed, skews=[job[3] for job in jobs], observed=finite
    )
    assert len(detected) == len(jobs)
    for i, t in enumerate(sent):
        assert sum(1 for u in sent[i:] if u < t + 60.0) <= rpm


def _reachable(root: object) -> int:
    """How many objects ``root`` holds, itself included (types not followed)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        todo.extend(gc.get_referents(obj))
    return len(seen)


def test_a_job_polled_for_days_keeps_a_plan_of_bounded_size() -> None:
    # A batch of a million units over 24 hours moves between every two polls: the plan kept
    # each (seconds, units) step between first sightings of its counts, one more per poll,
    # and went over all of them again at every poll.
    s = schedule(interval=2.0, max_interval=30.0)
    s.add("big", 0.0)
    now, polls, sizes = 0.0, 0, []
    while polls < 2000:
        assert s.pick(now) == "big"
        due = s.observe("big", now, snap("processing", int(now * 11.5), 1_000_000))
        assert due is not None
        polls += 1
        if polls in (100, 2000):
            sizes.append(_reachable(s._plans["big"]))
        now = due
    assert sizes[1] <= sizes[0] + 5, sizes


def test_a_count_that_goes_down_is_timed_from_the_fall() -> None:
    # A job of 100 units of 0.5 s, first seen with nothing done, runs again from zero at 40 s
    # without being seen queued (a restart the API reports only by its count). Its units
    # are timed from the fall of its count, not from its first run's start: timed from
    # there, the new run's 17 units in 48 s made its end look hours away, and the aim after
    # the next poll fell some 12 s after the real end.
    def detection(restart: float | None) -> float:
        s = schedule(interval=2.0, max_interval=30.0)
        s.add("j", 0.0)
        begun = 0.0 if restart is None else restart
        end, now = begun + 50.0, 0.0
        while True:
            assert s.pick(now) == "j"
            done = min(100, int((now if restart is None or now < restart else now - begun) / 0.5))
            due = s.observe("j", now, snap("completed" if now >= end else "processing", done, 100))
            if due is None:
                return now - end
            now = due

    fresh = detection(None)
    assert fresh <= 2.0
    for restart in (40.0, 45.0, 48.0):
        assert detection(restart) <= 2.0, restart


def test_a_count_seen_before_the_total_is_not_a_start() -> None:
    # A job first seen running with 500 units done and no total yet (the total appears at the
    # next poll): those units were done before that poll, which saw it running, not waiting.
    # Taken for a start between the two polls, 502 units in 2 s put the end at 4 s, surely
    # (sigma 0.06 s), when it is 500 s away.
    polls = [
        (0.0, snap("processing", 500, None)),
        (2.0, snap("processing", 502, 1000)),
        (4.0, snap("processing", 504, 1000)),
    ]
    late = _estimate(polls, None)
    assert late is not None and late.unit == pytest.approx(1.0, rel=0.3)
    assert late.end > 100.0
    # Seen queued at 0 s and running without a total at 10 s: the start the API states (5 s)
    # is taken, not held after the poll that saw the job running.
    polls = [
        (0.0, snap("queued", 0, None)),
        (10.0, snap("processing", 5, None)),
        (12.0, snap("processing", 7, 100)),
    ]
    stated = _estimate(polls, 5.0)
    assert stated is not None
    assert stated.unit == pytest.approx(7.0 * (7 / 7.5) / 7)


def test_two_polls_at_one_clock_reading_do_not_fail_the_schedule() -> None:
    # The clock is monotonic, not strictly increasing (a coarse clock, a virtual one that
    # stands still): a count that moved between two polls with one reading is a step of no
    # seconds, whose pace is no number. It raised ValueError (math domain error) from
    # observe, which stops the poll transport.
    s = schedule(interval=2.0, max_interval=30.0)
    s.add("j", 0.0)
    for now, shot in (
        (0.0, snap("queued", 0, 1)),
        (1.0, snap("processing", 1, 4)),
        (1.0, snap("processing", 2, 4)),
        (3.0, snap("processing", 3, 4)),
    ):
        s.pick(now)
        due = s.observe("j", now, shot)
        assert due is not None and math.isfinite(due) and due >= now
    estimate = s.estimate("j")
    assert estimate is not None and math.isfinite(estimate.end)
