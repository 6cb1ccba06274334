"""Values that cross the seams between the core, transports, providers and stores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._events import JobStatus

__all__ = ["Capabilities", "JobState", "Request", "Response", "ResultsPage", "Snapshot"]


@attrs.frozen(kw_only=True)
class Request:
    """An HTTP request a provider asks a transport to make, relative to ``base_url``."""

    method: str = "GET"
    path: str
    params: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Response:
    """An HTTP response as the core hands it to a provider: status, headers, body bytes."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    #: When the request left (the host's clock): what a snapshot in the body is as of.
    sent_at: float | None = None


@attrs.frozen(kw_only=True)
class Capabilities:
    """What an API offers; the policy, the transports and ``jobwatch doctor`` ask this
    instead of assuming one API's shape.

    - ``job_stream`` / ``workspace_stream``: a per-job / a workspace-wide event stream exists
      (the policy never picks ``sse`` for a provider with neither).
    - ``stream_event_ids``: the streams send ``id:`` and resume from ``Last-Event-ID``.
    - ``webhooks``: the provider decodes webhook deliveries (``decode_webhook``); the policy
      never picks ``webhook`` for a provider without them.
    - ``webhook_scheme``: the signature scheme its webhook deliveries use.
    - ``announces_cancellation``: push channels report cancelled jobs; if not, push transports
      need the safety net (``safety_poll``) to learn of a cancellation.
    """

    job_stream: bool = False
    workspace_stream: bool = False
    stream_event_ids: bool = False
    webhooks: bool = False
    webhook_scheme: str = "standard-webhooks"
    announces_cancellation: bool = True

    def offers(self) -> tuple[str, ...]:
        """The built-in transports these capabilities can serve, in their usual order."""
        streams = self.job_stream or self.workspace_stream
        return ("poll", *(("sse",) if streams else ()), *(("webhook",) if self.webhooks else ()))


@attrs.frozen(kw_only=True)
class Snapshot:
    """A job's state as one status request showed it (what polling compares)."""

    job_id: str
    status: JobStatus | None
    raw_status: str
    completed: int | None = None
    total: int | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    @property
    def terminal(self) -> bool:
        """Whether the snapshot shows a job that has stopped."""
        return self.status is not None and self.status.terminal


@attrs.frozen(kw_only=True)
class ResultsPage:
    """One page of a job's results and the request for the next page, if any."""

    items: tuple[Mapping[str, Any], ...]
    next: Request | None = None


@attrs.frozen(kw_only=True)
class JobState:
    """What the core remembers of one job: the ordering guard's state, kept by the Store.

    ``run`` counts runs of the job (a retried job starts run 2). ``attempt`` is the API's own
    attempt number of this run, where its events carry one (None until then). ``completed`` is
    the highest progress count delivered in this run, ``status`` the furthest status,
    ``terminal`` whether the run's terminal event was delivered. ``watched`` marks jobs an
    application asked about, which a restarted Watcher reconciles.
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

