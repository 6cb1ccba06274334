"""When to poll which job: the sans-I/O poll scheduler.

:class:`PollSchedule` plans one poll per job at a time. Every method takes ``now`` (seconds on
one monotonic clock) and nothing reads a clock or sleeps; the poll transport asks it which job
to poll next, polls, and reports what it saw (:meth:`PollSchedule.observe`) or what went wrong
(:meth:`PollSchedule.failed`, :meth:`PollSchedule.defer`).

How the next poll of a job is placed (``docs/polling.md`` explains why):

- **Growth.** Without a usable progress rate (queued, no counts, nothing completed yet) the
  gap starts at ``interval`` and grows by ``growth`` per poll up to ``max_interval``.
- **Prediction.** Once the job's ``completed`` count has moved, its pace (seconds per unit of
  progress) and the remaining units give a predicted end and its uncertainty ``sigma``; a
  job seen waiting is timed from the start its API states, where it states one.
- **Pooling.** What one job shows is combined with what the others show: its pace with the
  other jobs' paces, as far as jobs' paces are seen to agree (a prior ``PACE_SPREAD`` until
  they show their own spread); how irregular units are (the prior ``UNIT_CV``) from every
  job's steps between counts. When the pool grows surer, jobs planned on less are re-planned.
- **Approach.** While the prediction is unsure (``sigma`` above ``SURE`` tail gaps), the next
  poll goes ``Z * sigma`` before the predicted end — or ``HALVE`` of the way there when that
  is further — so a long job costs a few polls that close in on its end.
- **Aim.** A sure prediction is aimed at: the next poll goes ``AIM * sigma`` after the
  predicted end (at most ``AIM_MAX`` tail gaps after it), where it most likely finds the job
  done; if not, the count it shows (a unit or two left) makes the next aim sharper.
- **Tail.** A job that overruns its prediction is polled at short gaps (a fraction of about
  one unit of progress, at most ``interval``), growing again so that a stalled job does not
  keep a fast poll going.
- **Caps.** No gap exceeds ``max_interval`` (the worst case for detection), except when the
  request budget cannot carry that many polls: a job that is not near its end then polls no
  more often than its fair share of the budget's sustained rate (its tightest window).
- **Jitter.** A gap without a prediction is shortened by a random fraction up to ``jitter``,
  so that jobs added together do not poll in lockstep; a predicted poll is already the job's
  own, and is not moved (earlier would only cost a poll).
- **Errors.** ``failed`` backs a job off exponentially from ``interval`` up to ``max_interval``,
  with "equal jitter" (between half and all of the step), and no sooner than a wait the API
  named; ``defer`` moves a poll that never happened (a rate-limited answer pauses the shared
  budget) without counting an error.

:meth:`PollSchedule.pick` chooses among due jobs: jobs at or past their predicted end first (a
poll there most likely reports a completion), then the longest overdue. The transport asks
only when the shared budget has room, so a scarce budget goes to the polls that matter most.
"""

from __future__ import annotations

import math
import random

import attrs

from .._state import Snapshot

__all__ = ["Estimate", "PollSchedule"]

