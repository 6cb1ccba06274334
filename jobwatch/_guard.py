"""The ordering guard: pure functions of (state, event) → verdict, and dedup keys bound to runs.

The guard decides; a :class:`~jobwatch.abc.Store` applies the verdict atomically and drops
keys it has already seen. Rules, per job and run:

- status never moves backwards (queued → processing → terminal);
- a progress count lower than one already delivered is stale; a progress event without a
  count is a status change, delivered once per status;
- after the terminal event no ``started`` or ``progress`` of that run is delivered, and a
  pushed event that contradicts the terminal state asks for one confirming poll;
- where the API numbers its attempts, an event of a higher attempt starts a new run whatever
  transport reported it, and an event of an older attempt is dropped;
- for events without an attempt, a polled snapshot (authoritative) that is not terminal after a
  terminal one starts a new run — unless it was requested before that run's end was recorded
  (``as_of`` against the state's ``updated_at``, both wall-clock times, so that this holds
  across the processes sharing a store);
- a new run's events have new keys;
- events of kinds that carry data (:attr:`EventKind.carries_data`) are delivered even when
  late; only duplicates are dropped.
"""

from __future__ import annotations

import attrs

from ._events import (
    _RANK,
    _TERMINAL_KINDS,
    _TERMINAL_STATUSES,
    EventKind,
    JobEvent,
    JobStatus,
    _slot_setters,
)
from ._state import JobState, make_state
from .abc import Verdict

__all__ = ["decide", "qualify"]

# Members and properties of the enums, read once: every event goes through these checks.
_STARTED, _PROGRESS = EventKind.STARTED, EventKind.PROGRESS
_CARRY_DATA = frozenset(kind for kind in EventKind if kind.carries_data)
# Verdicts are immutable: the drops are the same value every time.
_BACKWARDS = Verdict(event=None, dropped="backwards")
_STALE = Verdict(event=None, dropped="stale")
_DUPLICATE = Verdict(event=None, dropped="duplicate")
_OLD_ATTEMPT = Verdict(event=None, dropped="old-attempt")
_AFTER_TERMINAL = {
    (check, reason): Verdict(event=None, check=check, dropped=reason)
    for check in (False, True)
    for reason in ("duplicate", "after-terminal")
}

_VERDICT_SETTERS = _slot_setters(Verdict, ("event", "state", "check", "dropped"))
_new = object.__new__
# The suffixes of the first runs, made once (most jobs never have a second run).
_KEPT = 16
_SUFFIXES = tuple(f"#{run}" for run in range(_KEPT))


def _delivered(event: JobEvent, state: JobState | None) -> Verdict:
    """``Verdict(event=event, state=state)``, built through the slots' own setters."""
    verdict = _new(Verdict)
    set_event, set_state, set_check, set_dropped = _VERDICT_SETTERS
    set_event(verdict, event)
    set_state(verdict, state)
    set_check(verdict, False)
    set_dropped(verdict, None)
    return verdict


def qualify(event: JobEvent, run: int) -> JobEvent:
    """The event with its key bound to the job's run, so a retried job's events are new."""
    if event.job_id is None:
        return event
    return event.with_key(event.key + (_SUFFIXES[run] if run < _KEPT else f"#{run}"))


def run_of(key: str) -> int | None:
    """The run a key bound by :func:`qualify` names (``job_1:terminal#2``: 2); None for a key
    bound to no run (a workspace event's)."""
    _, bound, run = key.rpartition("#")
    return int(run) if bound and run.isdigit() else None


def _new_run(state: JobState, attempt: int | None = None) -> JobState:
    return JobState(job_id=state.job_id, run=state.run + 1, attempt=attempt, watched=state.watched)


