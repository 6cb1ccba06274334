"""What the API fakes share: simulated time, scripted timelines, faults, counters, the gate.

A fake holds its jobs as the API's own JSON objects. Each job follows a timeline of
`FakeStep` values in simulated time; `pump()` applies every step that is due, in time order,
and the fake turns each change into webhook deliveries (and, for Replicate, stream events).
Every request goes through one gate — count it, check the key, answer an injected burst,
apply the API's rate limits — and then one handler per route (`_http`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import unquote

import anyio
import anyio.abc
import attrs

from ..sim import ManualClock, RequestCounts
from ..sim._clock import Timers
from ..transports._serve import lifespan
from ._http import (
    FakeError,
    Receive,
    Reply,
    Request,
    Route,
    Scope,
    Send,
    StreamReply,
    bearer,
    read_request,
    send_reply,
)
from ._webhooks import FakeDelivery, Outgoing, Sender

__all__ = ["FakeAPI", "FakeFaults", "FakeStep", "SlidingWindow"]

_log = logging.getLogger("jobwatch.fakes")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be a number of at least 0, got {value}")


def _probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability between 0 and 1, got {value}")


@attrs.frozen(kw_only=True)
class FakeStep:
    """One step of a fake job's timeline, applied `delay` simulated seconds after the previous
    step (or after the job was created).

    Attributes:
        delay: simulated seconds after the previous step.
        status: the API's own status word the job moves to (``in_progress``, ``succeeded``,
            ...); None leaves it as it is.
        fields: fields of the job to set. A mapping is merged into the field's mapping, so
            ``{"request_counts": {"completed": 5}}`` keeps ``total``.
        output: Replicate only: a chunk of output, appended to ``output`` and streamed as an
            ``output`` event.
        logs: Replicate only: a line of logs, appended to ``logs`` and streamed.
        job: GitHub Actions only: the name of one job of the run; the step moves that job (its
            ``status`` and ``fields``) instead of the run.
    """

    delay: float = attrs.field(default=1.0, validator=_non_negative)
    status: str | None = None
    fields: Mapping[str, Any] = attrs.field(factory=dict)
    output: str | None = None
    logs: str | None = None
    job: str | None = None


@attrs.frozen(kw_only=True)
class FakeFaults:
    """Faults a fake injects on purpose; the default injects none. Dice are seeded.

    Attributes:
        webhook_duplicate_p: probability that a delivery is sent a second time, unchanged.
        webhook_forge_p: probability that a delivery attempt is signed with a wrong secret.
        stream_cut_after: every stream connection is cut after this many events (Replicate);
            a client resumes with ``Last-Event-ID``.
        rate_limit_burst: the next N API requests get the API's rate-limit answer.
        error_burst: the next N API requests are answered 500.

    Reordered deliveries come from `hold_webhooks` and ``release_webhooks(reverse=True)``.
    """

    webhook_duplicate_p: float = attrs.field(default=0.0, validator=_probability)
    webhook_forge_p: float = attrs.field(default=0.0, validator=_probability)
    stream_cut_after: int | None = attrs.field(default=None, validator=_non_negative)
    rate_limit_burst: int = attrs.field(default=0, validator=_non_negative)
    error_burst: int = attrs.field(default=0, validator=_non_negative)


class SlidingWindow:
    """At most `limit` requests in any `seconds` of simulated time."""

    def __init__(self, limit: int, seconds: float = 60.0) -> None:
        self.limit = limit
        self.seconds = seconds
        self._hits: deque[float] = deque()

    def hit(self, now: float) -> float | None:
        """Count a request at `now`; over the limit, count nothing and return the simulated
        seconds until a request would be allowed."""
        while self._hits and self._hits[0] <= now - self.seconds:
            self._hits.popleft()
        if len(self._hits) < self.limit:
            self._hits.append(now)
            return None
        return self._hits[0] + self.seconds - now

    def remaining(self) -> int:
        """Requests left in the window as of the last `hit`."""
        return max(0, self.limit - len(self._hits))

    def reset_in(self, now: float) -> float:
        """Simulated seconds until the oldest request in the window leaves it."""
        return max(0.0, self._hits[0] + self.seconds - now) if self._hits else 0.0


@attrs.define(kw_only=True)
class _Timeline:
    data: dict[str, Any]
    steps: deque[FakeStep]
    due: float | None


class FakeAPI:
    """The clock, timelines, counters, webhooks and HTTP shell of one fake API."""

    #: The provider (preset) name the fake stands in for.
    provider: ClassVar[str]
    #: The path `base_url` adds to the root URL (the preset's base URL has it too).
    prefix: ClassVar[str] = ""
    #: The secret deliveries are signed with.
    webhook_secret: str
    #: The API's status words, which a step may move a job to.
    statuses: ClassVar[tuple[str, ...]]
    #: The `FakeStep` fields only some APIs have, that this one takes.
    step_extras: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        api_key: str,
        seed: int,
        time_scale: float,
        clock: Callable[[], float] | None,
        faults: FakeFaults | None,
        epoch: float | None,
        webhook_timeout: float,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.api_key = api_key
        self.time_scale = time_scale
        self.clock = clock
        #: The root URL while `running_fake` serves the fake, else None.
        self.url: str | None = None
        # The one wall-clock read: it anchors timestamps, never drives logic. A stated epoch
        # dates the jobs; signatures and Date-relative headers stay on the wall clock.
        self._wall = time.time()
        self.epoch = self._wall if epoch is None else epoch
        self.rng = random.Random(f"{seed}/{self.provider}")
        self.dice = random.Random(f"{seed}/{self.provider}/faults")
        self.counters: Counter[str] = Counter()
        self.timers = Timers()
        self.sender = Sender(self, timeout=webhook_timeout)
        self._timelines: dict[str, _Timeline] = {}
        self._requests: dict[str, Counter[str]] = {k: Counter() for k in ("key", "ua", "route")}
        self._routes = self.routes()
        self._t0: float | None = None
        self._kick: anyio.Event | None = None
        self._running = False
        self.set_faults(faults or FakeFaults())
        if isinstance(clock, ManualClock):
            clock.subscribe(self.pump)

    # -- what each fake says -------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        """The API's routes."""
        raise NotImplementedError

    def authenticate(self, request: Request) -> None:
        """Raise the API's 401 (or 400) unless the request may go on."""
        raise NotImplementedError

    def limit(self, request: Request) -> dict[str, str]:
        """Count the request against the API's rate limits: the headers every answer carries,
        or raise the API's rate-limit answer."""
        raise NotImplementedError

    def error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> FakeError:
        """An error in the API's envelope."""
        raise NotImplementedError

    def burst_limited(self) -> FakeError:
        """The API's rate-limit answer, for the ``rate_limit_burst`` fault."""
        raise NotImplementedError

    def apply(self, job_id: str, data: dict[str, Any], step: FakeStep, at: float) -> None:
        """Move one job by one step at simulated time `at`; queue what that sends."""
        raise NotImplementedError

    def sign(self, delivery: Outgoing, forged: bool) -> dict[str, str]:
        """The headers of one delivery attempt, signed (with a wrong secret when `forged`)."""
        raise NotImplementedError

    # -- time ----------------------------------------------------------------------------

    def now(self) -> float:
        """Simulated seconds since the fake started."""
        if self.clock is not None:
            return self.clock()
        return self._real_elapsed() * self.time_scale

    def _real_elapsed(self) -> float:
        try:
            now = anyio.current_time()
        except RuntimeError:  # driven from synchronous code: real time has not started
            return 0.0
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    def unix_time(self) -> float:
        """Wall-clock Unix time, for signatures and ``Date``-relative headers: receivers
        compare those with their own clock, which simulated time (or a stated `epoch`) would
        leave behind."""
        return self._wall + self._real_elapsed()

    def stamp(self, at: float) -> int:
        """Unix seconds of simulated time `at`, for timestamps inside payloads."""
        return int(self.epoch + at)

    def real_seconds(self, simulated: float) -> int:
        """Whole seconds a client waits for `simulated` seconds to pass (at least 1)."""
        scale = self.time_scale if self.clock is None else 1.0
        return max(1, math.ceil(simulated / scale))

    def advance(self, seconds: float) -> None:
        """Move a `ManualClock` forward; every step due runs before this returns."""
        if not isinstance(self.clock, ManualClock):
            raise RuntimeError("advance() needs a fake created with clock=ManualClock()")
        self.clock.advance(seconds)

    def pump(self) -> None:
        """Apply every step due by now, in time order, then every timer due."""
        now = self.now()
        while (found := self._next_due(now)) is not None:
            job_id, timeline = found
            at = timeline.due
            assert at is not None
            step = timeline.steps.popleft()
            timeline.due = at + timeline.steps[0].delay if timeline.steps else None
            self.apply(job_id, timeline.data, step, at)
        self.timers.run_due(now)

    def _next_due(self, now: float) -> tuple[str, _Timeline] | None:
        due = [
            (t.due, job_id)
            for job_id, t in self._timelines.items()
            if t.due is not None and t.due <= now
        ]
        if not due:
            return None
        job_id = min(due)[1]
        return job_id, self._timelines[job_id]

    def _next_deadline(self) -> float | None:
        deadlines = [t.due for t in self._timelines.values() if t.due is not None]
        timer = self.timers.next_deadline()
        if timer is not None:
            deadlines.append(timer)
        return min(deadlines, default=None)

    async def sleep_until(self, when: float) -> None:
        """Sleep until simulated time `when`."""
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

    def wake(self) -> None:
        """Make `run` look at its deadlines again."""
        if self._kick is not None:
            self._kick.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Move simulated time on and send webhooks until cancelled (`running_fake` does)."""
        if self._running:
            raise RuntimeError(f"this {type(self).__name__} is already running")
        self._running = True
        self.now()  # simulated time zero is the start of the run
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.sender.run)
                task_status.started()
                while True:
                    self._kick = anyio.Event()
                    self.pump()
                    with anyio.move_on_after(self._real_delay()):
                        await self._kick.wait()
        finally:
            self._running = False
            self._kick = None

    def _real_delay(self) -> float:
        deadline = self._next_deadline()
        if isinstance(self.clock, ManualClock):
            return math.inf
        if self.clock is not None:
            return 0.01  # an opaque clock can only be polled
        if deadline is None:
            return math.inf
        return max(0.0, (deadline - self.now()) / self.time_scale)

    # -- jobs ----------------------------------------------------------------------------

    def _add(self, job_id: str, data: dict[str, Any], steps: Sequence[FakeStep]) -> None:
        self.check_steps(steps)
        self._timelines[job_id] = _Timeline(data=data, steps=deque(), due=None)
        self._follow(job_id, steps)

    def check_steps(self, steps: Sequence[FakeStep]) -> None:
        """Raise ValueError for a step this API cannot take, before any of it runs."""
        for index, step in enumerate(steps):
            if step.status is not None and step.status not in self.statuses:
                raise ValueError(
                    f"steps[{index}]: {step.status!r} is no {self.provider} status; "
                    f"the statuses are {', '.join(self.statuses)}"
                )
            for extra in ("output", "logs", "job"):
                if getattr(step, extra) is not None and extra not in self.step_extras:
                    raise ValueError(
                        f"steps[{index}]: the {self.provider} fake takes no {extra}= in a step"
                    )

    def _follow(self, job_id: str, steps: Sequence[FakeStep]) -> None:
        """Replace the steps left in a job's timeline with `steps`, starting now."""
        self.check_steps(steps)
        timeline = self._timelines[job_id]
        timeline.steps = deque(steps)
        timeline.due = self.now() + steps[0].delay if steps else None
        self.wake()

    def _data(self, job_id: str) -> dict[str, Any]:
        timeline = self._timelines.get(job_id)
        if timeline is None:
            raise KeyError(f"no job {job_id!r} in this {type(self).__name__}")
        return timeline.data

    def job(self, job_id: str) -> dict[str, Any]:
        """A copy of the job as its status request shows it now."""
        self.pump()
        copy: dict[str, Any] = json.loads(json.dumps(self.render(self._data(job_id), self.url)))
        return copy

    def render(self, data: dict[str, Any], base: str | None) -> dict[str, Any]:
        """A job as the API answers it from `base` (None: the API's public URL)."""
        return data

    def has_job(self, job_id: str) -> bool:
        """Whether the fake holds a job with this id."""
        return job_id in self._timelines

    def steps_left(self, job_id: str) -> int:
        """How many steps of the job's timeline have not run yet."""
        self.pump()
        return len(self._timelines[job_id].steps)

    @staticmethod
    def merge(data: dict[str, Any], fields: Mapping[str, Any]) -> None:
        """Set `fields` on `data`, merging a mapping into the mapping already there."""
        for key, value in fields.items():
            if isinstance(value, Mapping) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = json.loads(json.dumps(value))

    # -- faults, counters, webhooks --------------------------------------------------------

    def set_faults(self, faults: FakeFaults) -> None:
        """Put `faults` in force; the bursts start counting again."""
        self.faults = faults
        self._bursts = {
            "error_burst": faults.error_burst,
            "rate_limit_burst": faults.rate_limit_burst,
        }

    def chance(self, name: str, probability: float) -> bool:
        """A seeded coin that lands true with `probability`; counted under `name`."""
        hit = probability > 0 and self.dice.random() < probability
        if hit:
            self.counters[name] += 1
        return hit

    def fault_counts(self) -> Mapping[str, int]:
        """How many times each fault was injected, keyed by `FakeFaults` attribute names."""
        names = [field.name for field in attrs.fields(FakeFaults)]
        return {name: self.counters[name] for name in names}

    def request_counts(self) -> RequestCounts:
        """How many requests arrived, by bearer token, by User-Agent and by route."""
        return RequestCounts(
            by_api_key=dict(self._requests["key"]),
            by_user_agent=dict(self._requests["ua"]),
            by_endpoint=dict(self._requests["route"]),
        )

    def deliveries(self) -> tuple[FakeDelivery, ...]:
        """Every webhook delivery attempt so far, oldest first."""
        return tuple(self.sender.log)

    async def delivered(self, count: int) -> tuple[FakeDelivery, ...]:
        """Wait until `count` delivery attempts were made (answered or not); return them all.

        Wrap it in ``anyio.fail_after``: it waits for as long as it takes.
        """
        await self.sender.logged(count)
        return self.deliveries()

    def hold_webhooks(self) -> None:
        """Keep new deliveries back until `release_webhooks`."""
        self.sender.hold()

    def release_webhooks(self, *, reverse: bool = False) -> None:
        """Send the deliveries held back, in the order they were made or newest first."""
        self.sender.release(reverse=reverse)

    def redeliver(self, delivery_id: str) -> None:
        """Send a delivery again, same id and body, signed anew (a manual redelivery)."""
        self.sender.redeliver(delivery_id)

    def delivery_id(self) -> str:
        """A fresh (seeded) delivery id."""
        return f"msg_{self.rng.getrandbits(96):024x}"

    # -- HTTP ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What ``[jobwatch] base_url`` is while the fake is served: its URL and API prefix."""
        if self.url is None:
            raise RuntimeError(
                f"this {type(self).__name__} is not being served: "
                "use `async with running_fake(fake):` first"
            )
        return self.url + self.prefix

    def config(self, **jobwatch: Any) -> dict[str, Any]:
        """A document for `jobwatch.Config.from_mapping` that watches this fake with the
        provider it stands in for.

        It sets ``provider``, ``base_url``, ``api_key``, ``store = "memory"``, the webhook
        secret the fake signs with, and the provider's own table; keyword arguments are more
        ``[jobwatch]`` keys and win over these (a ``webhook`` table is merged).
        """
        webhook = {"secrets": [self.webhook_secret], **jobwatch.pop("webhook", {})}
        body = {
            "provider": self.provider,
            "base_url": self.base_url,
            "api_key": self.api_key,
            "store": "memory",
            **self.tables(),
            "webhook": webhook,
            **jobwatch,
        }
        return {"jobwatch": body}

    def tables(self) -> dict[str, Any]:
        """The provider's own configuration tables."""
        return {}

    def handle(self, request: Request) -> Reply | StreamReply:
        """Answer one request, through the gate."""
        self.pump()
        route, params = self._match(request)
        self._count(request, route)
        try:
            if route is None:
                raise self.error(404, f"no route for {request.method} {request.path}")
            headers: dict[str, str] = {}
            if route.auth:
                self.authenticate(request)
                self._burst()
                headers = self.limit(request)
            reply = route.handler(attrs.evolve(request, params=params))
            return attrs.evolve(reply, headers={**headers, **reply.headers})
        except FakeError as error:
            return Reply(status=error.status, body=error.body, headers=error.headers)

    def _match(self, request: Request) -> tuple[Route | None, dict[str, str]]:
        for route in self._routes:
            found = route.pattern.match(request.path)
            if found is not None and route.method == request.method:
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None, {}

    def _count(self, request: Request, route: Route | None) -> None:
        self._requests["key"][bearer(request.headers)] += 1
        self._requests["ua"][request.headers.get("user-agent", "")] += 1
        endpoint = route.template if route is not None else "?"
        self._requests["route"][f"{request.method} {endpoint}"] += 1

    def _burst(self) -> None:
        for name in ("error_burst", "rate_limit_burst"):
            if self._bursts[name] > 0:
                self._bursts[name] -= 1
                self.counters[name] += 1
                if name == "error_burst":
                    raise self.error(500, "the server had an error while processing the request")
                raise self.burst_limited()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 application."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = f"req_{self.rng.getrandbits(64):016x}"
        try:
            reply = self.handle(await read_request(scope, receive))
        except Exception:  # a bug of the fake: still answer as the API would
            _log.exception(
                "the %s fake failed on %s %s", self.provider, scope["method"], scope["path"]
            )
            reply = Reply(status=500, body=self.error(500, "internal error").body)
        await send_reply(reply, request_id, receive, send)