#: Assumed coefficient of variation of the time one unit of progress takes, until the jobs
#: show their own: it counts as ``PRIOR_WEIGHT`` measured steps, and the steps measured last
#: (at most ``MAX_STEPS``) outweigh it.
UNIT_CV = 0.5
PRIOR_WEIGHT = 4
MAX_STEPS = 200
#: Assumed spread of paces between jobs (the standard deviation of their log), until the jobs
#: show their own: it counts as ``PACE_PRIOR_JOBS`` jobs. The paces of at most ``MAX_PACES``
#: jobs are pooled; past that, the older half counts half.
PACE_SPREAD = 0.15
PACE_PRIOR_JOBS = 1.0
MAX_PACES = 100
#: Jobs whose predictions lean on the pool are planned again once its pace has this much less
#: variance, or has moved by this many of its standard deviations, or units seem this much
#: more or less irregular (change of their squared coefficient of variation, against it plus
#: the twelfth of a unit that a sighting's lag adds).
REPLAN_SURER = 0.8
REPLAN_MOVED = 0.3
REPLAN_IRREGULAR = 0.2
#: ...as long as the pool's variance is below this many times the job's own (so that a
#: surer pool can still move it).
LEANING = 4.0
#: How many standard deviations before the predicted end the approach poll aims.
Z = 0.75
#: The tail gap is at least this fraction of ``interval``.
TAIL_FLOOR = 0.5
#: A prediction this sure (its standard deviation against the tail gap) is aimed at at once.
SURE = 0.75
#: Near the end, a poll aims this many standard deviations after the predicted end...
AIM = 1.25
#: ...but no further after it than this fraction of the tail gap...
AIM_MAX = 0.3
#: ...and comes no sooner than this fraction of the tail gap.
TAIL_MIN = 0.3
#: Without a confident prediction, the approach poll goes at least this fraction of the way.
HALVE = 0.6
#: Share of the request budget the scheduler plans to use for polls (the rest: results, ...).
BUDGET_SHARE = 0.9


@attrs.frozen(kw_only=True)
class Estimate:
    """A prediction of when a job ends: time ``end`` (same clock as ``now``), its standard
    deviation ``sigma``, and ``unit`` — the seconds one unit of progress takes."""

    end: float
    sigma: float
    unit: float


@attrs.frozen
class _Steps:
    """The (seconds, units) steps between first sightings of counts, as the sums the
    estimates need: a job polled for days adds a step per poll, and keeps five numbers."""

    count: int = 0
    seconds: float = 0.0
    units: int = 0
    #: The sum over steps of seconds squared per unit, and of the inverse of their units.
    squares: float = 0.0
    inverses: float = 0.0

    def plus(self, seconds: float, units: int) -> _Steps:
        return _Steps(
            self.count + 1,
            self.seconds + seconds,
            self.units + units,
            self.squares + seconds * seconds / units,
            self.inverses + 1 / units,
        )

    def scatter(self, unit: float) -> float:
        """The steps' squared deviations from ``unit`` seconds per unit, normalized, less
        what the lag of each first sighting owes (a sixth of the inverse of its units):
        the sum over steps of ``(dt - unit * dk) ** 2 / (unit * unit * dk) - 1 / (6 * dk)``."""
        return (
            self.squares / (unit * unit) - 2 * self.seconds / unit + self.units - self.inverses / 6
        )


_NO_STEPS = _Steps()


@attrs.frozen(kw_only=True)
class _Evidence:
    """What one job's progress shows: the first sighting of its current count, the units left,
    and ``moved`` units in ``elapsed`` seconds since its anchor (whose time is uncertain by
    ``spread`` seconds, a standard deviation: an estimated start). ``steps`` sums the (seconds,
    units) between first sightings of counts, the anchor's too when it was one."""

    first: float
    left: int
    moved: int
    elapsed: float
    spread: float
    steps: _Steps

    def pace(self, cv2: float) -> tuple[float, float]:
        """The job's own pace: log seconds per unit, and the variance of that estimate — the
        units' own spread, the anchor's uncertainty, and the lag of each first sighting (up
        to a unit, at both ends)."""
        var = cv2 / self.moved + (self.spread / self.elapsed) ** 2 + 1 / (6 * self.moved**2)
        return math.log(self.elapsed / self.moved), var

    def sighted_pace(self, cv2: float) -> tuple[float, float] | None:
        """The pace between first sightings only, what other jobs may lean on: an estimated
        start carries a guess of how long the job queued, which would be shared by every
        job's estimate and not average out."""
        if not self.steps.count:
            return None
        seconds, units = self.steps.seconds, self.steps.units
        return math.log(seconds / units), cv2 / units + 1 / (6 * units**2)


