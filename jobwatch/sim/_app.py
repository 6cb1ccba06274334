"""The simulator's HTTP surface: a plain ASGI 3 app with Reader's routes and the admin routes.

Every request goes through the same gate: pump simulated time, count the request, check the
API key, apply injected 5xx/429 bursts and the RPM window, replay idempotent POSTs; then one
handler per route. Handlers raise `ApiError` for any error, which becomes Reader's envelope.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.abc
import attrs

from ..transports._serve import lifespan
from ._clock import ManualClock
from ._engine import TERMINAL, Step
from ._faults import Faults
from ._limits import StoredResponse
from ._service import Service
from ._streams import Frame, Subscription
from ._validate import (
    check_read,
    check_webhook_create,
    check_webhook_update,
    is_url,
    query_int,
)
from ._webhooks import MAX_WEBHOOKS

__all__ = ["ASGIApp", "ApiError", "make_app"]

# The types of the ASGI spec, as httpx and the web frameworks declare them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("jobwatch.sim")

DOCS_URL = "https://reader.dev/docs/home/concepts/errors#"
MAX_BODY = 10 * 1024 * 1024
_STATUS = {
    "invalid_request": 400,
    "unauthenticated": 401,
    "insufficient_credits": 402,
    "url_blocked": 403,
    "not_found": 404,
    "conflict": 409,
    "rate_limited": 429,
    "concurrency_limited": 429,
    "internal_error": 500,
    "upstream_unavailable": 502,
    "scrape_timeout": 504,
}


class ApiError(Exception):
    """An error answer in Reader's envelope."""

    def __init__(
        self,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = _STATUS[code] if status is None else status
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The error envelope."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = dict(self.details)
        error["docsUrl"] = DOCS_URL + self.code.replace("_", "-")
        return {"success": False, "error": error}


@attrs.frozen(kw_only=True)
class Request:
    """What a handler sees of an HTTP request."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    base_url: str
    params: Mapping[str, str] = attrs.field(factory=dict)

    def json(self) -> Any:
        """The body as JSON, or a 400."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                "invalid_request",
                "Malformed JSON in request body",
                {
                    "issues": [
                        {"path": "", "code": "invalid_json", "message": "Body is not valid JSON"}
                    ]
                },
            ) from None


@attrs.frozen(kw_only=True)
class Reply:
    """A JSON answer."""

    status: int
    body: Any
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class StreamReply:
    """An SSE answer."""

    subscription: Subscription


Handler = Callable[[Service, Request], Reply | StreamReply]


@attrs.frozen(kw_only=True)
class _Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler


def _route(method: str, template: str, handler: Handler) -> _Route:
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")
    return _Route(method=method, template=template, pattern=pattern, handler=handler)


def _ok(data: Any, status: int = 200, **extra: Any) -> Reply:
    return Reply(status=status, body={"success": True, "data": data, **extra})


def _invalid(issues: list[dict[str, str]], message: str = "Invalid request body") -> ApiError:
    return ApiError("invalid_request", message, {"issues": issues})


def _pagination(request: Request, skip: int, limit: int, total: int) -> dict[str, Any]:
    page: dict[str, Any] = {
        "total": total,
        "skip": skip,
        "limit": limit,
        "hasMore": skip + limit < total,
    }
    if page["hasMore"]:
        page["next"] = f"{request.base_url}{request.path}?skip={skip + limit}&limit={limit}"
    return page


def _page_params(request: Request) -> tuple[int, int]:
    skip = query_int(request.query, "skip", 0, 0, 10**9)
    limit = query_int(request.query, "limit", 20, 1, 100)
    issues = (skip if isinstance(skip, list) else []) + (limit if isinstance(limit, list) else [])
    if issues or isinstance(skip, list) or isinstance(limit, list):
        raise _invalid(issues, "Invalid query parameters")
    return skip, limit


