"""The simulated Reader back end: jobs, runs, pages and credits, without I/O.

`Engine` is a state machine driven by simulated time. `advance(now)` runs every step due up to
`now` and returns the `Notice` values the step produced (a job started, a page finished, a job
completed...); the async shell turns notices into SSE frames and webhook deliveries.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

__all__ = ["TIERS", "Engine", "Notice", "Step", "Tier", "iso_time"]

JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
JOB_FAILURE_MESSAGE = "Job failed: the browser pool crashed while processing this job"
PAGE_ERRORS = (
    "Navigation timeout of 30000 ms exceeded",
    "HTTP 503 Service Unavailable",
    "net::ERR_CONNECTION_RESET",
)


@attrs.frozen(kw_only=True)
class Tier:
    """The limits of one Reader plan."""

    name: str
    rpm: int
    concurrency: int
    credits: int


TIERS: Mapping[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier(name="free", rpm=10, concurrency=2, credits=1_000),
        Tier(name="pro", rpm=60, concurrency=10, credits=5_000),
        Tier(name="business", rpm=200, concurrency=50, credits=50_000),
        Tier(name="enterprise", rpm=1_000, concurrency=200, credits=500_000),
    )
}

StepKind = Literal["page", "page_error", "fail", "pause"]


@attrs.frozen(kw_only=True)
class Step:
    """One step of a scripted job timeline.

    Attributes:
        kind: ``page`` (a page succeeds), ``page_error`` (a page fails, the job goes on),
            ``fail`` (the whole job fails) or ``pause`` (nothing happens).
        delay: simulated seconds after the previous step (or after the job started); None = the
            job's page interval.
        url: the page's URL (``page``/``page_error``); None = a generated one.
        error: the message of a failed page or job; None = a default message.
    """

    kind: StepKind = attrs.field(
        validator=attrs.validators.in_(("page", "page_error", "fail", "pause"))
    )
    delay: float | None = None
    url: str | None = None
    error: str | None = None


NoticeKind = Literal[
    "started", "progress", "page", "page_error", "completed", "failed", "cancelled", "credit_low"
]


@attrs.frozen(kw_only=True)
class Notice:
    """Something that happened in the engine, for streams and webhooks to report.

    `data` is the wire payload: a snapshot ``{status, completed, total, ...}`` for job notices,
    the ``results[]`` entry for ``page`` / ``page_error``, the credits object for ``credit_low``.
    """

    kind: NoticeKind
    job_id: str | None
    run: int
    data: Mapping[str, Any]


def iso_time(epoch: float, seconds: float) -> str:
    """Format `epoch + seconds` (unix time) as ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(epoch + seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@attrs.define(kw_only=True)
class _Job:
    id: str
    mode: Literal["batch", "crawl"]
    rng: random.Random
    created_at: float
    interval: float
    formats: tuple[str, ...]
    pending: deque[tuple[str, int]]
    known: set[str]
    max_depth: int = 0
    max_pages: int = 0
    steps: deque[Step] | None = None
    fail_at: int | None = None
    status: JobStatus = "queued"
    run: int = 1
    next_at: float | None = None
    token: int = -1
    error: str | None = None
    results: list[dict[str, Any]] = attrs.Factory(list)
    credits_used: int = 0
    started_at: float | None = None
    completed_at: float | None = None
    webhook: Mapping[str, Any] | None = None

    @property
    def total(self) -> int:
        return len(self.known) if self.mode == "crawl" else len(self.results) + len(self.pending)

    def snapshot(self) -> dict[str, Any]:
        return {"status": self.status, "completed": len(self.results), "total": self.total}


class Engine:
    """Jobs, their runs and pages, and the workspace's credits, in simulated time."""

    def __init__(
        self,
        *,
        seed: int = 0,
        tier: Tier = TIERS["pro"],
        epoch: float = 0.0,
        page_interval: float = 0.5,
        start_delay: float = 0.1,
        page_failure_p: float = 0.0,
        job_failure_p: float = 0.0,
    ) -> None:
        self.tier = tier
        self.epoch = epoch
        self.page_interval = page_interval
        self.start_delay = start_delay
        self.page_failure_p = page_failure_p
        self.job_failure_p = job_failure_p
        self.credits_limit = tier.credits
        self.credits_used = 0
        self._seed = seed
        self._ids = random.Random(seed)
        self._jobs: dict[str, _Job] = {}
        self._credit_low_sent = False
        self._notices: list[Notice] = []
        self._due: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    # -- reading -----------------------------------------------------------------------------

    def has_job(self, job_id: str) -> bool:
        """Whether a job with this id exists."""
        return job_id in self._jobs

    def status(self, job_id: str) -> str:
        """The job's status."""
        return self._jobs[job_id].status

    def summary(self, job_id: str) -> dict[str, Any]:
        """The job as a ``JobSummary`` (the body of a 201)."""
        job = self._jobs[job_id]
        return {
            "id": job.id,
            "status": job.status,
            "mode": job.mode,
            "total": job.total,
            "completed": len(job.results),
            "creditsUsed": job.credits_used,
            "createdAt": self.iso(job.created_at),
        }

    def detail(self, job_id: str, skip: int, limit: int) -> tuple[dict[str, Any], int]:
        """The job as a ``JobDetail`` with one page of results, and the number of results."""
        job = self._jobs[job_id]
        detail = self.summary(job_id)
        detail.update(
            error=job.error,
            results=job.results[skip : skip + limit],
            startedAt=None if job.started_at is None else self.iso(job.started_at),
            completedAt=None if job.completed_at is None else self.iso(job.completed_at),
        )
        return detail, len(job.results)

    def snapshot(self, job_id: str) -> dict[str, Any]:
        """``{status, completed, total}`` of the job."""
        return self._jobs[job_id].snapshot()

    def inline_webhook(self, job_id: str) -> Mapping[str, Any] | None:
        """The webhook given with the job's creation request, if any."""
        return self._jobs[job_id].webhook

    def active_jobs(self) -> int:
        """How many jobs are queued or processing (what the concurrency cap counts)."""
        return sum(job.status not in TERMINAL for job in self._jobs.values())

    def credits(self) -> dict[str, Any]:
        """The workspace's ``Credits`` object."""
        return {
            "balance": self.credits_limit - self.credits_used,
            "limit": self.credits_limit,
            "used": self.credits_used,
            "tier": self.tier.name,
            "resetAt": self.iso(30 * 86_400.0),
        }

    def iso(self, seconds: float) -> str:
        """ISO 8601 form of a simulated time."""
        return iso_time(self.epoch, seconds)

    # -- changing ----------------------------------------------------------------------------

    def create_job(
        self,
        now: float,
        *,
        urls: Sequence[str] = (),
        crawl: tuple[int, int] | None = None,
        formats: Iterable[str] = ("markdown",),
        page_interval: float | None = None,
        steps: Sequence[Step] | None = None,
        webhook: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue a batch job over `urls`, or a crawl of ``urls[0]`` when `crawl` is
        ``(max_depth, max_pages)``, or a scripted job when `steps` is given; return its id."""
        job_id = f"job_{self._ids.getrandbits(40):010x}"
        rng = random.Random(f"{self._seed}/{job_id}")
        if steps is not None:
            urls = _scripted_urls(steps)
        job = _Job(
            id=job_id,
            mode="crawl" if crawl else "batch",
            rng=rng,
            created_at=now,
            interval=self.page_interval if page_interval is None else page_interval,
            formats=tuple(formats),
            pending=deque((url, 0) for url in urls),
            known=set(urls),
            steps=None if steps is None else deque(steps),
            webhook=webhook,
        )
        if crawl is not None:
            job.max_depth, job.max_pages = crawl
        if steps is None and rng.random() < self.job_failure_p:
            job.fail_at = rng.randrange(max(1, len(urls)))
        self._jobs[job_id] = job
        self._schedule(job, now + self.start_delay)
        return job_id

    def cancel(self, job_id: str, now: float) -> None:
        """Stop a queued or processing job; results so far stay readable."""
        job = self._jobs[job_id]
        job.status = "cancelled"
        job.completed_at = now
        self._schedule(job, None)
        self._notify("cancelled", job, job.snapshot())

    def failed_urls(self, job_id: str) -> list[str]:
        """The URLs a retry would queue again: failed pages, then never-attempted ones."""
        job = self._jobs[job_id]
        failed = [entry["url"] for entry in job.results if "error" in entry]
        return failed + [url for url, _ in job.pending]

    def retry(self, job_id: str, now: float) -> int:
        """Start a new run of a finished job over its failed URLs; return how many."""
        job = self._jobs[job_id]
        urls = self.failed_urls(job_id)
        depth = {url: d for url, d in job.pending}
        job.results = [entry for entry in job.results if "error" not in entry]
        job.pending = deque((url, depth.get(url, 0)) for url in urls)
        job.steps, job.fail_at, job.error = None, None, None
        job.status, job.run = "queued", job.run + 1
        job.started_at = job.completed_at = None
        self._schedule(job, now + self.start_delay)
        return len(urls)

    def scrape(self, url: str, now: float, formats: Iterable[str]) -> dict[str, Any]:
        """A synchronous scrape of one URL: the ``ScrapeResult``, charged one credit."""
        rng = random.Random(f"{self._seed}/scrape/{url}")
        page = _page(url, rng, self.iso(now), tuple(formats))
        metadata = page.pop("metadata")
        metadata.update(cached=False, proxyEscalated=False, description=None)
        self._charge(1)
        return {
            "url": url,
            **{k: page[k] for k in ("markdown", "html") if k in page},
            "metadata": metadata,
        }

    def set_credits(self, *, used: int | None = None, limit: int | None = None) -> None:
        """Override the credit counters (an admin control)."""
        if limit is not None:
            self.credits_limit = limit
        if used is not None:
            self.credits_used = used
        self._credit_low_sent = self._credit_is_low()

    # -- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The simulated time of the next due step, or None when every job is idle."""
        # Entries go stale when a job is rescheduled or stopped; drop them lazily.
        while self._due and self._jobs[self._due[0][2]].token != self._due[0][1]:
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None

    def advance(self, now: float) -> list[Notice]:
        """Run every step due up to `now`, in time order; return what happened since the last
        call (including what `cancel` and `scrape` did)."""
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, job_id = heapq.heappop(self._due)
            self._step(self._jobs[job_id], deadline)
        notices, self._notices = self._notices, []
        return notices

    def _schedule(self, job: _Job, at: float | None) -> None:
        job.next_at, job.token = at, next(self._seq)
        if at is not None:
            heapq.heappush(self._due, (at, job.token, job.id))

    def _step(self, job: _Job, at: float) -> None:
        if job.status == "queued":
            self._start(job, at)
        elif job.steps:
            self._scripted_step(job, job.steps.popleft(), at)
        elif job.steps is not None or not job.pending:
            self._finish(job, at)
        else:
            self._random_step(job, at)

    def _start(self, job: _Job, at: float) -> None:
        job.status, job.started_at = "processing", at
        self._schedule(job, at + self._delay(job))
        self._notify("started", job, job.snapshot())
        self._notify("progress", job, job.snapshot())

    def _delay(self, job: _Job) -> float:
        if job.steps:
            delay = job.steps[0].delay
            return job.interval if delay is None else delay
        return job.interval * job.rng.uniform(0.5, 1.5)

    def _scripted_step(self, job: _Job, step: Step, at: float) -> None:
        if step.kind == "fail":
            self._fail(job, at, step.error or JOB_FAILURE_MESSAGE)
            return
        if step.kind == "page":
            self._record(job, at, job.pending.popleft()[0], None)
        elif step.kind == "page_error":
            self._record(job, at, job.pending.popleft()[0], step.error or PAGE_ERRORS[0])
        self._schedule(job, at + self._delay(job) if job.steps else at)

    def _random_step(self, job: _Job, at: float) -> None:
        if job.fail_at == len(job.results):
            self._fail(job, at, JOB_FAILURE_MESSAGE)
            return
        url, depth = job.pending.popleft()
        failed = job.rng.random() < self.page_failure_p
        self._record(job, at, url, job.rng.choice(PAGE_ERRORS) if failed else None)
        if job.mode == "crawl" and not failed and depth < job.max_depth:
            self._discover(job, url, depth + 1)
        self._schedule(job, at + self._delay(job) if job.pending else at)

    def _discover(self, job: _Job, url: str, depth: int) -> None:
        for n in range(job.rng.randint(2, 6)):
            if len(job.known) >= job.max_pages:
                return
            child = f"{url.rstrip('/')}/section-{n + 1}"
            if child not in job.known:
                job.known.add(child)
                job.pending.append((child, depth))

    def _record(self, job: _Job, at: float, url: str, error: str | None) -> None:
        if error is None:
            entry = _page(url, job.rng, self.iso(at), job.formats)
            job.credits_used += 1
            self._charge(1)
            kind: NoticeKind = "page"
        else:
            entry = {
                "url": url,
                "error": error,
                "credits": 0,
                "metadata": {"scrapedAt": self.iso(at)},
            }
            kind = "page_error"
        job.results.append(entry)
        self._notify(kind, job, entry)
        self._notify("progress", job, job.snapshot())

    def _finish(self, job: _Job, at: float) -> None:
        job.status, job.completed_at = "completed", at
        self._schedule(job, None)
        self._notify("completed", job, {**job.snapshot(), "creditsUsed": job.credits_used})

    def _fail(self, job: _Job, at: float, error: str) -> None:
        job.status, job.completed_at, job.error = "failed", at, error
        self._schedule(job, None)
        self._notify("failed", job, {"status": "failed", "error": error})

    def _charge(self, credits: int) -> None:
        self.credits_used += credits
        if not self._credit_low_sent and self._credit_is_low():
            self._credit_low_sent = True
            self._notices.append(Notice(kind="credit_low", job_id=None, run=0, data=self.credits()))

    def _credit_is_low(self) -> bool:
        return self.credits_limit - self.credits_used < self.credits_limit / 10

    def _notify(self, kind: NoticeKind, job: _Job, data: Mapping[str, Any]) -> None:
        self._notices.append(Notice(kind=kind, job_id=job.id, run=job.run, data=data))


def _scripted_urls(steps: Sequence[Step]) -> list[str]:
    pages = [step for step in steps if step.kind in ("page", "page_error")]
    return [
        step.url or f"https://example.com/scripted/page-{n + 1}" for n, step in enumerate(pages)
    ]


_WORDS = (
    "reader simulated content page crawl batch job result markdown section example data "
    "progress stream webhook archive index article topic overview guide notes"
).split()


def _page(
    url: str, rng: random.Random, scraped_at: str, formats: tuple[str, ...]
) -> dict[str, Any]:
    path = urlsplit(url).path.strip("/") or "home"
    title = path.rsplit("/", 1)[-1].replace("-", " ").title()
    paragraphs = [
        " ".join(rng.choices(_WORDS, k=rng.randint(12, 30))).capitalize() + "."
        for _ in range(rng.randint(1, 3))
    ]
    entry: dict[str, Any] = {"url": url}
    if "markdown" in formats:
        entry["markdown"] = f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n"
    if "html" in formats:
        body = "".join(f"<p>{text}</p>" for text in paragraphs)
        entry["html"] = (
            f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"
        )
    entry.update(
        statusCode=200,
        proxyMode="standard",
        credits=1,
        metadata={
            "title": title,
            "statusCode": 200,
            "duration": rng.randint(150, 1500),
            "proxyMode": "standard",
            "scrapedAt": scraped_at,
        },
    )
    return entry