@attrs.define(kw_only=True)
class _Plan:
    """What the schedule remembers of one job (mutable, private)."""

    due: float
    gap: float
    polls: int = 0
    errors: int = 0
    tail_polls: int = 0
    in_flight: bool = False
    last: float = 0.0  # the last poll that saw the job
    held: float = 0.0  # no poll before this (a back-off, a rate-limit pause)
    waiting: float | None = None  # last poll that saw the job not yet started
    anchor: tuple[float, int, float] | None = None  # (time, completed, +/- seconds)
    started_known: bool = False  # the anchor is the start the API stated
    seen: tuple[float, int, int] | None = None  # (first time, completed, total) of the count
    evidence: _Evidence | None = None
    estimate: Estimate | None = None
    #: (seconds, units) between consecutive first sightings of counts, after the anchor's.
    steps: _Steps = _NO_STEPS
    #: What the steps add to the schedule's measure of irregularity: (sum, degrees of freedom).
    spread: tuple[float, int] = (0.0, 0)
    #: The job's entry among the pooled paces (see :class:`_Paces`).
    pace: tuple[float, float, int] | None = None


class _Paces:
    """Running sums over jobs' own paces, each a log seconds per unit ``x`` with variance
    ``v`` and weighed by ``1 / v``: what the other jobs say of a job's pace, and how sure.

    The spread between jobs' paces is measured as in a random-effects meta-analysis (the
    DerSimonian-Laird moment estimate), pulled towards the prior ``PACE_SPREAD``.
    """

    def __init__(self) -> None:
        self.jobs = self.w = self.wx = self.wxx = self.ww = 0.0
        self.generation = 0  # halvings so far; an entry made earlier counts half per halving

    def put(
        self, entry: tuple[float, float, int] | None, x: float, v: float
    ) -> tuple[float, float, int]:
        """Replace a job's entry (None: add one); return the new entry."""
        if entry is not None:
            self._add(entry, -1.0)
        new = (x, v, self.generation)
        self._add(new, 1.0)
        if self.jobs > MAX_PACES:  # the older half counts half: APIs change pace
            self.jobs, self.w, self.wx, self.wxx = (
                self.jobs / 2,
                self.w / 2,
                self.wx / 2,
                self.wxx / 2,
            )
            self.ww /= 4
            self.generation += 1
        return new

    def _add(self, entry: tuple[float, float, int], sign: float) -> None:
        x, v, generation = entry
        scale = 0.5 ** (self.generation - generation)
        w = scale / v
        self.jobs += sign * scale
        self.w += sign * w
        self.wx += sign * w * x
        self.wxx += sign * w * x * x
        self.ww += sign * w * w

    def prior(
        self, leave_out: tuple[float, float, int] | None = None
    ) -> tuple[float, float] | None:
        """The pace the jobs suggest, without the entry ``leave_out``: the mean log seconds per
        unit and its variance for one job (the spread between jobs and the mean's own
        uncertainty); None when no other job has shown a pace."""
        jobs, w, wx, wxx, ww = self.jobs, self.w, self.wx, self.wxx, self.ww
        if leave_out is not None:
            x, v, generation = leave_out
            scale = 0.5 ** (self.generation - generation)
            wj = scale / v
            jobs, w, wx, wxx, ww = jobs - scale, w - wj, wx - wj * x, wxx - wj * x * x, ww - wj * wj
        if jobs < 0.5 or w <= 0:
            return None
        mean = wx / w
        q = max(wxx - wx * wx / w, 0.0)  # what the paces' scatter exceeds their own errors by
        c = w - ww / w
        others = max(jobs - 1, 0.0)
        measured = max(0.0, (q - others) / c) if c > 0 else 0.0
        tau2 = (PACE_PRIOR_JOBS * PACE_SPREAD**2 + others * measured) / (PACE_PRIOR_JOBS + others)
        return mean, tau2 + 1 / w