def _job_id(service: Service, request: Request) -> str:
    job_id = request.params["id"]
    if not service.engine.has_job(job_id):
        raise ApiError("not_found", "Job not found")
    return job_id


# -- Reader routes -------------------------------------------------------------------------


def read(service: Service, request: Request) -> Reply:
    """``POST /v1/read``: a sync scrape, a batch job or a crawl job."""
    body = request.json()
    issues = check_read(body)
    if issues:
        raise _invalid(issues)
    formats = body.get("formats") or ["markdown"]
    if "urls" in body:
        _check_can_start(service, len(body["urls"]))
        job_id = service.create_job(urls=body["urls"], formats=formats, webhook=body.get("webhook"))
    elif "maxDepth" in body or "maxPages" in body:
        _check_can_start(service, 1)
        crawl = (body.get("maxDepth", 2), body.get("maxPages", 20))
        job_id = service.create_job(
            urls=[body["url"]], crawl=crawl, formats=formats, webhook=body.get("webhook")
        )
    else:
        _check_credits(service, 1)
        return _ok(service.engine.scrape(body["url"], service.now(), formats))
    return _ok(service.engine.summary(job_id), status=201)


def _check_credits(service: Service, required: int) -> None:
    credits = service.engine.credits()
    if credits["balance"] < required:
        raise ApiError(
            "insufficient_credits",
            f"You need {required} credits but only {max(0, credits['balance'])} are available. "
            "Upgrade your plan or wait for the next billing cycle.",
            {
                "required": required,
                "available": max(0, credits["balance"]),
                "resetAt": credits["resetAt"],
            },
        )


def _check_can_start(service: Service, credits: int) -> None:
    _check_credits(service, credits)
    active, cap = service.engine.active_jobs(), service.tier.concurrency
    if active >= cap:
        raise ApiError(
            "concurrency_limited",
            f"Concurrency limit reached. You have {active} active jobs (limit: {cap}).",
            {"active": active, "max": cap},
        )


def get_job(service: Service, request: Request) -> Reply:
    """``GET /v1/jobs/{id}``: status and one page of results."""
    job_id = _job_id(service, request)
    skip, limit = _page_params(request)
    detail, total = service.engine.detail(job_id, skip, limit)
    return _ok(detail, pagination=_pagination(request, skip, limit, total))


def cancel_job(service: Service, request: Request) -> Reply:
    """``DELETE /v1/jobs/{id}``: cancel, or 409 when the job already finished."""
    job_id = _job_id(service, request)
    status = service.engine.status(job_id)
    if status in TERMINAL:
        raise ApiError("conflict", f"Job is already {status}", {"status": status})
    service.cancel_job(job_id)
    return _ok({"id": job_id, "status": "cancelled"})


def retry_job(service: Service, request: Request) -> Reply:
    """``POST /v1/jobs/{id}/retry``: a new run over the failed URLs of a finished job."""
    job_id = _job_id(service, request)
    status = service.engine.status(job_id)
    if status not in TERMINAL:
        raise ApiError("conflict", f"Job is still {status}", {"status": status})
    if not service.engine.failed_urls(job_id):
        raise ApiError("invalid_request", "Job has no failed URLs to retry")
    _check_can_start(service, 0)
    retrying = service.retry_job(job_id)
    return _ok({"id": job_id, "status": service.engine.status(job_id), "retrying": retrying})


def job_stream(service: Service, request: Request) -> StreamReply:
    """``GET /v1/jobs/{id}/stream``: a snapshot, then frames until ``done``."""
    job_id = _job_id(service, request)
    snapshot = service.engine.snapshot(job_id)
    if snapshot["status"] in TERMINAL:
        first = Frame(name="done", data=snapshot, final=True)
    else:
        first = Frame(name="progress", data=snapshot)
    return StreamReply(subscription=service.subscribe(job_id, [first]))


def events(service: Service, request: Request) -> StreamReply:
    """``GET /v1/events``: the workspace stream; never ends by itself."""
    return StreamReply(subscription=service.subscribe(None))


