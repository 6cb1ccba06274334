"""`Simulator`: the public face of the Reader simulator."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc

from ._app import ASGIApp, make_app
from ._clock import ManualClock
from ._engine import TIERS, Engine, Step
from ._faults import FAULT_NAMES, Faults
from ._service import RequestCounts, Service
from ._webhooks import DeliveryAttempt

__all__ = ["Simulator"]

_NO_FAULTS = Faults()


class Simulator:
    """A local Reader API: jobs progress in simulated time, streams and webhooks report them.

    Serve `app` with `serve` or `running` (which also run `run`, the clock that moves jobs on
    and the webhook sender), or mount it in any ASGI server. Everything is seeded by `seed`,
    so the same requests give the same job ids, pages and injected faults.

    Args:
        api_key: the only key the simulator accepts; any other gets 401 ``unauthenticated``.
        seed: seed of every random choice (ids, page content, pace jitter, fault dice).
        tier: ``free``, ``pro``, ``business`` or ``enterprise``: RPM, active-job cap, credits.
        time_scale: simulated seconds per real second (ignored when `clock` is given).
        faults: the faults to inject, a `Faults` or a spec string (see `Faults.parse`).
        clock: a callable returning simulated seconds, e.g. a `ManualClock`; None = anyio's
            clock times `time_scale`, starting at zero when the simulator first runs.
        page_interval: mean simulated seconds per page (each page takes 0.5-1.5 times it).
        start_delay: simulated seconds a new job stays ``queued``.
        page_failure_p: probability that a page fails (a ``results[]`` entry with ``error``).
        job_failure_p: probability that a job fails as a whole (``status: failed``).
        webhook_attempts: attempts per delivery, the first included.
        webhook_waits: simulated seconds to wait before the 2nd, 3rd... attempt.
        webhook_timeout: real seconds an attempt may take.
        ping_interval: simulated seconds between ``: ping`` comments on open streams.
        epoch: unix time of simulated time zero, for timestamps in payloads; None = the wall
            clock when the simulator is created.
    """

    def __init__(
        self,
        *,
        api_key: str = "rdr_sim",
        seed: int = 0,
        tier: str = "pro",
        time_scale: float = 1.0,
        faults: Faults | str = _NO_FAULTS,
        clock: Callable[[], float] | None = None,
        page_interval: float = 0.5,
        start_delay: float = 0.1,
        page_failure_p: float = 0.0,
        job_failure_p: float = 0.0,
        webhook_attempts: int = 3,
        webhook_waits: Sequence[float] = (1.0, 4.0),
        webhook_timeout: float = 10.0,
        ping_interval: float = 30.0,
        epoch: float | None = None,
    ) -> None:
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        if webhook_attempts < 1:
            raise ValueError(f"webhook_attempts must be at least 1, got {webhook_attempts}")
        # The one wall-clock read: it anchors payload timestamps, never drives logic.
        epoch = time.time() if epoch is None else epoch
        engine = Engine(
            seed=seed,
            tier=TIERS[tier],
            epoch=epoch,
            page_interval=page_interval,
            start_delay=start_delay,
            page_failure_p=page_failure_p,
            job_failure_p=job_failure_p,
        )
        self._service = Service(
            api_key=api_key,
            seed=seed,
            tier=TIERS[tier],
            time_scale=time_scale,
            faults=Faults.parse(faults) if isinstance(faults, str) else faults,
            clock=clock,
            engine=engine,
            epoch=epoch,
            webhook_attempts=webhook_attempts,
            webhook_waits=webhook_waits,
            webhook_timeout=webhook_timeout,
            ping_interval=ping_interval,
        )
        self.app: ASGIApp = make_app(self._service)
        """The ASGI 3 application."""

    @property
    def api_key(self) -> str:
        """The API key the simulator accepts."""
        return self._service.api_key

    @property
    def tier(self) -> str:
        """The simulated plan."""
        return self._service.tier.name

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._service.faults

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Move simulated time on and deliver webhooks until cancelled.

        `serve` and `running` call this; call it yourself only when you serve `app` another
        way. Without it, state still catches up on every request, but streams get no pings and
        no webhook leaves.
        """
        await self._service.run(task_status=task_status)

    def now(self) -> float:
        """Simulated seconds since the simulator started."""
        return self._service.now()

    def advance(self, seconds: float) -> None:
        """Move a `ManualClock` forward; everything due runs before this returns."""
        if not isinstance(self._service.clock, ManualClock):
            raise RuntimeError("advance() needs a simulator created with clock=ManualClock()")
        self._service.clock.advance(seconds)

    def set_faults(self, faults: Faults | str) -> None:
        """Replace the faults in force; bursts and the receiver-down window start now."""
        self._service.set_faults(Faults.parse(faults) if isinstance(faults, str) else faults)
        self._service.wake()

    def fault_counts(self) -> Mapping[str, int]:
        """How many times each fault was injected, keyed by the spec grammar's names."""
        return {name: self._service.counters[name] for name in FAULT_NAMES}

    def request_counts(self) -> RequestCounts:
        """How many requests arrived, by API key, by User-Agent and by endpoint."""
        return self._service.request_counts()

    def deliveries(self) -> tuple[DeliveryAttempt, ...]:
        """Every webhook delivery attempt so far, oldest first."""
        return tuple(self._service.sender.log)

    def create_job(
        self,
        *,
        steps: Sequence[Step] | None = None,
        urls: Sequence[str] = (),
        page_interval: float | None = None,
        webhook: Mapping[str, Any] | None = None,
    ) -> str:
        """Create a batch job directly (no request, no limits) and return its id.

        With `steps`, the job follows that scripted timeline instead of random pages; its
        total is the number of ``page`` and ``page_error`` steps. `webhook` is an inline
        webhook as in ``POST /v1/read`` (``{"url", "events"?, "secret"?}``).
        """
        if steps is None and not urls:
            raise ValueError("create_job needs steps or urls")
        return self._service.create_job(
            urls=urls, steps=steps, page_interval=page_interval, webhook=webhook
        )

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job that is queued or processing (a no-op on a finished one)."""
        self._service.pump()
        if self._service.engine.status(job_id) not in ("completed", "failed", "cancelled"):
            self._service.cancel_job(job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as ``GET /v1/jobs/{id}`` would show it, with every result."""
        self._service.pump()
        detail, _ = self._service.engine.detail(job_id, 0, 2**62)
        return detail

    def set_credits(self, *, used: int | None = None, limit: int | None = None) -> None:
        """Set the workspace's used credits and/or monthly limit."""
        self._service.engine.set_credits(used=used, limit=limit)