class PollSchedule:
    """Plans the polls of many jobs; see the module docstring for the rules.

    ``interval`` is the first gap and the longest gap in the tail, ``max_interval`` the longest
    gap otherwise, ``rpm`` requests per ``window`` seconds the budget the polls share (used only
    to stretch gaps the budget cannot carry; :meth:`share` sets it from a budget's rate).
    ``rng`` makes jitter reproducible in tests.
    """

    def __init__(
        self,
        *,
        interval: float = 2.0,
        max_interval: float = 30.0,
        rpm: int = 60,
        window: float = 60.0,
        growth: float = 1.5,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < interval <= max_interval:
            raise ValueError(f"need 0 < interval <= max_interval, got {interval}, {max_interval}")
        if growth < 1 or not 0 <= jitter < 1 or rpm < 1 or window <= 0:
            raise ValueError("need growth >= 1, 0 <= jitter < 1, rpm >= 1 and window > 0")
        self.interval = interval
        self.max_interval = max_interval
        self.rate = rpm / window
        self.growth = growth
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._plans: dict[str, _Plan] = {}
        self._spread_sum = 0.0
        self._spread_n = 0
        self._paces = _Paces()
        self._planned_on: tuple[float, float, float] | None = None  # (pace, its variance, cv2)
        self._leaning: set[str] = set()  # jobs the others' paces may move (see LEANING)

    # -- the set of jobs -------------------------------------------------------------------

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._plans

    def __len__(self) -> int:
        return len(self._plans)

    def add(self, job_id: str, now: float) -> None:
        """Schedule a job's first poll for ``now`` (no-op if the job is already planned)."""
        if job_id not in self._plans:
            self._plans[job_id] = _Plan(due=now, gap=self.interval)

    def remove(self, job_id: str) -> None:
        """Forget a job (finished, or nobody watches it)."""
        self._plans.pop(job_id, None)
        self._leaning.discard(job_id)

    def estimate(self, job_id: str) -> Estimate | None:
        """The current prediction of the job's end, if its progress allows one."""
        plan = self._plans.get(job_id)
        return None if plan is None else plan.estimate

    def due_at(self, job_id: str) -> float:
        """When the job's next poll is planned."""
        return self._plans[job_id].due

    # -- choosing ---------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The earliest planned poll among jobs not being polled, or None."""
        return min((p.due for p in self._plans.values() if not p.in_flight), default=None)

    def pick(self, now: float) -> str | None:
        """The most urgent due job, marked as being polled; None when nothing is due.

        Jobs near their predicted end come first, then the longest overdue. One pass over the
        jobs, without sorting the due ones: thousands may be due at once (a backlog behind a
        rate limit), at every poll.
        """
        best: tuple[int, float, str] | None = None
        for job, plan in self._plans.items():
            if plan.in_flight or plan.due > now:
                continue
            est = plan.estimate
            near_end = est is not None and now >= est.end - Z * est.sigma
            key = (0 if near_end else 1, plan.due, job)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        self._plans[best[2]].in_flight = True
        return best[2]

    # -- outcomes ---------------------------------------------------------------------------

    def observe(
        self, job_id: str, now: float, snapshot: Snapshot, *, started: float | None = None
    ) -> float | None:
        """Record a successful poll at ``now``; return the next poll's time (None: job gone).

        A terminal snapshot removes the job: there is nothing more to poll for. What the
        snapshot shows can re-plan other jobs too (their predictions lean on this one's pace).
        ``started`` is when the API says the job started, on the clock of ``now``: where the
        job was last seen waiting, it is taken (no earlier than that poll; one at or after
        this poll, or not finite, is not) instead of a guess within that span.
        """
        plan = self._plans.get(job_id)
        if plan is None:
            return None
        if snapshot.terminal:
            self.remove(job_id)
            return None
        plan.in_flight, plan.errors, plan.polls = False, 0, plan.polls + 1
        plan.last, plan.held = now, 0.0
        plan.evidence = self._record(plan, now, snapshot, started)
        self._learn(plan)
        plan.estimate, leaning = self._predict(plan)
        if leaning:
            self._leaning.add(job_id)
        else:
            self._leaning.discard(job_id)
        gap = self._gap(plan, now)
        plan.due = now + (gap if plan.estimate is not None else self._jittered(gap))
        self._replan_if_surer(job_id, now)
        return plan.due

    def failed(self, job_id: str, now: float, *, wait: float | None = None) -> float | None:
        """Record a failed poll (a "retry later" answer, a network error); back off, and wait
        at least ``wait`` seconds when the API named a wait."""
        plan = self._plans.get(job_id)
        if plan is None:
            return None
        plan.in_flight, plan.errors = False, plan.errors + 1
        # (The exponent is bounded: a 5xx storm of hours must not overflow the float.)
        step = min(self.max_interval, self.interval * 2.0 ** min(plan.errors - 1, 64))
        plan.due = plan.held = now + max(step * self._rng.uniform(0.5, 1.0), wait or 0.0)
        return plan.due

    def failures(self, job_id: str) -> int:
        """Failed polls of the job since its last good one (what its backoff has doubled for)."""
        plan = self._plans.get(job_id)
        return 0 if plan is None else plan.errors

    def share(self, rate: float) -> None:
        """Plan within a budget of ``rate`` requests per second (its tightest window)."""
        if not rate > 0:
            raise ValueError(f"need rate > 0, got {rate!r}")
        self.rate = rate

    def defer(self, job_id: str, until: float) -> None:
        """Move a poll that did not happen to ``until`` (a rate-limit pause); no error."""
        plan = self._plans.get(job_id)
        if plan is not None:
            plan.in_flight, plan.due, plan.held = False, until, until

    # -- what the polls show ----------------------------------------------------------------

    def _record(
        self, plan: _Plan, now: float, snap: Snapshot, started: float | None
    ) -> _Evidence | None:
        """Note the count the poll showed; return what the job's progress now tells."""
        done, total = snap.completed, snap.total
        if done is None or not total or snap.status is None or snap.status.rank < 1:
            if snap.status is None or snap.status.rank < 1 or done == 0:
                # Not started, or no unit done yet: the units began after this poll. (A job
                # seen running with units done but no total began them before it.)
                plan.waiting = now
            if snap.status is not None and snap.status.rank < 1:
                # Queued again (a retry, a new run): its progress is timed from its new start.
                plan.anchor, plan.started_known = None, False
            return None
        seen = plan.seen
        if plan.anchor is None or seen is None or done < seen[1]:
            # First counts, or a count that went down (a run begun again without being seen
            # queued): what came before says nothing of the units from here.
            self._set_anchor(plan, now, done, total, started)
            if plan.anchor is None or plan.anchor[1] == done:
                return None
        elif seen[1] != done:
            if now > seen[0]:
                if seen[0] > plan.anchor[0]:
                    plan.steps = plan.steps.plus(now - seen[0], done - seen[1])
                plan.seen = (now, done, total)
            else:  # seen again at one clock reading: no time passed, no step to time
                plan.seen = (seen[0], done, total)
        anchor_time, anchor_done, spread = plan.anchor
        moved = done - anchor_done
        assert plan.seen is not None  # set by _set_anchor, or by the branches above
        first = plan.seen[0]
        if moved <= 0 or first <= anchor_time:
            return None
        # Both counts were reached some time before the poll that first showed them; taking
        # the first sightings at both ends makes those offsets (about half a unit) cancel.
        steps = plan.steps
        elapsed = first - anchor_time
        if plan.started_known:
            # A start the API stated has no sighting's lag, but the count's first sighting
            # lags it by about half a unit: time the units from there.
            elapsed *= moved / (moved + 0.5)
        elif not spread:  # the anchor is a sighting: its step to the next count is one too
            steps = steps.plus(first - anchor_time - steps.seconds, moved - steps.units)
        return _Evidence(
            first=first,
            left=max(total - done, 0),
            moved=moved,
            elapsed=elapsed,
            spread=spread,
            steps=steps,
        )

    def _learn(self, plan: _Plan) -> None:
        """Add what the job showed to the pooled measures: how irregular units are, and its
        pace among the jobs' paces."""
        if plan.evidence is None:
            return
        self._calibrate(plan, plan.evidence)
        sighted = plan.evidence.sighted_pace(self._cv2())
        if sighted is not None:
            plan.pace = self._paces.put(plan.pace, *sighted)

    def _predict(self, plan: _Plan) -> tuple[Estimate | None, bool]:
        """The job's predicted end: its own pace, leaning on the other jobs' as far as paces
        agree, over the units left; and whether the others' may move it (``LEANING``)."""
        ev = plan.evidence
        if ev is None:
            return None, False
        cv2 = self._cv2()
        x, rate2 = ev.pace(cv2)
        prior = self._paces.prior(plan.pace)
        leaning = prior is None  # the others may yet show a pace
        if prior is not None:  # precisions add; the pace is their weighed mean
            mean, var = prior
            if x < mean:
                # A job faster than the others may really be so: as far as its pace is further
                # from theirs than its own error explains, theirs counts less. (A slower job
                # leaning on them is only polled once more; a faster one would be seen late.)
                var = max(var, (x - mean) ** 2 - rate2)
            leaning = var < LEANING * rate2
            x, rate2 = (x / rate2 + mean / var) / (1 / rate2 + 1 / var), 1 / (1 / rate2 + 1 / var)
        unit = math.exp(x)
        remaining = ev.left * unit
        # The end: the pace's relative error over what remains, the remaining units' own
        # spread, and the lag of the current count's first sighting.
        sigma = math.sqrt(remaining**2 * rate2 + unit**2 * (cv2 * ev.left + 1 / 12))
        return Estimate(end=ev.first - unit / 2 + remaining, sigma=sigma, unit=unit), leaning

    def _calibrate(self, plan: _Plan, ev: _Evidence) -> None:
        """Measure how irregular units are, pooled over every job this schedule has seen: a
        job's steps between first sightings against their mean unit time, or its one step
        against the other jobs' pace."""
        # Each first sighting lags its count by up to a unit: a step's normalized square
        # owes 1/(6 dk) to that, not to the units.
        steps = ev.steps
        if steps.count >= 2:
            unit = steps.seconds / steps.units
            measured = (steps.scatter(unit), steps.count - 1)
        elif steps.count and (prior := self._paces.prior(plan.pace)) is not None:
            # One step also owes to how far this job's pace may be from the others'.
            mean, var = prior
            spread = steps.scatter(math.exp(mean)) - var * steps.units
            measured = (spread, 1)
        else:
            return
        old, plan.spread = plan.spread, measured
        self._spread_sum += measured[0] - old[0]
        self._spread_n += measured[1] - old[1]
        if self._spread_n > MAX_STEPS:  # the older half counts half: APIs change pace
            self._spread_sum, self._spread_n = self._spread_sum / 2, self._spread_n // 2
            plan.spread = (0.0, 0)

    def _cv2(self) -> float:
        """The squared coefficient of variation of a unit's time: the prior ``UNIT_CV``,
        weighed as ``PRIOR_WEIGHT`` steps, moved by what the jobs showed."""
        return max(PRIOR_WEIGHT * UNIT_CV**2 + self._spread_sum, 0.0) / (
            PRIOR_WEIGHT + self._spread_n
        )

    @staticmethod
    def _set_anchor(plan: _Plan, now: float, done: int, total: int, started: float | None) -> None:
        plan.seen = (now, done, total)
        plan.steps, plan.spread = _NO_STEPS, (0.0, 0)  # what it added to the pool stays there
        plan.started_known = False
        if (
            plan.waiting is not None
            and done > 0
            and started is not None
            and math.isfinite(started)
            and started < now
        ):
            # The API says when it started: kept after the waiting poll (a server clock
            # behind by more than that cannot move the anchor before it). A start at or after
            # this poll (a clock ahead) leaves no time for the units done: it is not taken.
            plan.anchor = (max(started, plan.waiting), 0, 0.0)
            plan.started_known = True
        elif plan.waiting is not None and done > 0:
            # It started after the last poll that saw it waiting, early enough for `done`
            # units to fit before this one. The middle of that range, with units of the pace
            # that this start implies, is one part in done + 1 after the waiting poll; keep
            # how far off it can be (a standard deviation: a uniform range of one part).
            part = (now - plan.waiting) / (done + 1)
            plan.anchor = (plan.waiting + part, 0, part / (2 * math.sqrt(3)))
        else:
            plan.anchor = (now, done, 0.0)
        plan.waiting = None

    # -- planning ---------------------------------------------------------------------------

    def _replan_if_surer(self, changed: str, now: float) -> None:
        """Plan again the jobs whose predictions lean on the others' paces, when the pool has
        grown surer or moved (not those being polled, backing off, or overrunning their
        prediction)."""
        prior = self._paces.prior()
        if prior is None or not self._leaning:
            return
        mean, var = prior
        cv2 = self._cv2()
        last = self._planned_on
        if (
            last is not None
            and var > REPLAN_SURER * last[1]
            and abs(mean - last[0]) < REPLAN_MOVED * math.sqrt(last[1])
            # (units' own spread matters beside the lag of a sighting, a twelfth of a unit)
            and abs(cv2 - last[2]) < REPLAN_IRREGULAR * (last[2] + 1 / 12)
        ):
            return
        self._planned_on = (mean, var, cv2)
        for job_id in self._leaning - {changed}:
            plan = self._plans[job_id]
            if plan.in_flight or plan.errors or plan.tail_polls:
                continue
            estimate, _ = self._predict(plan)
            gap = None if estimate is None else self._aimed(estimate, plan.last)
            if gap is not None:
                plan.estimate = estimate
                plan.due = max(now, plan.held, plan.last + gap)

    def _gap(self, plan: _Plan, now: float) -> float:
        est = plan.estimate
        if est is None:
            gap = plan.gap if plan.polls > 1 else self.interval
            plan.gap = min(self.max_interval, gap * self.growth)
            return max(gap, self._fair_share())
        aimed = self._aimed(est, now)
        if aimed is not None:
            plan.tail_polls = 0
            return aimed
        # Overrunning the prediction: back off gently so a stalled job stops costing much.
        plan.tail_polls += 1
        # (The exponent is bounded: a job stalled for days must not overflow the float.)
        return min(
            self.max_interval,
            self._tail(est) * TAIL_MIN * self.growth ** min(max(0, plan.tail_polls - 2), 64),
        )

    def _aimed(self, est: Estimate, now: float) -> float | None:
        """The gap to the approach or aim poll after a poll at ``now``; None when the job has
        overrun its prediction."""
        tail = self._tail(est)
        left = est.end - now
        if est.sigma > SURE * tail:
            # Not sure enough of the end: close in, to a poll whose count pins the pace down.
            approach = max(left - Z * est.sigma, left * HALVE)
            if approach > tail:
                return max(min(approach, self.max_interval), min(approach, self._fair_share()))
        aim = left + min(AIM * est.sigma, AIM_MAX * tail)
        if aim > 0:
            # Just after the predicted end, where a poll most likely finds the job done (and
            # otherwise shows how few units are left).
            return max(min(aim, self.max_interval), min(aim, self._fair_share()), tail * TAIL_MIN)
        return None

    def _tail(self, est: Estimate) -> float:
        """The tail gap: about one unit of progress, kept between a fraction of ``interval``
        and ``interval``."""
        return min(self.interval, max(est.unit, self.interval * TAIL_FLOOR))

    def _fair_share(self) -> float:
        """The gap at which every planned job together stays within the poll budget."""
        return len(self._plans) / (self.rate * BUDGET_SHARE)

    def _jittered(self, gap: float) -> float:
        return gap * (1.0 - self.jitter * self._rng.random())
