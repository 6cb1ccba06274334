"""A small fictional CI API ("runs") and its provider, written from ``jobwatch.abc`` alone.

The provider classifies nothing itself: it relies on ``Provider.classify``'s standard HTTP
default, as a third-party provider would. :class:`RunsAPI` serves it — to
``httpx.MockTransport`` (:meth:`RunsAPI.handler`) or as an ASGI app on a loopback port — on
anyio's clock, with a ``Date`` header so that Unix times in headers can be measured, an
optional hourly budget in GitHub's ``x-ratelimit-*`` headers (a spent budget answers 403 with
``remaining`` 0), and scripted refusals.
"""

from __future__ import annotations

import email.utils
import json
import random
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import httpx

import jobwatch
from jobwatch import APIError, EventKind, JobEvent, JobStatus, JobwatchError
from jobwatch.abc import (
    Capabilities,
    Provider,
    Request,
    Response,
    ResultsPage,
    Snapshot,
    Transport,
)
from jobwatch.stores.memory import MemoryStore
from jobwatch.transports._serve import lifespan, serve_app
from jobwatch.transports.poll import PollOptions, PollTransport

#: The server's Unix time when anyio's clock reads 0.
EPOCH = 1_800_000_000.0
_STATUS = {
    "queued": JobStatus.QUEUED,
    "in_progress": JobStatus.PROCESSING,
    "completed": JobStatus.COMPLETED,
}

Refusal = tuple[int, dict[str, str]]


class RunsProvider(Provider):
    """The "runs" API: ``GET /runs/{id}``, paged ``GET /runs/{id}/jobs``, a per-run stream."""

    name = "runs"
    capabilities = Capabilities(job_stream=True)

    def __init__(self, config: jobwatch.Config | None = None) -> None:
        self.config = config

    def headers(self) -> Mapping[str, str]:
        return {"authorization": "Bearer runs-token"}

    def status_request(self, job_id: str) -> Request:
        return Request(path=f"/runs/{job_id}")

    def decode_status(
        self, job_id: str, response: Response, previous: Snapshot | None, *, source: str
    ) -> tuple[Snapshot, list[JobEvent]]:
        data = json.loads(response.body)
        status = _STATUS[data["status"]]
        snapshot = Snapshot(job_id=job_id, status=status, raw_status=data["status"], data=data)
        return snapshot, self._events(job_id, status, source, data)

    def _events(
        self, job_id: str, status: JobStatus, source: str, data: Mapping[str, Any]
    ) -> list[JobEvent]:
        if status is JobStatus.COMPLETED:
            return [
                JobEvent(
                    kind=EventKind.COMPLETED,
                    job_id=job_id,
                    status=status,
                    key=f"{job_id}:terminal",
                    source=source,
                    data=data,
                )
            ]
        if status is JobStatus.PROCESSING:
            return [
                JobEvent(
                    kind=EventKind.STARTED,
                    job_id=job_id,
                    status=status,
                    key=f"{job_id}:started",
                    source=source,
                    data=data,
                )
            ]
        return []

    def results_request(self, job_id: str) -> Request:
        return Request(path=f"/runs/{job_id}/jobs", params={"page": "1"})

    def decode_results(self, job_id: str, response: Response) -> ResultsPage:
        data = json.loads(response.body)
        more = data.get("next")
        return ResultsPage(
            items=tuple(data["jobs"]),
            next=None
            if more is None
            else Request(path=f"/runs/{job_id}/jobs", params={"page": str(more)}),
        )

    def job_stream_request(self, job_id: str) -> Request:
        return Request(path=f"/runs/{job_id}/stream")

    def decode_stream_event(
        self, job_id: str | None, event: str, data: str, *, source: str
    ) -> list[JobEvent]:
        assert job_id is not None
        payload = json.loads(data)
        return self._events(job_id, _STATUS[payload["status"]], source, payload)

    def error_for(self, response: Response) -> JobwatchError:
        return APIError(f"the runs API answered HTTP {response.status}", status=response.status)


