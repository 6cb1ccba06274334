"""The simulated service: its state and clockwork, shared by the ASGI app and the façade.

`Service` owns the engine, the limits, the webhook registry and sender, the SSE subscriptions
and the fault state. `pump()` brings everything up to the current simulated time: the engine runs
the steps that are due and each resulting notice becomes SSE frames and webhook deliveries.
Every request pumps first, a `ManualClock` pumps on `advance`, and `run()` pumps whenever the
next step or timer falls due, so state is always as of "now".
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import anyio
import anyio.abc
import attrs

from ._clock import ManualClock, TimerHandle, Timers
from ._engine import Engine, Notice, Step, Tier
from ._faults import Faults
from ._limits import IdempotencyCache, RateWindow
from ._streams import Frame, Subscription
from ._webhooks import (
    SenderHooks,
    Target,
    WebhookRegistry,
    WebhookSender,
    new_delivery,
)

__all__ = ["RequestCounts", "Service"]

#: Events an inline (per-request) webhook gets when its ``events`` are not given.
INLINE_DEFAULT_EVENTS = ("job.completed", "job.failed")

_JOB_FRAMES = {"progress": "progress", "page": "page", "page_error": "error"}
_WORKSPACE_FRAMES = {
    "progress": "job:progress",
    "completed": "job:completed",
    "failed": "job:failed",
}
_WEBHOOK_EVENTS = {
    "started": "job.started",
    "page": "job.page",
    "page_error": "job.page",
    "completed": "job.completed",
    "failed": "job.failed",
    "credit_low": "credit.low",
}


@attrs.frozen(kw_only=True)
class RequestCounts:
    """How many requests the simulator received, three ways (admin routes not included).

    Attributes:
        by_api_key: per ``x-api-key`` value sent (``""`` when none was).
        by_user_agent: per ``User-Agent`` header (``""`` when none was).
        by_endpoint: per route, e.g. ``"GET /v1/jobs/{id}"``; unknown routes as ``"GET ?"``.
    """

    by_api_key: Mapping[str, int]
    by_user_agent: Mapping[str, int]
    by_endpoint: Mapping[str, int]

    @property
    def total(self) -> int:
        """All requests counted."""
        return sum(self.by_endpoint.values())


class Service:
    """State and clockwork of one simulated Reader workspace."""

    def __init__(
        self,
        *,
        api_key: str,
        seed: int,
        tier: Tier,
        time_scale: float,
        faults: Faults,
        clock: Callable[[], float] | None,
        engine: Engine,
        epoch: float,
        webhook_attempts: int,
        webhook_waits: Sequence[float],
        webhook_timeout: float,
        ping_interval: float,
    ) -> None:
        self.api_key = api_key
        self.tier = tier
        self.time_scale = time_scale
        self.engine = engine
        self.epoch = epoch
        self.ping_interval = ping_interval
        self.clock = clock
        self.timers = Timers()
        self.rate = RateWindow(tier.rpm)
        self.idempotency = IdempotencyCache()
        self.rng = random.Random(f"{seed}/sim")
        self.fault_rng = random.Random(f"{seed}/faults")
        self.counters: Counter[str] = Counter()
        self.registry = WebhookRegistry(random.Random(f"{seed}/webhooks"))
        self.sender = WebhookSender(
            hooks=SenderHooks(
                now=self.now,
                sleep_until=self.sleep_until,
                faults=self.get_faults,
                receiver_down=self.receiver_down,
                timestamp=self.timestamp,
                iso=engine.iso,
            ),
            registry=self.registry,
            rng=self.fault_rng,
            counters=self.counters,
            attempts=webhook_attempts,
            waits=webhook_waits,
            timeout=webhook_timeout,
        )
        self._requests: dict[str, Counter[str]] = {k: Counter() for k in ("key", "ua", "endpoint")}
        self._subscriptions: dict[str | None, set[Subscription]] = {}
        self._kick: anyio.Event | None = None
        self._t0: float | None = None
        self._running = False
        self.set_faults(faults, at=0.0)
        if isinstance(clock, ManualClock):
            clock.subscribe(self.pump)

    # -- time --------------------------------------------------------------------------------

    def now(self) -> float:
        """Simulated seconds since the simulator started."""
        if self.clock is not None:
            return self.clock()
        return self._real_elapsed() * self.time_scale

    def _real_elapsed(self) -> float:
        if self._t0 is None:
            self._t0 = anyio.current_time()
        return anyio.current_time() - self._t0

    def timestamp(self) -> int:
        """Unix seconds for ``X-Reader-Timestamp``.

        Real (anyio) time, not simulated time: receivers compare it with their own wall clock,
        which a sped-up simulated clock would leave behind.
        """
        return int(self.epoch + self._real_elapsed())

    def pump(self) -> None:
        """Bring jobs, timers, streams and webhooks up to the current simulated time."""
        now = self.now()
        for notice in self.engine.advance(now):
            self._publish(notice, now)
        self.timers.run_due(now)

    def wake(self) -> None:
        """Make `run()` look at its deadlines again (something new was scheduled)."""
        if self._kick is not None:
            self._kick.set()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` at simulated time `when`."""
        handle = self.timers.call_at(when, callback)
        self.wake()
        return handle

    async def sleep_until(self, when: float) -> None:
        """Sleep until simulated time `when` (needs `run()` running, or a `ManualClock`)."""
        if self.now() >= when:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        handle = self.timers.call_at(when, event.set)
        self.wake()
        try:
            await event.wait()
        finally:
            handle.cancel()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Move time on by itself and deliver webhooks, until cancelled."""
        if self._running:
            raise RuntimeError("this simulator is already running")
        self._running = True
        self.now()  # fix simulated time zero to the start of the run
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.sender.run)
                task_status.started()
                await self._drive()
        finally:
            self._running = False
            self._kick = None
            self.close_streams()

    async def _drive(self) -> None:
        while True:
            self._kick = anyio.Event()
            self.pump()
            with anyio.move_on_after(self._real_delay()):
                await self._kick.wait()

    def _real_delay(self) -> float:
        deadlines = [
            d for d in (self.engine.next_deadline(), self.timers.next_deadline()) if d is not None
        ]
        if isinstance(self.clock, ManualClock):
            return math.inf
        if self.clock is not None:
            return 0.01  # an opaque clock can only be polled
        if not deadlines:
            return math.inf
        return max(0.0, (min(deadlines) - self.now()) / self.time_scale)

    # -- faults ------------------------------------------------------------------------------

    def get_faults(self) -> Faults:
        """The faults in force."""
        return self.faults

    def set_faults(self, faults: Faults, *, at: float | None = None) -> None:
        """Put `faults` in force: bursts restart, the receiver-down window starts now."""
        self.faults = faults
        self.error_burst_left = faults.error_burst
        self.rate_limit_burst_left = faults.rate_limit_burst
        self._faults_since = self.now() if at is None else at

    def receiver_down(self) -> bool:
        """Whether the ``receiver_down`` fault holds at this moment."""
        return self.now() < self._faults_since + self.faults.receiver_down

    def take_burst(self) -> Literal["error_burst", "rate_limit_burst"] | None:
        """Consume one request of a 5xx or 429 burst, if one is in force."""
        if self.error_burst_left > 0:
            self.error_burst_left -= 1
            self.counters["error_burst"] += 1
            return "error_burst"
        if self.rate_limit_burst_left > 0:
            self.rate_limit_burst_left -= 1
            self.counters["rate_limit_burst"] += 1
            return "rate_limit_burst"
        return None

    def chance(self, probability: float) -> bool:
        """A seeded coin that lands true with `probability`."""
        return probability > 0 and self.fault_rng.random() < probability

    # -- requests ----------------------------------------------------------------------------

    def count_request(self, api_key: str, user_agent: str, endpoint: str) -> None:
        """Tally one request."""
        self._requests["key"][api_key] += 1
        self._requests["ua"][user_agent] += 1
        self._requests["endpoint"][endpoint] += 1

    def request_counts(self) -> RequestCounts:
        """A snapshot of the request tallies."""
        return RequestCounts(
            by_api_key=dict(self._requests["key"]),
            by_user_agent=dict(self._requests["ua"]),
            by_endpoint=dict(self._requests["endpoint"]),
        )

    def request_id(self) -> str:
        """A fresh (seeded) ``x-request-id``."""
        return f"req_{self.rng.getrandbits(64):016x}"

    # -- jobs --------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        urls: Sequence[str] = (),
        crawl: tuple[int, int] | None = None,
        formats: Sequence[str] = ("markdown",),
        page_interval: float | None = None,
        steps: Sequence[Step] | None = None,
        webhook: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue a job (see `Engine.create_job`) and return its id."""
        self.pump()
        job_id = self.engine.create_job(
            self.now(),
            urls=urls,
            crawl=crawl,
            formats=formats,
            page_interval=page_interval,
            steps=steps,
            webhook=webhook,
        )
        self.wake()
        return job_id

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job that is still queued or processing."""
        self.engine.cancel(job_id, self.now())
        self.pump()

    def retry_job(self, job_id: str) -> int:
        """Start a new run over the job's failed URLs; return how many."""
        count = self.engine.retry(job_id, self.now())
        self.wake()
        return count

    # -- streams and webhooks ----------------------------------------------------------------

    def subscribe(self, job_id: str | None, first: Sequence[Frame] = ()) -> Subscription:
        """Open a subscription to one job's frames, or the workspace's (None), that starts
        with the `first` frames."""
        subscription = Subscription(self, job_id)
        for frame in first:
            subscription.push(frame)
        self._subscriptions.setdefault(job_id, set()).add(subscription)
        return subscription

    def close_streams(self) -> None:
        """End every open SSE connection (the server is shutting down)."""
        for subscriptions in list(self._subscriptions.values()):
            for subscription in list(subscriptions):
                subscription.close()

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop feeding a subscription."""
        subscriptions = self._subscriptions.get(subscription.job_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:  # else one entry per job ever streamed stays for good
                del self._subscriptions[subscription.job_id]

    def _publish(self, notice: Notice, now: float) -> None:
        if notice.job_id is not None:
            self._to_job_stream(notice)
            self._to_workspace_stream(notice)
        self._to_webhooks(notice, now)

    def _to_job_stream(self, notice: Notice) -> None:
        assert notice.job_id is not None
        if notice.kind in ("completed", "failed", "cancelled"):
            frame = Frame(name="done", data=self.engine.snapshot(notice.job_id), final=True)
        elif notice.kind == "page_error":
            frame = Frame(
                name="error", data={"url": notice.data["url"], "error": notice.data["error"]}
            )
        elif notice.kind in _JOB_FRAMES:
            frame = Frame(name=_JOB_FRAMES[notice.kind], data=notice.data)
        else:
            return
        for subscription in list(self._subscriptions.get(notice.job_id, ())):
            subscription.push(frame)

    def _to_workspace_stream(self, notice: Notice) -> None:
        name = _WORKSPACE_FRAMES.get(notice.kind)
        if name is None:
            return
        data = dict(notice.data)
        if notice.kind == "failed":
            data = {"error": data["error"]}
        frame = Frame(name=name, data={"jobId": notice.job_id, **data})
        for subscription in list(self._subscriptions.get(None, ())):
            subscription.push(frame)

    def _to_webhooks(self, notice: Notice, now: float) -> None:
        event = _WEBHOOK_EVENTS.get(notice.kind)
        if event is None:
            return
        payload = (
            dict(notice.data) if notice.job_id is None else {"jobId": notice.job_id, **notice.data}
        )
        for target in self._targets(event, notice.job_id):
            self.sender.enqueue(new_delivery(self.rng, event, payload, target, now))

    def _targets(self, event: str, job_id: str | None) -> list[Target]:
        targets = self.registry.targets(event)
        inline = None if job_id is None else self.engine.inline_webhook(job_id)
        if inline is not None and event in inline.get("events", INLINE_DEFAULT_EVENTS):
            targets.append(Target(webhook_id=None, url=inline["url"], secret=inline.get("secret")))
        return targets
