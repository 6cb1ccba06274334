"""Dedup and the per-job ordering guard: pure functions of (state, event) → verdict.

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

from ._events import EventKind, JobEvent
from ._values import JobState
from .abc import Verdict

__all__ = ["decide", "qualify"]


def qualify(event: JobEvent, run: int) -> JobEvent:
    """The event with its key bound to the job's run, so a retried job's events are new."""
    if event.job_id is None:
        return event
    return event.with_key(f"{event.key}#{run}")


def _new_run(state: JobState) -> JobState:
    return JobState(job_id=state.job_id, run=state.run + 1, watched=state.watched)


def _advance(state: JobState, event: JobEvent) -> JobState:
    status = state.status
    if event.status is not None and (status is None or event.status.rank > status.rank):
        status = event.status
    completed = state.completed
    if event.completed is not None and (completed is None or event.completed > completed):
        completed = event.completed
    terminal = event.terminal
    return JobState(
        job_id=state.job_id, run=state.run,
        status=event.status if terminal else status,
        completed=completed,
        total=state.total if event.total is None else event.total,
        started=state.started or event.kind is EventKind.STARTED,
        terminal=state.terminal or terminal,
        watched=state.watched, updated_at=state.updated_at,
    )


def decide(state: JobState | None, event: JobEvent, *, authoritative: bool = False) -> Verdict:
    """Decide whether ``event`` is delivered, given the job's saved ``state``."""
    if event.job_id is None:
        return Verdict(event=event)
    if state is None:
        state = JobState(job_id=event.job_id)
    if event.kind in (EventKind.PAGE, EventKind.PAGE_FAILED):
        return Verdict(event=qualify(event, state.run))  # pages leave the job's state as it is
    reopens = event.status is not None and not event.status.terminal
    if state.terminal and authoritative and reopens:
        state = _new_run(state)
    if state.terminal:
        return _after_terminal(state, event)
    if event.status is not None and state.status is not None and not event.terminal \
            and event.status.rank < state.status.rank:
        return Verdict(event=None, dropped="backwards")
    if event.kind is EventKind.PROGRESS and event.completed is not None \
            and state.completed is not None and event.completed < state.completed:
        return Verdict(event=None, dropped="stale")
    if event.kind is EventKind.STARTED and state.started:
        return Verdict(event=None, dropped="duplicate")
    return Verdict(event=qualify(event, state.run), state=_advance(state, event))


def _after_terminal(state: JobState, event: JobEvent) -> Verdict:
    # A pushed `started`, or progress beyond the final count, hints at a new run (a retry):
    # only a poll may confirm it.
    contradicts = event.kind is EventKind.STARTED or (
        event.kind is EventKind.PROGRESS
        and event.completed is not None
        and (state.completed is None or event.completed > state.completed)
    )
    reason = "duplicate" if event.terminal else "after-terminal"
    return Verdict(event=None, check=contradicts, dropped=reason)
