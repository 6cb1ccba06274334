"""The ``poll`` transport: ask the API for each watched job's status, as rarely as will do.

Each poll is the provider's cheapest status request (``Provider.status_request``), made
through :meth:`TransportHost.request` and so drawn from the Watcher's one request budget.
The provider decodes the answer into a :class:`~jobwatch.abc.Snapshot` and the events since the
previous snapshot of that job, which are delivered as authoritative. When to poll which job is
decided by the sans-I/O :class:`~jobwatch.transports._schedule.PollSchedule` (see
``docs/polling.md``).

Every answer is what the provider's ``classify`` says it is, and errors stay per job: a
rate-limited answer defers the poll (the host has paused the whole budget, so every poller
waits); "retry later", network failures and undecodable answers back that job off
exponentially; "gone" and "fatal" end that job's watch with the API's error, so that its
``watch()``/``wait()`` raise it — never the Watcher.

Configuration, ``[jobwatch.poll]``::

    interval = 2.0       # first gap between polls of a job, and the longest near its end
    max_interval = 30.0  # longest gap otherwise (unless the budget cannot carry it)
    rpm = 60             # the Watcher's request budget, shared by every request it makes
    rph = 5000           # and an hourly one, for APIs that count by the hour (default: none)
"""

from __future__ import annotations

import logging
import math
import random
import time

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from .._budget import BudgetOptions, RequestBudget
from .._config import Config
from .._errors import APIError, ConfigError, JobwatchError, NetworkError
from .._http import Classification, Outcome, Response
from .._state import Snapshot
from ..abc import Transport, TransportHost
from ._schedule import PollSchedule

__all__ = ["PollOptions", "PollTransport"]

log = logging.getLogger("jobwatch.poll")

#: Polls waiting on the budget or the network at once; more would only pin stale choices.
MAX_IN_FLIGHT = 4