def create_webhook(service: Service, request: Request) -> Reply:
    """``POST /v1/webhooks``: at most ten; the secret is echoed only here."""
    body = request.json()
    issues = check_webhook_create(body)
    if issues:
        raise _invalid(issues)
    if service.registry.is_full():
        raise ApiError(
            "conflict", f"Maximum of {MAX_WEBHOOKS} webhooks per workspace", {"limit": MAX_WEBHOOKS}
        )
    return _ok(service.registry.create(body, service.engine.iso(service.now())), status=201)


def list_webhooks(service: Service, request: Request) -> Reply:
    """``GET /v1/webhooks``: one page, secrets stripped."""
    skip, limit = _page_params(request)
    hooks, total = service.registry.page(skip, limit)
    return _ok(hooks, pagination=_pagination(request, skip, limit, total))


def update_webhook(service: Service, request: Request) -> Reply:
    """``PATCH /v1/webhooks/{id}``."""
    if service.registry.get(request.params["id"]) is None:
        raise ApiError("not_found", "Webhook not found")
    body = request.json()
    issues = check_webhook_update(body)
    if issues:
        raise _invalid(issues)
    updated = service.registry.update(request.params["id"], body, service.engine.iso(service.now()))
    return _ok(updated)


def delete_webhook(service: Service, request: Request) -> Reply:
    """``DELETE /v1/webhooks/{id}``."""
    if not service.registry.delete(request.params["id"]):
        raise ApiError("not_found", "Webhook not found")
    return _ok({"id": request.params["id"]})


def credits(service: Service, request: Request) -> Reply:
    """``GET /v1/usage/credits``."""
    return _ok(service.engine.credits())


# -- admin routes --------------------------------------------------------------------------


def admin_state(service: Service, request: Request) -> Reply:
    """``GET /_sim/state``: clock, faults and their counters, requests, active jobs."""
    return _ok(
        {
            "now": service.now(),
            "faults": service.faults.to_spec(),
            "faultCounts": dict(service.counters),
            "requests": _requests_json(service),
            "activeJobs": service.engine.active_jobs(),
        }
    )


def _requests_json(service: Service) -> dict[str, Any]:
    counts = service.request_counts()
    return {
        "byApiKey": counts.by_api_key,
        "byUserAgent": counts.by_user_agent,
        "byEndpoint": counts.by_endpoint,
        "total": counts.total,
    }


def admin_requests(service: Service, request: Request) -> Reply:
    """``GET /_sim/requests``: request counts by API key, User-Agent and endpoint."""
    return _ok(_requests_json(service))


def admin_deliveries(service: Service, request: Request) -> Reply:
    """``GET /_sim/deliveries``: every webhook delivery attempt, oldest first."""
    return _ok(
        [
            {
                "deliveryId": a.delivery_id,
                "webhookId": a.webhook_id,
                "event": a.event,
                "url": a.url,
                "attempt": a.attempt,
                "at": a.at,
                "statusCode": a.status_code,
                "error": a.error,
                "ok": a.ok,
                "body": a.body.decode(),
            }
            for a in service.sender.log
        ]
    )


def admin_set_faults(service: Service, request: Request) -> Reply:
    """``PUT /_sim/faults`` with ``{"spec": "..."}``: replace the faults in force."""
    body = request.json()
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, str):
        raise _invalid([{"path": "spec", "code": "invalid_type", "message": "Expected string"}])
    try:
        service.set_faults(Faults.parse(spec))
    except ValueError as exc:
        raise _invalid([{"path": "spec", "code": "custom", "message": str(exc)}]) from None
    return _ok({"faults": service.faults.to_spec()})


