"""A job as jobwatch knows it: what a status answer showed (:class:`Snapshot`, a page of
results) and what the store keeps between events (:class:`JobState`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from ._events import JobStatus, _slot_setters
from ._http import Request

__all__ = ["MAX_COUNT", "JobState", "ResultsPage", "Snapshot", "make_state", "seconds"]

#: The largest count (or attempt number) a provider may decode: SQLite's largest INTEGER.
#: Beyond it no durable store could record the event, and a webhook delivery carrying one
#: would be answered 503 on every retry instead of being refused once.
MAX_COUNT = 2**63 - 1


@attrs.frozen(kw_only=True)
class Snapshot:
    """A job's state as one status request showed it (what polling compares).

    ``started_at`` is when the API says the job started (wall clock, seconds since the epoch),
    where its answer says so: the poll schedule times the job's pace from there.
    """

    job_id: str
    status: JobStatus | None
    raw_status: str
    completed: int | None = None
    total: int | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    started_at: float | None = attrs.field(default=None, eq=False)

    @property
    def terminal(self) -> bool:
        """Whether the snapshot shows a job that has stopped."""
        return self.status is not None and self.status.terminal


@attrs.frozen(kw_only=True)
class ResultsPage:
    """One page of a job's results and the request for the next page, if any.

    ``then`` are requests read after the pages ``next`` leads to run out, each with the pages
    its own answers lead to, in order: results the job keeps in several places (a batch's
    output file, then its error file).
    """

    items: tuple[Mapping[str, Any], ...]
    next: Request | None = None
    then: tuple[Request, ...] = ()


@attrs.frozen(kw_only=True)
class JobState:
    """What the core remembers of one job: the ordering guard's state, kept by the Store.

    ``run`` counts runs of the job (a retried job starts run 2). ``attempt`` is the API's own
    attempt number of this run, where its events carry one (None until then). ``completed`` is
    the highest progress count delivered in this run, ``status`` the furthest status,
    ``terminal`` whether the run's terminal event was delivered. ``watched`` marks jobs an
    application asked about, which a restarted Watcher reconciles. ``updated_at`` is when a
    delivered event last changed it (wall clock, seconds since the epoch; 0 if never
    stamped): a polled snapshot requested before a run's end was recorded begins no new run.
    """

    job_id: str
    run: int = 1
    attempt: int | None = None
    status: JobStatus | None = None
    completed: int | None = None
    total: int | None = None
    started: bool = False
    terminal: bool = False
    watched: bool = False
    updated_at: float = 0.0


_STATE_SETTERS = _slot_setters(
    JobState,
    (
        "job_id",
        "run",
        "attempt",
        "status",
        "completed",
        "total",
        "started",
        "terminal",
        "watched",
        "updated_at",
    ),
)


def seconds(when: datetime | None) -> float | None:
    """An API's time as wall-clock seconds since the epoch (a time without a zone taken as
    UTC, as APIs write them); None stays None."""
    if when is None:
        return None
    try:
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def make_state(
    job_id: str,
    run: int,
    attempt: int | None,
    status: JobStatus | None,
    completed: int | None,
    total: int | None,
    started: bool,
    terminal: bool,
    watched: bool,
    updated_at: float,
) -> JobState:
    """``JobState(...)`` with these values, built through the slots' own setters: for the
    guard and the stores, which build one for every event and every job read back."""
    state = object.__new__(JobState)
    (
        set_job,
        set_run,
        set_attempt,
        set_status,
        set_completed,
        set_total,
        set_started,
        set_terminal,
        set_watched,
        set_updated,
    ) = _STATE_SETTERS
    set_job(state, job_id)
    set_run(state, run)
    set_attempt(state, attempt)
    set_status(state, status)
    set_completed(state, completed)
    set_total(state, total)
    set_started(state, started)
    set_terminal(state, terminal)
    set_watched(state, watched)
    set_updated(state, updated_at)
    return state