def _advance(state: JobState, event: JobEvent, now: float | None) -> JobState:
    """The job's state once ``event`` is delivered (built like ``JobState(...)``, faster),
    stamped ``now`` (wall clock) when given."""
    status = state.status
    new = event.status
    if new is not None and (status is None or _RANK[new] > _RANK[status]):
        status = new
    completed = state.completed
    count = event.completed
    if count is not None and (completed is None or count > completed):
        completed = count
    terminal = event.kind in _TERMINAL_KINDS
    return make_state(
        state.job_id,
        state.run,
        state.attempt if event.attempt is None else event.attempt,
        new if terminal else status,
        completed,
        state.total if event.total is None else event.total,
        state.started or event.kind is _STARTED,
        state.terminal or terminal,
        state.watched,
        state.updated_at if now is None else now,
    )


def decide(
    state: JobState | None,
    event: JobEvent,
    *,
    authoritative: bool = False,
    as_of: float | None = None,
    now: float | None = None,
) -> Verdict:
    """Decide whether ``event`` is delivered, given the job's saved ``state``.

    ``authoritative``: the event comes from a polled snapshot, requested at ``as_of`` (wall
    clock; None: unknown, taken as fresh). ``now`` (wall clock) stamps the state's
    ``updated_at`` when the event changes it.
    """
    job_id = event.job_id
    if job_id is None:
        return Verdict(event=event)
    if state is None:
        state = JobState(job_id=job_id)
    saved = state
    # Attempts, where both sides know one, decide runs; otherwise only a poll may begin one.
    attempt = event.attempt
    numbered = False
    if attempt is not None:
        known = state.attempt
        if known is not None:
            numbered = True
            if attempt < known:
                return _OLD_ATTEMPT  # a late report of a run that a newer attempt replaced
            if attempt > known:
                state = _new_run(state, attempt)
    kind = event.kind
    if kind in _CARRY_DATA:
        # Data is delivered even when late and moves no status or count; it may still begin a
        # run (a higher attempt) or name the run's attempt.
        if attempt is not None and state.attempt is None:
            state = attrs.evolve(state, attempt=attempt)
        return Verdict(event=qualify(event, state.run), state=None if state is saved else state)
    status: JobStatus | None = event.status
    if (
        state.terminal
        and authoritative
        and not numbered
        and status is not None
        and status not in _TERMINAL_STATUSES
    ):
        if as_of is not None and as_of <= state.updated_at:
            # Requested before the end was recorded (here or by another process sharing the
            # store): it shows the run that ended, not a new one, and asks for no check.
            return _AFTER_TERMINAL[False, "after-terminal"]
        state = _new_run(state, attempt)  # a polled snapshot shows the job going again
    if state.terminal:
        return _after_terminal(state, event, numbered)
    if status is not None and state.status is not None and kind not in _TERMINAL_KINDS:
        if _RANK[status] < _RANK[state.status]:
            return _BACKWARDS
        if event.completed is None and status is state.status and kind is _PROGRESS:
            return _DUPLICATE  # a status change without a count, already delivered
    if (
        kind is _PROGRESS
        and event.completed is not None
        and state.completed is not None
        and event.completed < state.completed
    ):
        return _STALE
    if kind is _STARTED and state.started:
        return _DUPLICATE
    run = state.run  # qualify(event, run), inlined: this is the path of every new event
    key = event.key + (_SUFFIXES[run] if run < _KEPT else f"#{run}")
    return _delivered(event.with_key(key), _advance(state, event, now))


def _after_terminal(state: JobState, event: JobEvent, numbered: bool) -> Verdict:
    # A pushed `started`, or progress beyond the final count, hints at a new run (a retry):
    # only a poll may confirm it. Where attempts are numbered, a new run has a higher one, so
    # a report of the same attempt needs no poll.
    contradicts = not numbered and (
        event.kind is _STARTED
        or (
            event.kind is _PROGRESS
            and event.completed is not None
            and (state.completed is None or event.completed > state.completed)
        )
    )
    reason = "duplicate" if event.terminal else "after-terminal"
    return _AFTER_TERMINAL[contradicts, reason]
