"""A fake of GitHub Actions workflow runs: the run and its jobs, rate limits, ``workflow_run``
webhooks signed with ``X-Hub-Signature-256``, re-runs as new attempts of the same run id."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from ..transports._signatures import GitHubScheme
from ._fake_api import FakeAPI, FakeFaults, FakeStep, SlidingWindow
from ._http import FakeError, Reply, Request, Route
from ._http import bearer as _bearer
from ._webhooks import Outgoing

__all__ = ["GitHubActionsFake"]

API_VERSION = "2022-11-28"
STATUSES = ("requested", "queued", "pending", "waiting", "in_progress", "completed")
CONCLUSIONS = (
    "success",
    "failure",
    "neutral",
    "cancelled",
    "skipped",
    "timed_out",
    "action_required",
    "stale",
    "startup_failure",
)
_DOCS = "https://docs.github.com/rest"
_HOUR = 3600.0
#: The webhook action a run's new status sends; other statuses send none.
_ACTIONS = {"in_progress": "in_progress", "completed": "completed"}


class GitHubActionsFake(FakeAPI):
    """GitHub's workflow-run API for one repository on loopback, in simulated time.

    Serve it with `running_fake`; point the ``github-actions`` provider at `base_url` with
    `api_key` and ``repository`` (or use `config`). `create_run` starts a run; `rerun` makes
    a new attempt of a completed one. With `webhook_url` set, the repository's hook gets
    ``workflow_run`` deliveries (``requested``, ``in_progress``, ``completed``) and `ping`,
    signed with `webhook_secret`; like GitHub, a failed delivery is never retried
    (`redeliver` sends one again by hand).

    Args:
        api_key: the only token accepted (``Authorization: Bearer`` or ``token``); any
            other gets 401 ``Bad credentials``.
        repository: ``OWNER/REPO``; runs of any other repository are 404.
        seed: seed of ids, secrets and fault dice.
        time_scale: simulated seconds per real second (ignored when `clock` is given).
        clock: a callable returning simulated seconds, e.g. ``jobwatch.sim.ManualClock()``.
        faults: the faults to inject (``rate_limit_burst`` answers with the secondary limit).
        rate_limit: the primary limit, requests per simulated hour from the first request;
            past it, 403 with ``x-ratelimit-remaining: 0`` until ``x-ratelimit-reset``.
        secondary_rpm: requests per minute before the secondary limit answers
            `secondary_status` with ``retry-after``; None = no secondary limit.
        secondary_status: 403 or 429.
        webhook_url: where the repository's hook delivers; None = nowhere.
        webhook_secret: the hook's secret; None = a seeded one.
        webhook_timeout: real seconds a delivery attempt may take.
        epoch: Unix time of simulated time zero; None = now.
    """

    provider = "github-actions"
    statuses = STATUSES
    step_extras = frozenset({"job"})

    def __init__(
        self,
        *,
        api_key: str = "ghp_fake",
        repository: str = "octo-org/octo-repo",
        seed: int = 0,
        time_scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        faults: FakeFaults | None = None,
        rate_limit: int = 5000,
        secondary_rpm: int | None = None,
        secondary_status: int = 403,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_timeout: float = 10.0,
        epoch: float | None = None,
    ) -> None:
        owner, slash, name = repository.partition("/")
        if not (owner and slash and name) or "/" in name:
            raise ValueError(f"repository must be OWNER/REPO, got {repository!r}")
        if secondary_status not in (403, 429):
            raise ValueError(f"secondary_status must be 403 or 429, got {secondary_status}")
        super().__init__(
            api_key=api_key,
            seed=seed,
            time_scale=time_scale,
            clock=clock,
            faults=faults,
            epoch=epoch,
            webhook_timeout=webhook_timeout,
        )
        self.repository = repository
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret or f"gh-hook-{self.rng.getrandbits(96):024x}"
        self.rate_limit = rate_limit
        self._secondary = None if secondary_rpm is None else SlidingWindow(secondary_rpm)
        self._secondary_status = secondary_status
        self._window: tuple[float, int] | None = None  # primary: (start, used)
        self._repo = {
            "id": self.rng.randrange(10**8, 10**9),
            "name": name,
            "full_name": repository,
            "private": False,
            "owner": {"login": owner, "id": self.rng.randrange(10**6, 10**7)},
            "html_url": f"https://github.com/{repository}",
        }
        self._hook_id = self.rng.randrange(10**8, 10**9)
        self._jobs: dict[str, list[list[dict[str, Any]]]] = {}  # run id -> attempts -> jobs
        self._schemes = {
            False: GitHubScheme([self.webhook_secret]),
            True: GitHubScheme([self.webhook_secret + "-forged"]),
        }

    def tables(self) -> dict[str, Any]:
        return {"github-actions": {"repository": self.repository}}

    # -- runs ----------------------------------------------------------------------------

    def create_run(
        self,
        *,
        outcome: str = "success",
        jobs: Sequence[str] = ("build", "test"),
        steps: Sequence[FakeStep] | None = None,
        workflow: str = "CI",
    ) -> str:
        """Create a ``queued`` run (sending ``workflow_run.requested``) and return its id.

        It follows `steps`, or else a default timeline that ends with the conclusion
        `outcome`. The run's `jobs` go ``in_progress`` with it and complete with it unless a
        step moves them (``FakeStep(job="build", status="completed", ...)``).
        """
        steps = self.timeline(outcome, jobs) if steps is None else steps
        self.check_steps(steps)
        _check_jobs(steps, jobs)
        self.pump()
        run_id = str(self.rng.randrange(10**9, 10**10))
        now = self._iso(self.now())
        data: dict[str, Any] = {
            "id": int(run_id),
            "name": workflow,
            "node_id": f"WFR_{run_id}",
            "head_branch": "main",
            "head_sha": f"{self.rng.getrandbits(160):040x}",
            "path": ".github/workflows/ci.yml",
            "display_title": f"{workflow} run {run_id}",
            "run_number": len(self._jobs) + 1,
            "event": "push",
            "status": "queued",
            "conclusion": None,
            "workflow_id": self.rng.randrange(10**6, 10**7),
            "html_url": f"https://github.com/{self.repository}/actions/runs/{run_id}",
            "created_at": now,
            "updated_at": now,
            "run_attempt": 1,
            "run_started_at": now,
        }
        self._jobs[run_id] = [self._new_jobs(run_id, 1, jobs)]
        self._add(run_id, data, steps)
        self._notify(run_id, "requested")
        return run_id

    @staticmethod
    def timeline(
        outcome: str = "success", jobs: Sequence[str] = ("build", "test")
    ) -> list[FakeStep]:
        """The default timeline of `create_run`: in progress, each job done, the run done."""
        if outcome not in CONCLUSIONS:
            raise ValueError(f"outcome must be one of {', '.join(CONCLUSIONS)}, got {outcome!r}")
        steps = [FakeStep(status="in_progress")]
        for index, name in enumerate(jobs):
            last = index == len(jobs) - 1
            steps.append(
                FakeStep(
                    job=name,
                    status="completed",
                    fields={"conclusion": outcome if last else "success"},
                )
            )
        return steps + [FakeStep(status="completed", fields={"conclusion": outcome})]

    def rerun(
        self, run_id: str, *, outcome: str = "success", steps: Sequence[FakeStep] | None = None
    ) -> int:
        """Re-run a completed run: attempt ``run_attempt + 1`` of the same id, ``queued``
        again with fresh jobs (sending ``workflow_run.requested``). Returns the attempt."""
        data = self._data(run_id)
        self.pump()
        if data["status"] != "completed":
            raise ValueError(f"run {run_id} is {data['status']}: only a completed run is re-run")
        names = [job["name"] for job in self._jobs[run_id][-1]]
        steps = self.timeline(outcome, names) if steps is None else steps
        self.check_steps(steps)
        _check_jobs(steps, names)
        attempt = data["run_attempt"] + 1
        now = self._iso(self.now())
        data.update(
            run_attempt=attempt,
            status="queued",
            conclusion=None,
            updated_at=now,
            run_started_at=now,
        )
        self._jobs[run_id].append(self._new_jobs(run_id, attempt, names))
        self._follow(run_id, steps)
        self._notify(run_id, "requested")
        return int(attempt)

    def cancel(self, run_id: str) -> None:
        """Cancel a run that has not completed: completed, conclusion ``cancelled``, now."""
        if self.job(run_id)["status"] != "completed":
            self._follow(
                run_id, [FakeStep(delay=0, status="completed", fields={"conclusion": "cancelled"})]
            )
            self.pump()

    def _new_jobs(self, run_id: str, attempt: int, names: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {
                "id": self.rng.randrange(10**10, 10**11),
                "run_id": int(run_id),
                "run_attempt": attempt,
                "name": name,
                "status": "queued",
                "conclusion": None,
                "started_at": None,
                "completed_at": None,
                "workflow_name": "CI",
                "html_url": f"https://github.com/{self.repository}/actions/runs/{run_id}/job",
            }
            for name in names
        ]

    def apply(self, job_id: str, data: dict[str, Any], step: FakeStep, at: float) -> None:
        if step.job is not None:
            self._move_job(job_id, step, at)
            return
        before = data["status"]
        if step.status is not None:
            data["status"] = step.status
        self.merge(data, step.fields)
        data["updated_at"] = self._iso(at)
        for job in self._jobs[job_id][-1]:
            self._follow_run(job, data, at)
        if data["status"] != before and data["status"] in _ACTIONS:
            self._notify(job_id, _ACTIONS[data["status"]])

    def _move_job(self, run_id: str, step: FakeStep, at: float) -> None:
        job = next(job for job in self._jobs[run_id][-1] if job["name"] == step.job)
        if step.status is not None:
            job["status"] = step.status
        self.merge(job, step.fields)
        job["started_at"] = job["started_at"] or self._iso(at)
        if job["status"] == "completed":
            job["conclusion"] = job["conclusion"] or "success"
            job["completed_at"] = job["completed_at"] or self._iso(at)

    def _follow_run(self, job: dict[str, Any], run: dict[str, Any], at: float) -> None:
        """A job that no step moved starts with its run and ends with its conclusion."""
        if run["status"] == "in_progress" and job["status"] == "queued":
            job.update(status="in_progress", started_at=self._iso(at))
        if run["conclusion"] is not None and job["status"] != "completed":
            job.update(
                status="completed",
                conclusion=run["conclusion"],
                started_at=job["started_at"] or self._iso(at),
                completed_at=self._iso(at),
            )

    def _iso(self, at: float) -> str:
        return datetime.fromtimestamp(self.stamp(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- webhooks ------------------------------------------------------------------------

    def ping(self) -> None:
        """Send the ``ping`` GitHub sends when a hook is created."""
        if self.webhook_url is None:
            raise RuntimeError("set webhook_url before ping()")
        hook = {
            "type": "Repository",
            "id": self._hook_id,
            "active": True,
            "events": ["workflow_run"],
            "config": {"content_type": "json", "url": self.webhook_url, "insecure_ssl": "0"},
        }
        self._deliver(
            "ping",
            None,
            {"zen": "Keep it logically awesome.", "hook_id": self._hook_id, "hook": hook},
        )

    def _notify(self, run_id: str, action: str) -> None:
        if self.webhook_url is None:
            return
        run = self.render(self._data(run_id), self.url)
        workflow = {"id": run["workflow_id"], "name": run["name"], "path": run["path"]}
        self._deliver(
            f"workflow_run.{action}",
            run_id,
            {"action": action, "workflow_run": run, "workflow": workflow},
        )

    def _deliver(self, event: str, run_id: str | None, body: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        body |= {"repository": self._repo, "sender": {"login": "octocat", "id": 1, "type": "User"}}
        self.sender.enqueue(
            Outgoing(
                id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                event=event,
                job_id=run_id,
                url=self.webhook_url,
                body=json.dumps(body, separators=(",", ":")).encode(),
            )
        )  # no retries, as GitHub

    def sign(self, delivery: Outgoing, forged: bool) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "user-agent": "GitHub-Hookshot/fake",
            "x-github-event": delivery.event.split(".")[0],
            "x-github-delivery": delivery.id,
            "x-github-hook-id": str(self._hook_id),
            "x-github-hook-installation-target-type": "repository",
            "x-github-hook-installation-target-id": str(self._repo["id"]),
        }
        return headers | self._schemes[forged].sign(delivery.body, now=self.unix_time())

    # -- HTTP ----------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        runs = "/repos/{owner}/{repo}/actions/runs/{run_id}"
        return [
            Route(method="GET", template=runs, handler=self._get_run),
            Route(method="GET", template=runs + "/jobs", handler=self._get_jobs),
        ]

    def _run_id(self, request: Request) -> str:
        params = request.params
        run_id = params["run_id"]
        if f"{params['owner']}/{params['repo']}" != self.repository or not self.has_job(run_id):
            raise self.error(404, "Not Found")
        return run_id

    def render(self, data: dict[str, Any], base: str | None) -> dict[str, Any]:
        url = (
            f"{base or 'https://api.github.com'}/repos/{self.repository}/actions/runs/{data['id']}"
        )
        return {
            **data,
            "url": url,
            "jobs_url": f"{url}/jobs",
            "logs_url": f"{url}/logs",
            "rerun_url": f"{url}/rerun",
            "cancel_url": f"{url}/cancel",
            "repository": self._repo,
        }

    def _get_run(self, request: Request) -> Reply:
        return Reply(body=self.render(self._data(self._run_id(request)), request.base_url))

    def _get_jobs(self, request: Request) -> Reply:
        attempts = self._jobs[self._run_id(request)]
        jobs = (
            [job for jobs in attempts for job in jobs]
            if request.query.get("filter") == "all"
            else attempts[-1]
        )
        per_page, page = _int(request.query, "per_page", 30, 100), _int(request.query, "page", 1)
        last = max(1, -(-len(jobs) // per_page))
        shown = jobs[(page - 1) * per_page : page * per_page]
        links = {"prev": page - 1, "next": page + 1, "first": 1, "last": last}
        base = f"{request.base_url}{request.path}"
        query = {k: v for k, v in request.query.items() if k not in ("page", "per_page")}
        link = ", ".join(
            f'<{base}?{urlencode({**query, "per_page": per_page, "page": number})}>; rel="{rel}"'
            for rel, number in links.items()
            if (rel in ("next", "last") and page < last) or (rel in ("prev", "first") and page > 1)
        )
        headers = {"link": link} if link else {}
        return Reply(body={"total_count": len(jobs), "jobs": shown}, headers=headers)

    def authenticate(self, request: Request) -> None:
        if _bearer(request.headers) != self.api_key:
            raise self.error(401, "Bad credentials")
        version = request.headers.get("x-github-api-version", API_VERSION)
        if version != API_VERSION:
            raise self.error(
                400,
                f"Unsupported 'X-GitHub-Api-Version' header: {version!r}. "
                f"Supported versions are: {API_VERSION}",
            )

    def limit(self, request: Request) -> dict[str, str]:
        now = self.now()
        if self._window is None or now >= self._window[0] + _HOUR:
            self._window = (now, 0)
        start, used = self._window
        headers = self._primary_headers(start + _HOUR - now, used)
        if used >= self.rate_limit:
            raise self.error(
                403,
                "API rate limit exceeded for user ID 1. If you reach out to "
                "GitHub Support for help, please include the request ID.",
                headers=headers,
            )
        if self._secondary is not None and (wait := self._secondary.hit(now)) is not None:
            raise self._secondary_limited(self.real_seconds(wait), headers)
        self._window = (start, used + 1)
        return self._primary_headers(start + _HOUR - now, used + 1)

    def _primary_headers(self, reset_in: float, used: int) -> dict[str, str]:
        reset = int(self.unix_time()) + self.real_seconds(reset_in)
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(max(0, self.rate_limit - used)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
        }

    def _secondary_limited(
        self, seconds: int, headers: Mapping[str, str] | None = None
    ) -> FakeError:
        return self.error(
            self._secondary_status,
            "You have exceeded a secondary rate limit. "
            "Please wait a few minutes before you try again.",
            headers={**(headers or {}), "retry-after": str(seconds)},
        )

    def burst_limited(self) -> FakeError:
        return self._secondary_limited(1)

    def error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> FakeError:
        return FakeError(
            status, {"message": message, "documentation_url": _DOCS, "status": str(status)}, headers
        )


def _check_jobs(steps: Sequence[FakeStep], jobs: Sequence[str]) -> None:
    for index, step in enumerate(steps):
        if step.job is not None and step.job not in jobs:
            raise ValueError(
                f"steps[{index}]: the run has no job {step.job!r}; its jobs are "
                f"{', '.join(jobs) or 'none'}"
            )


def _int(query: Mapping[str, str], name: str, default: int, cap: int | None = None) -> int:
    """A positive whole-number query parameter; GitHub falls back and caps rather than fail."""
    text = query.get(name, "")
    value = int(text) if text.isdigit() and int(text) > 0 else default
    return min(value, cap) if cap is not None else value