@attrs.frozen(kw_only=True)
class PollOptions(BudgetOptions):
    """The ``[jobwatch.poll]`` table.

    ``interval``: seconds between the first polls of a job, and the longest gap near its
    predicted end. ``max_interval``: the longest gap otherwise. ``rpm`` and ``rph``: the
    Watcher's request budget, per minute and per hour, for every request it makes (polls,
    results, reconciles, stream openings) — :class:`~jobwatch._budget.BudgetOptions`.
    """

    interval: float = 2.0
    max_interval: float = 30.0

    def check(self, table: str = "[jobwatch.poll]") -> PollOptions:
        """Return the options, or raise ConfigError naming the key that is out of range."""
        super().check(table)
        for key in ("interval", "max_interval"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{table} {key} must be positive, got {getattr(self, key)!r}")
        if self.max_interval < self.interval:
            raise ConfigError(
                f"[jobwatch.poll] max_interval ({self.max_interval}) must be >= "
                f"interval ({self.interval})"
            )
        return self


class PollTransport(Transport):
    """Polls every watched job on a schedule that closes in on its predicted end.

    ``rng`` seeds the schedule's jitter (tests). Counters in ``Watcher.statistics()``, under
    ``transports["poll"]``: ``requests``, ``errors``, ``rate_limited``, ``ended``.
    """

    name = "poll"
    push = False

    def __init__(
        self, options: PollOptions | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.options = (options if options is not None else PollOptions()).check()
        self.schedule = PollSchedule(
            interval=self.options.interval,
            max_interval=self.options.max_interval,
            rpm=self.options.rpm,
            rng=rng,
        )
        self._snapshots: dict[str, Snapshot] = {}
        self._arrived: set[str] = set()
        self._in_flight = 0
        #: Wall clock minus the event loop's, read once when the loop starts: what an API's
        #: times are moved by onto the schedule's clock (once, so that a test's virtual clock
        #: and a simulator stamping from it agree however long the test really takes).
        self._wall_offset = 0.0
        self._wakeup: anyio.Event | None = None

    @classmethod
    def from_config(cls, config: Config) -> PollTransport:
        return cls(config.options("poll", PollOptions))

    def watch(self, job_id: str) -> None:
        if job_id not in self.schedule:
            self._arrived.add(job_id)
            self._wake()

    def unwatch(self, job_id: str) -> None:
        self._arrived.discard(job_id)
        self.schedule.remove(job_id)
        self._snapshots.pop(job_id, None)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``; a new job, a removed one or a finished poll cut it short."""
        self._wakeup = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wakeup.wait()

    # -- the loop -----------------------------------------------------------------------------

    async def run(
        self, host: TransportHost, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        budget = host.budget if isinstance(host.budget, RequestBudget) else None
        self._wall_offset = time.time() - anyio.current_time()
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                await self._step(host, tg, budget)

    async def _step(self, host: TransportHost, tg: TaskGroup, budget: RequestBudget | None) -> None:
        now = anyio.current_time()
        for job_id in self._arrived:
            self.schedule.add(job_id, now)
        self._arrived.clear()
        if self._in_flight >= MAX_IN_FLIGHT:
            await self._sleep(math.inf)
            return
        # Choose only when the budget has room, so that a scarce budget goes to the most
        # urgent job of that moment, not of the moment a poll was queued.
        wait = 0.0
        if budget is not None:
            self.schedule.share(budget.rate)  # the windows may have learnt a lower limit
            wait = budget.delay(now)
        picked = self.schedule.pick(now) if wait <= 0 else None
        if picked is None:
            due = self.schedule.next_due()
            await self._sleep(max(wait, (math.inf if due is None else due - now), 0.0))
            return
        self._in_flight += 1
        tg.start_soon(self._poll, host, picked)
        await anyio.lowlevel.checkpoint()

    async def _poll(self, host: TransportHost, job_id: str) -> None:
        try:
            response = await self._request(host, job_id)
            if response is not None and job_id in self.schedule:
                await self._handle(host, job_id, response)
        finally:
            self._in_flight -= 1
            self._wake()

    async def _request(self, host: TransportHost, job_id: str) -> Response | None:
        try:
            response = await host.request(host.provider.status_request(job_id))
        except NetworkError as exc:
            host.count(self.name, "errors")
            self.schedule.failed(job_id, anyio.current_time())
            # A host that stays unreachable is said again at the 2nd, 4th, 8th... failure in
            # a row, not only once and then never.
            streak = self.schedule.failures(job_id)
            if streak > 1 and streak & (streak - 1) == 0:
                log.warning(
                    "poll of job %s failed %d times in a row, still backing off: %s",
                    job_id,
                    streak,
                    exc,
                )
            else:
                log.info("poll of job %s failed, backing off: %s", job_id, exc)
            return None
        host.count(self.name, "requests")
        return response

    # -- outcomes -----------------------------------------------------------------------------

    async def _handle(self, host: TransportHost, job_id: str, response: Response) -> None:
        now = anyio.current_time()
        verdict = host.provider.classify(response)
        if verdict.outcome is not Outcome.FINE:
            self._refused(host, job_id, response, verdict, now)
            return
        try:
            snapshot, events = host.provider.decode_status(
                job_id, response, self._snapshots.get(job_id), source=self.name
            )
        except JobwatchError as exc:
            # DecodeError, or an error envelope behind a 2xx: retry later, it may pass.
            host.count(self.name, "errors")
            log.warning("poll of job %s: %s; retrying with backoff", job_id, exc)
            self.schedule.failed(job_id, now)
            return
        try:
            await host.deliver(events, authoritative=True, as_of=response.sent_at)
        except JobwatchError as exc:
            # The store failed: poll again later. The snapshot is not kept, so that the next
            # one derives the same events again.
            host.count(self.name, "store_errors")
            log.warning("could not record the poll of job %s, backing off: %s", job_id, exc)
            self.schedule.failed(job_id, now)
            return
        if job_id in self.schedule:  # not unwatched while its events were being recorded
            self._snapshots[job_id] = snapshot
            started = snapshot.started_at
            if started is not None:
                started -= self._wall_offset  # onto the schedule's clock
            self.schedule.observe(job_id, now, snapshot, started=started)

    def _refused(
        self,
        host: TransportHost,
        job_id: str,
        response: Response,
        verdict: Classification,
        now: float,
    ) -> None:
        if verdict.outcome is Outcome.RATE_LIMITED:
            host.count(self.name, "rate_limited")
            # The host paused the whole budget; the job simply waits its turn.
            budget = host.budget if isinstance(host.budget, RequestBudget) else None
            until = max(
                now + (verdict.wait or 0.0), budget.paused_until if budget is not None else now
            )
            if until > now:
                self.schedule.defer(job_id, until)
            else:  # no wait named and no budget pausing: back off rather than ask again now
                self.schedule.failed(job_id, now)
            return
        error = host.provider.error_for(response)
        if verdict.outcome is Outcome.RETRY:
            host.count(self.name, "errors")
            log.info("poll of job %s: %s; backing off", job_id, error)
            self.schedule.failed(job_id, now, wait=verdict.wait)
            return
        host.count(self.name, "ended")
        self.unwatch(job_id)
        host.end_job(job_id, _for_job(job_id, error))


def _for_job(job_id: str, error: JobwatchError) -> JobwatchError:
    """The API's error, its message naming the job (what a script's traceback shows)."""
    if isinstance(error, APIError):
        named = type(error)(
            f"job {job_id}: {error}",
            status=error.status,
            code=error.code,
            retry_after=error.retry_after,
            request_id=error.request_id,
        )
        return named
    return error