def admin_advance(service: Service, request: Request) -> Reply:
    """``POST /_sim/advance`` with ``{"seconds": N}``: move a manual clock."""
    body = request.json()
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if not isinstance(service.clock, ManualClock):
        raise ApiError("conflict", "The simulator does not run on a ManualClock")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise _invalid(
            [
                {
                    "path": "seconds",
                    "code": "invalid_type",
                    "message": "Expected a non-negative number",
                }
            ]
        )
    service.clock.advance(float(seconds))
    return _ok({"now": service.now()})


def admin_create_job(service: Service, request: Request) -> Reply:
    """``POST /_sim/jobs`` with ``{"steps": [...], "pageInterval"?, "urls"?, "webhook"?}``."""
    body = request.json()
    if not isinstance(body, dict):
        raise _invalid([{"path": "", "code": "invalid_type", "message": "Expected object"}])
    steps = _steps(body.get("steps"))
    urls = body.get("urls", [])
    interval = body.get("pageInterval")
    if not (isinstance(urls, list) and all(is_url(u) for u in urls)) or (
        interval is not None and (not isinstance(interval, int | float) or interval < 0)
    ):
        raise _invalid(
            [
                {
                    "path": "urls",
                    "code": "invalid_type",
                    "message": "Expected urls: [url] and pageInterval: number",
                }
            ]
        )
    job_id = service.create_job(
        urls=urls, steps=steps, page_interval=interval, webhook=body.get("webhook")
    )
    return _ok(service.engine.summary(job_id), status=201)


def _steps(raw: Any) -> list[Step] | None:
    if raw is None:
        return None
    try:
        return [
            Step(
                kind=item["kind"],
                delay=item.get("delay"),
                url=item.get("url"),
                error=item.get("error"),
            )
            for item in raw
        ]
    except (TypeError, KeyError, ValueError, AttributeError):
        raise _invalid(
            [
                {
                    "path": "steps",
                    "code": "invalid_type",
                    "message": "Expected [{kind, delay?, url?, error?}]",
                }
            ]
        ) from None


def admin_cancel(service: Service, request: Request) -> Reply:
    """``POST /_sim/jobs/{id}/cancel``: cancel without the 409 check."""
    job_id = _job_id(service, request)
    if service.engine.status(job_id) not in TERMINAL:
        service.cancel_job(job_id)
    return _ok({"id": job_id, "status": service.engine.status(job_id)})


ROUTES = (
    _route("POST", "/v1/read", read),
    _route("GET", "/v1/jobs/{id}", get_job),
    _route("DELETE", "/v1/jobs/{id}", cancel_job),
    _route("POST", "/v1/jobs/{id}/retry", retry_job),
    _route("GET", "/v1/jobs/{id}/stream", job_stream),
    _route("GET", "/v1/events", events),
    _route("POST", "/v1/webhooks", create_webhook),
    _route("GET", "/v1/webhooks", list_webhooks),
    _route("PATCH", "/v1/webhooks/{id}", update_webhook),
    _route("DELETE", "/v1/webhooks/{id}", delete_webhook),
    _route("GET", "/v1/usage/credits", credits),
    _route("GET", "/_sim/state", admin_state),
    _route("GET", "/_sim/requests", admin_requests),
    _route("GET", "/_sim/deliveries", admin_deliveries),
    _route("PUT", "/_sim/faults", admin_set_faults),
    _route("POST", "/_sim/advance", admin_advance),
    _route("POST", "/_sim/jobs", admin_create_job),
    _route("POST", "/_sim/jobs/{id}/cancel", admin_cancel),
)


# -- the gate ------------------------------------------------------------------------------


def _match(method: str, path: str) -> tuple[_Route, dict[str, str]]:
    allowed = []
    for route in ROUTES:
        found = route.pattern.match(path)
        if found is not None:
            if route.method == method:
                return route, found.groupdict()
            allowed.append(route.method)
    if allowed:
        raise ApiError(
            "invalid_request",
            f"Method {method} is not allowed on {path}",
            status=405,
            headers={"allow": ", ".join(allowed)},
        )
    raise ApiError("not_found", f"No route for {method} {path}")


