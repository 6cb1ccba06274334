"""The ordering guard: pure functions of (state, event) → verdict, and dedup keys bound to runs.

The guard decides; a :class:`~jobwatch.abc.Store` applies the verdict atomically and drops
keys it has already seen. Rules, per job and run:

- status never moves backwards (queued → processing → terminal);
- a progress count lower than one already delivered is stale;
- after the terminal event no ``started`` or ``progress`` of that run is delivered, and a
  pushed event that contradicts the terminal state asks for one confirming poll;
- a polled snapshot (authoritative) that is not terminal after a terminal one starts a new run,
  whose events have new keys;
- page events carry data, so they are delivered even when late; only duplicates are dropped.
"""

from __future__ import annotations

from ._events import (
    _RANK,
    _TERMINAL_KINDS,
    _TERMINAL_STATUSES,
    EventKind,
    JobEvent,
    JobStatus,
    _slot_setters,
)
from ._values import JobState
from .abc import Verdict

__all__ = ["decide", "qualify"]

# Members and properties of the enums, read once: every event goes through these checks.
_STARTED, _PROGRESS = EventKind.STARTED, EventKind.PROGRESS
_PAGES = frozenset({EventKind.PAGE, EventKind.PAGE_FAILED})
# Verdicts are immutable: the drops are the same value every time.
_BACKWARDS = Verdict(event=None, dropped="backwards")
_STALE = Verdict(event=None, dropped="stale")
_DUPLICATE = Verdict(event=None, dropped="duplicate")
_AFTER_TERMINAL = {(check, reason): Verdict(event=None, check=check, dropped=reason)
                   for check in (False, True) for reason in ("duplicate", "after-terminal")}

_STATE_SETTERS = _slot_setters(JobState, ("job_id", "run", "status", "completed", "total",
                                          "started", "terminal", "watched", "updated_at"))
_VERDICT_SETTERS = _slot_setters(Verdict, ("event", "state", "check", "dropped"))
_new = object.__new__


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
    return event.with_key(f"{event.key}#{run}")


def _new_run(state: JobState) -> JobState:
    return JobState(job_id=state.job_id, run=state.run + 1, watched=state.watched)


def _advance(state: JobState, event: JobEvent) -> JobState:
    """The job's state once ``event`` is delivered (built like ``JobState(...)``, faster)."""
    status = state.status
    new = event.status
    if new is not None and (status is None or _RANK[new] > _RANK[status]):
        status = new
    completed = state.completed
    count = event.completed
    if count is not None and (completed is None or count > completed):
        completed = count
    terminal = event.kind in _TERMINAL_KINDS
    advanced = _new(JobState)
    set_job, set_run, set_status, set_completed, set_total, set_started, set_terminal, \
        set_watched, set_updated = _STATE_SETTERS
    set_job(advanced, state.job_id)
    set_run(advanced, state.run)
    set_status(advanced, new if terminal else status)
    set_completed(advanced, completed)
    set_total(advanced, state.total if event.total is None else event.total)
    set_started(advanced, state.started or event.kind is _STARTED)
    set_terminal(advanced, state.terminal or terminal)
    set_watched(advanced, state.watched)
    set_updated(advanced, state.updated_at)
    return advanced


def decide(state: JobState | None, event: JobEvent, *, authoritative: bool = False) -> Verdict:
    """Decide whether ``event`` is delivered, given the job's saved ``state``."""
    job_id = event.job_id
    if job_id is None:
        return Verdict(event=event)
    if state is None:
        state = JobState(job_id=job_id)
    kind = event.kind
    if kind in _PAGES:
        return Verdict(event=qualify(event, state.run))  # pages leave the job's state as it is
    status: JobStatus | None = event.status
    if state.terminal and authoritative and status is not None \
            and status not in _TERMINAL_STATUSES:
        state = _new_run(state)  # a polled snapshot shows the job going again
    if state.terminal:
        return _after_terminal(state, event)
    if status is not None and state.status is not None and kind not in _TERMINAL_KINDS \
            and _RANK[status] < _RANK[state.status]:
        return _BACKWARDS
    if kind is _PROGRESS and event.completed is not None \
            and state.completed is not None and event.completed < state.completed:
        return _STALE
    if kind is _STARTED and state.started:
        return _DUPLICATE
    return _delivered(qualify(event, state.run), _advance(state, event))


def _after_terminal(state: JobState, event: JobEvent) -> Verdict:
    # A pushed `started`, or progress beyond the final count, hints at a new run (a retry):
    # only a poll may confirm it.
    contradicts = event.kind is _STARTED or (
        event.kind is _PROGRESS
        and event.completed is not None
        and (state.completed is None or event.completed > state.completed)
    )
    reason = "duplicate" if event.terminal else "after-terminal"
    return _AFTER_TERMINAL[contradicts, reason]