@attrs.define
class RunsAPI:
    """The server: runs that finish at set times (anyio's clock), every request recorded.

    ``refuse(n, path)``, given the request's number (from 1) and path, may answer instead with
    a status and headers. ``hourly``: a budget of that many requests per hour, announced in
    ``x-ratelimit-*`` headers and enforced with 403s; ``window_ends`` is its first reset.
    """

    ends: dict[str, float] = attrs.Factory(dict)
    pages: int = 3
    refuse: Callable[[int, str], Refusal | None] | None = None
    hourly: int | None = None
    window_ends: float = 3600.0
    times: list[float] = attrs.Factory(list)
    paths: list[str] = attrs.Factory(list)
    statuses: list[int] = attrs.Factory(list)
    _used: int = 0

    def answer(self, path: str, query: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        now = anyio.current_time()
        self.times.append(now)
        self.paths.append(path)
        headers = {
            "date": email.utils.formatdate(EPOCH + now, usegmt=True),
            "content-type": "application/json",
            **self._budget(now),
        }
        scripted = self.refuse(len(self.times), path) if self.refuse else None
        if scripted is not None:
            status, extra = scripted
            answer = (status, {**headers, **extra}, b'{"message": "scripted refusal"}')
        elif self.hourly is not None and self._used > self.hourly:
            answer = (403, headers, b'{"message": "API rate limit exceeded"}')
        else:
            answer = self._route(path, query, now, headers)
        self.statuses.append(answer[0])
        return answer

    def _budget(self, now: float) -> dict[str, str]:
        if self.hourly is None:
            return {}
        while now >= self.window_ends:
            self.window_ends += 3600.0
            self._used = 0
        self._used += 1
        return {
            "x-ratelimit-limit": str(self.hourly),
            "x-ratelimit-remaining": str(max(0, self.hourly - self._used)),
            "x-ratelimit-reset": str(int(EPOCH + self.window_ends)),
        }

    def _route(
        self, path: str, query: Mapping[str, str], now: float, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        parts = path.strip("/").split("/")
        if parts[0] != "runs" or len(parts) < 2 or parts[1] not in self.ends:
            return 404, headers, b'{"message": "Not Found"}'
        run = parts[1]
        if len(parts) == 3 and parts[2] == "jobs":
            page = int(query.get("page", "1"))
            body = {
                "jobs": [{"run": run, "page": page}],
                "next": page + 1 if page < self.pages else None,
            }
            return 200, headers, json.dumps(body).encode()
        status = "completed" if now >= self.ends[run] else "in_progress"
        return 200, headers, json.dumps({"id": run, "status": status}).encode()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        """For ``httpx.MockTransport``."""
        status, headers, body = self.answer(request.url.path, dict(request.url.params))
        return httpx.Response(status, headers=headers, content=body)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        """As an ASGI app; ``/runs/{id}/stream`` sends the run's end as one SSE frame."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path = scope["path"]
        if path.endswith("/stream") and (
            self.refuse is None or self.refuse(len(self.times) + 1, path) is None
        ):
            self.times.append(anyio.current_time())
            self.paths.append(path)
            self.statuses.append(200)
            await self._stream(path.split("/")[2], send)
            return
        query = dict(httpx.QueryParams(scope["query_string"].decode()))
        status, headers, body = self.answer(path, query)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, run: str, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await anyio.sleep_until(self.ends[run])
        frame = f"event: done\ndata: {json.dumps({'status': 'completed'})}\n\n"
        await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})
        await anyio.sleep_forever()


def watcher(
    api: RunsAPI,
    *,
    transports: list[Transport] | None = None,
    base_url: str | None = None,
    **poll: Any,
) -> jobwatch.Watcher:
    """A Watcher of the runs API: through ``httpx.MockTransport``, polling, unless a
    ``base_url`` (a loopback server) and ``transports`` are given."""
    cfg = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": base_url or "http://runs.test",
                "transport": "poll",
                "store": "memory",
                "poll": {"rpm": 1000, **poll},
            }
        }
    )
    if transports is None:
        transports = [PollTransport(cfg.options("poll", PollOptions), rng=random.Random(1))]
    mock = None if base_url else httpx.MockTransport(api.handler)
    return jobwatch.Watcher(
        cfg,
        provider=RunsProvider(cfg),
        transports=transports,
        store=MemoryStore(),
        http_transport=mock,
    )


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1, port 0; yield its base URL."""
    async with anyio.create_task_group() as tg:
        url = await tg.start(serve_app, app, "127.0.0.1", 0)
        try:
            yield url
        finally:
            tg.cancel_scope.cancel()