def _endpoint(method: str, path: str) -> str:
    for route in ROUTES:
        if route.pattern.match(path):
            return f"{method} {route.template}"
    return f"{method} ?"


def _gate(service: Service, request: Request) -> None:
    """Authentication, injected bursts and the RPM window, before any handler runs."""
    if request.headers.get("x-api-key") != service.api_key:
        raise ApiError("unauthenticated", "Missing or invalid API key")
    if not request.path.startswith("/v1/"):
        return
    burst = service.take_burst()
    if burst == "error_burst":
        raise ApiError("internal_error", "Internal server error")
    if burst == "rate_limit_burst":
        raise _rate_limited(service, 1)
    retry_after = service.rate.hit(service.now())
    if retry_after is not None:
        raise _rate_limited(service, retry_after)


def _rate_limited(service: Service, retry_after: int) -> ApiError:
    limit = service.rate.limit
    return ApiError(
        "rate_limited",
        f"Rate limit of {limit} requests per 60s exceeded. Retry after {retry_after}s.",
        {"limit": limit, "windowSeconds": 60, "retryAfterSeconds": retry_after},
        headers={"retry-after": str(retry_after)},
    )


def _handle(service: Service, request: Request) -> Reply | StreamReply:
    service.pump()
    if request.path.startswith("/v1/"):
        service.count_request(
            request.headers.get("x-api-key", ""),
            request.headers.get("user-agent", ""),
            _endpoint(request.method, request.path),
        )
    try:
        if request.path.startswith(("/v1/", "/_sim/")):
            _gate(service, request)
        route, params = _match(request.method, request.path)
        key = request.headers.get("x-idempotency-key")
        idempotent = (
            key is not None and request.method == "POST" and request.path.startswith("/v1/")
        )
        if idempotent and (stored := service.idempotency.get(key or "", service.now())) is not None:
            return Reply(status=stored.status, body=json.loads(stored.body))
        reply = route.handler(service, attrs.evolve(request, params=params))
        if idempotent and isinstance(reply, Reply) and reply.status < 300:
            service.idempotency.put(
                key or "",
                service.now(),
                StoredResponse(status=reply.status, body=json.dumps(reply.body).encode()),
            )
        return reply
    except ApiError as error:
        return Reply(status=error.status, body=error.body(), headers=error.headers)


def make_app(service: Service) -> ASGIApp:
    """The ASGI 3 application serving `service`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = service.request_id()
        try:
            reply = _handle(service, await _read_request(scope, receive))
        except ApiError as error:
            reply = Reply(status=error.status, body=error.body())
        except Exception:  # a simulator bug: still answer like Reader would
            _log.exception("the simulator failed to handle %s %s", scope["method"], scope["path"])
            reply = Reply(status=500, body=ApiError("internal_error", "Internal error").body())
        if isinstance(reply, StreamReply):
            await _send_stream(reply, request_id, receive, send)
        else:
            await _send_json(reply, request_id, send)

    return app


async def _read_request(scope: Scope, receive: Receive) -> Request:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError("invalid_request", "Request body too large", status=413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    query = dict(
        parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    )
    host = headers.get("host") or _server(scope)
    return Request(
        method=scope["method"],
        path=scope["path"],
        query=query,
        headers=headers,
        body=b"".join(chunks),
        base_url=f"{scope.get('scheme', 'http')}://{host}",
    )


def _server(scope: Scope) -> str:
    server = scope.get("server") or ("127.0.0.1", 80)
    return f"{server[0]}:{server[1]}"


async def _send_json(reply: Reply, request_id: str, send: Send) -> None:
    body = json.dumps(reply.body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_stream(reply: StreamReply, request_id: str, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )

    async def write(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    finished = False
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
        finished = await reply.subscription.write(write)
        tg.cancel_scope.cancel()
    if finished:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    # Otherwise return with the body unfinished: the server drops the connection, which is
    # what an injected SSE fault should look like to the client.


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
