"""When to poll which job: the sans-I/O poll scheduler.

:class:`PollSchedule` plans one poll per job at a time. Every method takes ``now`` (seconds on
one monotonic clock) and nothing reads a clock or sleeps; the poll transport asks it which job
to poll next, polls, and reports what it saw (:meth:`PollSchedule.observe`) or what went wrong
(:meth:`PollSchedule.failed`, :meth:`PollSchedule.defer`).

How the next poll of a job is placed:

- **Growth.** Without a usable progress rate (queued, no counts, nothing completed yet) the
  gap starts at ``interval`` and grows by ``growth`` per poll up to ``max_interval``.
- **Prediction.** Once the job's ``completed`` count has moved, the pace (seconds per unit of
  progress) and the remaining units give a predicted end and its uncertainty ``sigma``. How
  irregular units are is measured, not assumed: the steps between first sightings of counts,
  pooled over every job the schedule has seen, replace the prior ``UNIT_CV`` as they come.
- **Approach.** While the prediction is unsure (``sigma`` above ``SURE`` tail gaps), the next
  poll goes to ``Z * sigma`` before the predicted end — or halfway there when that is nearer —
  so a long job costs a handful of polls that close in on its end, not one every few seconds.
- **Aim.** A sure prediction is aimed at: the next poll goes ``AIM * sigma`` after the
  predicted end (at most ``AIM_MAX`` tail gaps after it), where it most likely finds the job
  done; if not, the count it shows (a unit or two left) makes the next aim sharper.
- **Tail.** A job that overruns its prediction is polled at short gaps (a fraction of about
  one unit of progress, at most ``interval``), growing again so that a stalled job does not
  keep a fast poll going.
- **Caps.** No gap exceeds ``max_interval`` (the worst case for detection), except when the
  request budget cannot carry that many polls: a job that is not near its end then polls no
  more often than its fair share of the budget's sustained rate (its tightest window).
- **Jitter.** Each gap is shortened by a random fraction up to ``jitter`` (never lengthened,
  so a prediction is never overshot), so that jobs added together do not poll in lockstep.
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

from .._values import Snapshot

__all__ = ["Estimate", "PollSchedule"]

#: Assumed coefficient of variation of the time one unit of progress takes, until the jobs
#: show their own: it counts as ``PRIOR_WEIGHT`` measured steps, and the steps measured last
#: (at most ``MAX_STEPS``) outweigh it.
UNIT_CV = 0.5
PRIOR_WEIGHT = 4
MAX_STEPS = 200
#: How many standard deviations before the predicted end the approach poll aims.
Z = 0.5
#: The tail gap is at least this fraction of ``interval``.
TAIL_FLOOR = 0.5
#: A prediction this sure (its standard deviation against the tail gap) is aimed at at once.
SURE = 1.5
#: Near the end, a poll aims this many standard deviations after the predicted end...
AIM = 0.75
#: ...but no further after it than this fraction of the tail gap...
AIM_MAX = 0.35
#: ...and comes no sooner than this fraction of the tail gap.
TAIL_MIN = 0.25
#: Without a confident prediction, the approach poll goes this fraction of the way to the end.
HALVE = 0.5
#: Share of the request budget the scheduler plans to use for polls (the rest: results, ...).
BUDGET_SHARE = 0.9


@attrs.frozen(kw_only=True)
class Estimate:
    """A prediction of when a job ends: time ``end`` (same clock as ``now``), its standard
    deviation ``sigma``, and ``unit`` — the seconds one unit of progress takes."""

    end: float
    sigma: float
    unit: float


@attrs.define(kw_only=True)
class _Plan:
    """What the schedule remembers of one job (mutable, private)."""

    due: float
    gap: float
    polls: int = 0
    errors: int = 0
    tail_polls: int = 0
    in_flight: bool = False
    waiting: float | None = None  # last poll that saw the job not yet started
    anchor: tuple[float, int, float] | None = None  # (time, completed, +/- seconds)
    seen: tuple[float, int, int] | None = None  # (first time, completed, total) of the count
    estimate: Estimate | None = None
    #: (seconds, units) between consecutive first sightings of counts, after the anchor's.
    steps: list[tuple[float, int]] = attrs.Factory(list)
    #: What the steps add to the schedule's measure of irregularity: (sum, degrees of freedom).
    spread: tuple[float, int] = (0.0, 0)


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
        times = [p.due for p in self._plans.values() if not p.in_flight]
        return min(times, default=None)

    def due(self, now: float) -> list[str]:
        """Jobs due at ``now`` and not being polled, most urgent first."""
        ready = [
            (self._urgency(p, now), job)
            for job, p in self._plans.items()
            if not p.in_flight and p.due <= now
        ]
        return [job for _, job in sorted(ready)]

    def pick(self, now: float) -> str | None:
        """The most urgent due job, marked as being polled; None when nothing is due."""
        ready = self.due(now)
        if not ready:
            return None
        self._plans[ready[0]].in_flight = True
        return ready[0]

    def _urgency(self, plan: _Plan, now: float) -> tuple[int, float]:
        est = plan.estimate
        near_end = est is not None and now >= est.end - Z * est.sigma
        return (0 if near_end else 1, plan.due)

    # -- outcomes ---------------------------------------------------------------------------

    def observe(self, job_id: str, now: float, snapshot: Snapshot) -> float | None:
        """Record a successful poll at ``now``; return the next poll's time (None: job gone).

        A terminal snapshot removes the job: there is nothing more to poll for.
        """
        plan = self._plans.get(job_id)
        if plan is None:
            return None
        if snapshot.terminal:
            self.remove(job_id)
            return None
        plan.in_flight, plan.errors, plan.polls = False, 0, plan.polls + 1
        plan.estimate = self._update_estimate(plan, now, snapshot)
        plan.due = now + self._jittered(self._gap(plan, now))
        return plan.due

    def failed(self, job_id: str, now: float, *, wait: float | None = None) -> float | None:
        """Record a failed poll (a "retry later" answer, a network error); back off, and wait
        at least ``wait`` seconds when the API named a wait."""
        plan = self._plans.get(job_id)
        if plan is None:
            return None
        plan.in_flight, plan.errors = False, plan.errors + 1
        step = min(self.max_interval, self.interval * 2.0 ** (plan.errors - 1))
        plan.due = now + max(step * self._rng.uniform(0.5, 1.0), wait or 0.0)
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
            plan.in_flight, plan.due = False, until

    # -- planning ---------------------------------------------------------------------------

    def _update_estimate(self, plan: _Plan, now: float, snap: Snapshot) -> Estimate | None:
        done, total = snap.completed, snap.total
        if done is None or not total or snap.status is None or snap.status.rank < 1:
            plan.waiting = now
            return None
        if plan.anchor is None or done < plan.anchor[1]:
            self._set_anchor(plan, now, done, total)
            if plan.anchor is None or plan.anchor[1] == done:
                return None
        if plan.seen is None or plan.seen[1] != done:
            if plan.seen is not None and plan.seen[1] < done and plan.seen[0] > plan.anchor[0]:
                plan.steps.append((now - plan.seen[0], done - plan.seen[1]))
            plan.seen = (now, done, total)
        anchor_time, anchor_done, spread = plan.anchor
        moved = done - anchor_done
        first = plan.seen[0]
        if moved <= 0 or first <= anchor_time:
            return None
        # Both counts were reached some time before the poll that first showed them; taking
        # the first sightings at both ends makes those offsets (about half a unit) cancel.
        elapsed = first - anchor_time
        unit = elapsed / moved
        self._calibrate(plan)
        cv2 = self._cv2()
        left = max(total - done, 0)
        remaining = left * unit
        # The rate's relative error: the units' own spread, the anchor's uncertainty, and the
        # lag of each first sighting (up to a unit, at both ends).
        rate2 = cv2 / moved + (spread / elapsed) ** 2 + (unit / elapsed) ** 2 / 6
        # The end: that error over what remains, the remaining units' own spread, and the
        # lag of the current count's first sighting.
        sigma = math.sqrt(remaining**2 * rate2 + unit**2 * (cv2 * left + 1 / 12))
        return Estimate(end=first - unit / 2 + remaining, sigma=sigma, unit=unit)

    def _calibrate(self, plan: _Plan) -> None:
        """Measure how irregular units are: a job's steps between first sightings against
        their mean unit time, pooled over every job this schedule has seen."""
        if len(plan.steps) < 2:
            return
        unit = sum(dt for dt, _ in plan.steps) / sum(dk for _, dk in plan.steps)
        # Each first sighting lags its count by up to a unit: a step's normalized square
        # owes 1/(6 dk) to that, not to the units.
        spread = sum(
            (dt - unit * dk) ** 2 / (unit * unit * dk) - 1 / (6 * dk) for dt, dk in plan.steps
        )
        old, plan.spread = plan.spread, (spread, len(plan.steps) - 1)
        self._spread_sum += spread - old[0]
        self._spread_n += plan.spread[1] - old[1]
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
    def _set_anchor(plan: _Plan, now: float, done: int, total: int) -> None:
        plan.seen = (now, done, total)
        plan.steps, plan.spread = [], (0.0, 0)  # what it added to the pool stays there
        if plan.waiting is not None and done > 0:
            # It started after the last poll that saw it waiting, early enough for `done`
            # units to fit before this one. The middle of that range, with units of the pace
            # that this start implies, is one part in done + 1 after the waiting poll; keep
            # how far off it can be (a standard deviation: a uniform range of one part).
            part = (now - plan.waiting) / (done + 1)
            plan.anchor = (plan.waiting + part, 0, part / (2 * math.sqrt(3)))
        else:
            plan.anchor = (now, done, 0.0)
        plan.waiting = None

    def _gap(self, plan: _Plan, now: float) -> float:
        est = plan.estimate
        if est is None:
            gap = plan.gap if plan.polls > 1 else self.interval
            plan.gap = min(self.max_interval, gap * self.growth)
            return max(gap, self._fair_share())
        tail = min(self.interval, max(est.unit, self.interval * TAIL_FLOOR))
        left = est.end - now
        aim = left + min(AIM * est.sigma, AIM_MAX * tail)
        if est.sigma > SURE * tail:
            # Not sure enough of the end: close in, to a poll whose count pins the pace down.
            approach = max(left - Z * est.sigma, left * HALVE)
            if approach > tail:
                plan.tail_polls = 0
                return max(min(approach, self.max_interval), min(approach, self._fair_share()))
        if aim > 0:
            # Just after the predicted end, where a poll most likely finds the job done (and
            # otherwise shows how few units are left).
            plan.tail_polls = 0
            return max(min(aim, self.max_interval), min(aim, self._fair_share()), tail * TAIL_MIN)
        # Overrunning the prediction: back off gently so a stalled job stops costing much.
        plan.tail_polls += 1
        # (The exponent is bounded: a job stalled for days must not overflow the float.)
        return min(
            self.max_interval, tail * TAIL_MIN * self.growth ** min(max(0, plan.tail_polls - 2), 64)
        )

    def _fair_share(self) -> float:
        """The gap at which every planned job together stays within the poll budget."""
        return len(self._plans) / (self.rate * BUDGET_SHARE)

    def _jittered(self, gap: float) -> float:
        return gap * (1.0 - self.jitter * self._rng.random())
