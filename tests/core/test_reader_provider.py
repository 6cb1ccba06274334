"""The Reader provider: every wire example of reference/reader-api.md, decoded into events.

Each example below is quoted from the reference (or follows its binding "Decisions on the
gaps"); the same fact must get the same key whichever channel reported it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobwatch import (
    APIError,
    AuthenticationError,
    Config,
    DecodeError,
    EventKind,
    JobEvent,
    JobNotFound,
    JobStatus,
    JobwatchError,
    RateLimited,
)
from jobwatch.abc import Provider, Request, Response, Snapshot, WebhookDelivery
from jobwatch.providers.reader import ReaderProvider, _json_object

READER = ReaderProvider()
JOB = "job_9fba2"


def envelope(data: dict[str, Any], **extra: Any) -> Response:
    return Response(status=200, body=json.dumps({"success": True, "data": data, **extra}).encode())


def error_response(status: int, error: dict[str, Any], **headers: str) -> Response:
    body = json.dumps({"success": False, "error": error}).encode()
    return Response(status=status, headers={"x-request-id": "req_1", **headers}, body=body)


def poll(data: dict[str, Any], previous: Snapshot | None = None) -> tuple[Snapshot, list[JobEvent]]:
    return READER.decode_status(JOB, envelope(data), previous, source="poll")


def frame(event: str, data: dict[str, Any] | str, job_id: str | None = JOB) -> list[JobEvent]:
    text = data if isinstance(data, str) else json.dumps(data)
    return READER.decode_stream_event(job_id, event, text, source="sse")


def hook(
    event: str | None,
    body: dict[str, Any] | bytes,
    delivery: str | None = "d-1",
    timestamp: str | None = "1712275200",
) -> WebhookDelivery:
    headers = {"content-type": "application/json", "user-agent": "Reader-Webhook/1.0"}
    if event is not None:
        headers["x-reader-event"] = event
    if delivery is not None:
        headers["x-reader-delivery"] = delivery
    if timestamp is not None:
        headers["x-reader-timestamp"] = timestamp
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return READER.decode_webhook(headers, raw, source="webhook")


def summary(events: list[JobEvent]) -> list[tuple[str, str | None, str | None, int | None]]:
    return [(e.kind.value, e.key, e.status and e.status.value, e.completed) for e in events]


# -- §1.3 GET /v1/jobs/{id} --------------------------------------------------------------------

SNAPSHOT = {
    "id": JOB,
    "status": "processing",
    "mode": "batch",
    "completed": 45,
    "total": 100,
    "creditsUsed": 45,
    "error": None,
    "results": [
        {
            "url": "https://example.com/page-1",
            "markdown": "...",
            "proxyMode": "standard",
            "credits": 1,
            "metadata": {"duration": 410, "statusCode": 200, "scrapedAt": "..."},
        }
    ],
    "startedAt": "2026-04-04T12:00:00Z",
    "completedAt": None,
    "createdAt": "2026-04-04T11:59:58Z",
}
PAGINATION = {"total": 100, "skip": 0, "limit": 20, "hasMore": True}


def test_status_request_is_one_cheap_get() -> None:
    assert READER.status_request(JOB) == Request(path=f"/v1/jobs/{JOB}", params={"limit": "1"})


def test_headers_carry_the_api_key() -> None:
    provider = ReaderProvider(Config.from_mapping({"jobwatch": {"api_key": "rdr_abc"}}))
    assert provider.headers() == {"x-api-key": "rdr_abc"}
    assert READER.headers() == {}


def test_processing_snapshot() -> None:
    snap, events = READER.decode_status(
        JOB, envelope(SNAPSHOT, pagination=PAGINATION), None, source="poll"
    )
    assert (snap.job_id, snap.status, snap.raw_status) == (JOB, JobStatus.PROCESSING, "processing")
    assert (snap.completed, snap.total, snap.terminal) == (45, 100, False)
    assert summary(events) == [
        ("started", f"{JOB}:started", "processing", 45),
        ("progress", f"{JOB}:progress:45", "processing", 45),
    ]
    assert events[0].occurred_at == datetime(2026, 4, 4, 12, 0, tzinfo=UTC)
    assert {e.source for e in events} == {"poll"}
    assert events[1].data["creditsUsed"] == 45 and events[1].total == 100


def test_queued_snapshot_from_the_create_response() -> None:
    # §1.1 201 JobSummary: the same shape as the job's data.
    created = {
        "id": JOB,
        "status": "queued",
        "mode": "batch",
        "total": 3,
        "completed": 0,
        "creditsUsed": 0,
        "createdAt": "2026-04-04T12:00:00Z",
    }
    snap, events = poll(created)
    assert snap.status is JobStatus.QUEUED
    assert summary(events) == [("progress", f"{JOB}:progress:0", "queued", 0)]


def test_unchanged_snapshot_reports_nothing_new() -> None:
    snap, _ = poll(SNAPSHOT)
    again, events = poll(SNAPSHOT, previous=snap)
    assert again == snap
    # `started` stays in every processing snapshot; dedup collapses it.
    assert summary(events) == [("started", f"{JOB}:started", "processing", 45)]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("completed", EventKind.COMPLETED),
        ("failed", EventKind.FAILED),
        ("cancelled", EventKind.CANCELLED),
    ],
)
def test_terminal_snapshot(status: str, kind: EventKind) -> None:
    data = {**SNAPSHOT, "status": status, "completed": 100, "completedAt": "2026-04-04T12:05:00Z"}
    snap, events = poll(data, previous=poll(SNAPSHOT)[0])
    assert snap.terminal
    assert summary(events) == [(kind.value, f"{JOB}:terminal", status, 100)]
    assert events[0].terminal and events[0].occurred_at == datetime(2026, 4, 4, 12, 5, tzinfo=UTC)


def test_results_pages_follow_has_more() -> None:
    assert READER.results_request(JOB) == Request(
        path=f"/v1/jobs/{JOB}", params={"skip": "0", "limit": "100"}
    )
    page = READER.decode_results(JOB, envelope(SNAPSHOT, pagination=PAGINATION))
    assert [item["url"] for item in page.items] == ["https://example.com/page-1"]
    assert page.next == Request(path=f"/v1/jobs/{JOB}", params={"skip": "1", "limit": "100"})
    last = READER.decode_results(
        JOB, envelope(SNAPSHOT, pagination={**PAGINATION, "hasMore": False})
    )
    assert last.next is None


def test_results_without_pagination_end() -> None:
    assert READER.decode_results(JOB, envelope(SNAPSHOT)).next is None


def test_results_must_be_objects() -> None:
    with pytest.raises(DecodeError, match="every entry of 'results' must be an object"):
        READER.decode_results(JOB, envelope({**SNAPSHOT, "results": ["x"]}))


# -- §2.1 per-job stream -----------------------------------------------------------------------


def test_job_stream_request() -> None:
    request = READER.job_stream_request(JOB)
    assert request.path == f"/v1/jobs/{JOB}/stream"
    assert request.headers["accept"] == "text/event-stream"


def test_job_stream_wire_example() -> None:
    # The async-jobs page's wire example, frame by frame.
    assert summary(frame("progress", '{"status":"processing","completed":12,"total":100}')) == [
        ("started", f"{JOB}:started", "processing", 12),
        ("progress", f"{JOB}:progress:12", "processing", 12),
    ]
    (page,) = frame("page", '{"url":"...","markdown":"...","proxyMode":"standard","credits":1}')
    assert (page.kind, page.key, page.status) == (EventKind.PAGE, f"{JOB}:page:...", None)
    assert page.data["markdown"] == "..."
    (done,) = frame("done", '{"status":"completed","completed":100,"total":100}')
    assert (done.kind, done.key, done.completed, done.total) == (
        EventKind.COMPLETED,
        f"{JOB}:terminal",
        100,
        100,
    )


def test_job_stream_error_frame_is_a_failed_page() -> None:
    (event,) = frame("error", {"url": "https://example.com/x", "error": "timeout"})
    assert (event.kind, event.key) == (
        EventKind.PAGE_FAILED,
        f"{JOB}:page_failed:https://example.com/x",
    )
    assert event.data["error"] == "timeout"


def test_job_stream_page_with_an_error_is_a_failed_page() -> None:
    (event,) = frame("page", {"url": "https://example.com/x", "error": "blocked"})
    assert event.kind is EventKind.PAGE_FAILED


def test_job_stream_error_frame_is_failed_even_without_error_text() -> None:
    (event,) = frame("error", {"url": "https://example.com/x"})
    assert event.kind is EventKind.PAGE_FAILED


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("completed", EventKind.COMPLETED),
        ("failed", EventKind.FAILED),
        ("cancelled", EventKind.CANCELLED),
    ],
)
def test_job_stream_done_carries_every_terminal_status(status: str, kind: EventKind) -> None:
    # Decision 6: only polling and the per-job stream see cancellation.
    (event,) = frame("done", {"status": status, "completed": 7, "total": 9})
    assert (event.kind, event.key) == (kind, f"{JOB}:terminal")


def test_job_stream_accepts_prefixed_names() -> None:
    # Decision 4: the API reference's example shows workspace names on the per-job stream.
    prefixed = frame(
        "job:progress", {"jobId": JOB, "status": "processing", "completed": 45, "total": 100}
    )
    bare = frame("progress", {"status": "processing", "completed": 45, "total": 100})
    assert summary(prefixed) == summary(bare)
    (done,) = frame(
        "job:completed",
        {"jobId": JOB, "status": "completed", "completed": 100, "total": 100, "creditsUsed": 100},
    )
    assert (done.kind, done.key) == (EventKind.COMPLETED, f"{JOB}:terminal")
    (page,) = frame("job:page", {"url": "https://example.com/a"})
    assert page.key == f"{JOB}:page:https://example.com/a"
    (error,) = frame("job:error", {"url": "https://example.com/b", "error": "x"})
    assert error.kind is EventKind.PAGE_FAILED


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("job:completed", EventKind.COMPLETED),
        ("job:failed", EventKind.FAILED),
        ("job:cancelled", EventKind.CANCELLED),
    ],
)
def test_job_stream_prefixed_final_frames_imply_their_status(name: str, kind: EventKind) -> None:
    (event,) = frame(name, {"jobId": JOB, "error": "..."})
    assert (event.kind, event.key, event.status) == (kind, f"{JOB}:terminal", kind.value)


def test_job_stream_bare_done_still_needs_a_status() -> None:
    with pytest.raises(DecodeError, match="has no 'status' field"):
        frame("done", {"completed": 3})


def test_job_stream_progress_frame_with_queued_status() -> None:
    assert summary(frame("progress", {"status": "queued", "completed": 0, "total": 5})) == [
        ("progress", f"{JOB}:progress:0", "queued", 0)
    ]


# -- §2.2 workspace stream ---------------------------------------------------------------------


def test_workspace_stream_request() -> None:
    request = READER.workspace_stream_request()
    assert request.path == "/v1/events" and request.headers["accept"] == "text/event-stream"


def test_workspace_stream_wire_example() -> None:
    progress = frame(
        "job:progress",
        '{"jobId":"job_9fba2","status":"processing","completed":45,"total":100}',
        job_id=None,
    )
    assert summary(progress) == [
        ("started", f"{JOB}:started", "processing", 45),
        ("progress", f"{JOB}:progress:45", "processing", 45),
    ]
    (completed,) = frame(
        "job:completed",
        '{"jobId":"job_9fba2","status":"completed","completed":100,"total":100,"creditsUsed":100}',
        job_id=None,
    )
    assert (completed.kind, completed.job_id, completed.key) == (
        EventKind.COMPLETED,
        JOB,
        f"{JOB}:terminal",
    )
    assert completed.data["creditsUsed"] == 100
    (failed,) = frame("job:failed", '{"jobId":"job_73ab1","error":"..."}', job_id=None)
    assert (failed.kind, failed.job_id, failed.status, failed.key) == (
        EventKind.FAILED,
        "job_73ab1",
        JobStatus.FAILED,
        "job_73ab1:terminal",
    )
    assert failed.data["error"] == "..."


# -- §3 webhooks (Decision 1 bodies) ----------------------------------------------------------


def test_webhook_job_started() -> None:
    delivery = hook(
        "job.started", {"jobId": JOB, "status": "processing", "completed": 0, "total": 100}
    )
    assert (delivery.delivery_id, delivery.event_name) == ("d-1", "job.started")
    (event,) = delivery.events
    assert (event.kind, event.key, event.status, event.source) == (
        EventKind.STARTED,
        f"{JOB}:started",
        JobStatus.PROCESSING,
        "webhook",
    )
    assert event.occurred_at == datetime.fromtimestamp(1712275200, UTC)


def test_webhook_job_started_without_status_is_processing() -> None:
    (event,) = hook("job.started", {"jobId": JOB}).events
    assert event.status is JobStatus.PROCESSING


def test_webhook_job_completed() -> None:
    (event,) = hook(
        "job.completed",
        {"jobId": JOB, "status": "completed", "completed": 100, "total": 100, "creditsUsed": 100},
    ).events
    assert (event.kind, event.key, event.completed, event.total) == (
        EventKind.COMPLETED,
        f"{JOB}:terminal",
        100,
        100,
    )


def test_webhook_job_failed() -> None:
    (event,) = hook("job.failed", {"jobId": JOB, "status": "failed", "error": "boom"}).events
    assert (event.kind, event.key, event.status) == (
        EventKind.FAILED,
        f"{JOB}:terminal",
        JobStatus.FAILED,
    )
    (bare,) = hook("job.failed", {"jobId": JOB, "error": "boom"}).events
    assert bare.kind is EventKind.FAILED


def test_webhook_job_page() -> None:
    entry = {"url": "https://example.com/page-1", "markdown": "# hi", "credits": 1}
    (event,) = hook("job.page", {"jobId": JOB, **entry}).events
    assert (event.kind, event.key) == (EventKind.PAGE, f"{JOB}:page:https://example.com/page-1")
    (failed,) = hook(
        "job.page", {"jobId": JOB, "url": "https://example.com/x", "error": "timeout", "credits": 0}
    ).events
    assert (failed.kind, failed.key) == (
        EventKind.PAGE_FAILED,
        f"{JOB}:page_failed:https://example.com/x",
    )


def test_webhook_credit_low_is_keyed_by_the_signed_body() -> None:
    body = {
        "balance": 90,
        "limit": 1000,
        "used": 910,
        "tier": "free",
        "resetAt": "2026-05-01T00:00:00Z",
    }
    delivery = hook("credit.low", body, delivery="7c3e89f1-2d44-4b1a-8c9f-b3d2e4f5a6b7")
    (event,) = delivery.events
    assert (event.kind, event.job_id, event.status) == (EventKind.CREDIT_LOW, None, None)
    assert event.key.startswith("workspace:credit_low:") and "7c3e89f1" not in event.key
    assert event.data["balance"] == 90
    # X-Reader-Delivery is not signed: the same body under a fresh delivery id is the same
    # fact (a retry, or a replay); another body another.
    assert hook("credit.low", body, delivery="other").events == delivery.events
    assert hook("credit.low", {**body, "balance": 80}).events[0].key != event.key


def test_webhook_credit_low_naming_a_job_is_refused() -> None:
    with pytest.raises(DecodeError, match="names a job"):
        hook("credit.low", {"jobId": JOB, "balance": 3})


def test_webhook_job_cancelled_is_the_terminal_event_it_names() -> None:
    (event,) = hook("job.cancelled", {"jobId": JOB, "status": "cancelled"}).events
    assert (event.kind, event.status, event.key) == (
        EventKind.CANCELLED,
        JobStatus.CANCELLED,
        f"{JOB}:terminal",
    )


@pytest.mark.parametrize("name", ["job.cancelled", "job.completed", "job.failed"])
def test_webhook_header_alone_ends_no_job(name: str) -> None:
    # The header is not signed: a body that does not say the job ended cannot end it.
    with pytest.raises(DecodeError, match="does not say the job ended"):
        hook(name, {"jobId": JOB})


@pytest.mark.parametrize("name", ["session.created", "session.stopped", "job.exploded"])
def test_webhook_event_without_a_job_event_decodes_to_no_events(name: str) -> None:
    delivery = hook(name, {"sessionId": "s_1"})
    assert (delivery.event_name, delivery.delivery_id, delivery.events) == (name, "d-1", ())


def test_webhook_credit_low_without_delivery_id_is_keyed_by_body() -> None:
    body = {"balance": 90, "limit": 1000, "used": 910, "tier": "free", "resetAt": "x"}
    first = hook("credit.low", body, delivery=None).events[0]
    assert first.key.startswith("workspace:credit_low:")
    assert hook("credit.low", body, delivery=None).events[0].key == first.key
    assert hook("credit.low", {**body, "balance": 80}, delivery=None).events[0].key != first.key


@pytest.mark.parametrize("field", ["event", "type"])
def test_webhook_event_name_from_the_body(field: str) -> None:
    delivery = hook(None, {field: "job.completed", "jobId": JOB, "status": "completed"})
    assert delivery.event_name == "job.completed"
    assert delivery.events[0].kind is EventKind.COMPLETED


def test_webhook_body_wins_and_a_contradicting_header_is_refused() -> None:
    with pytest.raises(
        DecodeError,
        match="header says 'job.failed' but the signed body is a 'job.completed' delivery",
    ):
        hook("job.failed", {"event": "job.completed", "jobId": JOB, "error": "x"})


@pytest.mark.parametrize(
    ("header", "body", "implied"),
    [
        ("job.failed", {"jobId": JOB, "url": "https://example.com/a", "markdown": "#"}, "job.page"),
        ("credit.low", {"jobId": JOB, "url": "https://example.com/a"}, "job.page"),
        ("job.completed", {"jobId": JOB, "status": "processing"}, "job.started"),
        ("job.page", {"jobId": JOB, "status": "completed"}, "job.completed"),
        ("job.completed", {"jobId": JOB, "error": "boom"}, "job.failed"),
        ("session.created", {"jobId": JOB, "status": "failed"}, "job.failed"),
    ],
)
def test_webhook_a_relabelled_body_is_refused(
    header: str, body: dict[str, Any], implied: str
) -> None:
    with pytest.raises(DecodeError, match=f"signed body is a {implied!r} delivery"):
        hook(header, body)
    # Without the header, the body alone says what it is.
    assert hook(None, body).event_name == implied


@pytest.mark.parametrize("stamp", [None, "", "soon", "-5", "1e9", "9" * 30])
def test_webhook_bad_timestamp_leaves_occurred_at_empty(stamp: str | None) -> None:
    (event,) = hook("job.started", {"jobId": JOB}, timestamp=stamp).events
    assert event.occurred_at is None


# -- one fact, one key, whichever channel -----------------------------------------------------


def test_started_has_one_key_on_every_channel() -> None:
    polled = poll(SNAPSHOT)[1][0]
    streamed = frame("progress", {"status": "processing", "completed": 45, "total": 100})[0]
    workspace = frame(
        "job:progress",
        {"jobId": JOB, "status": "processing", "completed": 45, "total": 100},
        job_id=None,
    )[0]
    pushed = hook(
        "job.started", {"jobId": JOB, "status": "processing", "completed": 45, "total": 100}
    ).events[0]
    for event in (polled, streamed, workspace, pushed):
        assert (event.kind, event.key, event.status) == (
            EventKind.STARTED,
            f"{JOB}:started",
            JobStatus.PROCESSING,
        )


def test_progress_has_one_key_on_every_channel() -> None:
    polled = poll(SNAPSHOT)[1][1]
    streamed = frame("progress", {"status": "processing", "completed": 45, "total": 100})[1]
    workspace = frame(
        "job:progress",
        {"jobId": JOB, "status": "processing", "completed": 45, "total": 100},
        job_id=None,
    )[1]
    assert attrs.evolve(streamed, source="poll") == attrs.evolve(workspace, source="poll") == polled
    for event in (polled, streamed, workspace):
        assert (event.kind, event.key, event.status, event.completed, event.total) == (
            EventKind.PROGRESS,
            f"{JOB}:progress:45",
            JobStatus.PROCESSING,
            45,
            100,
        )


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_terminal_has_one_key_on_every_channel(status: str) -> None:
    fields = {"status": status, "completed": 100, "total": 100}
    polled = poll({**SNAPSHOT, **fields})[1][-1]
    streamed = frame("done", fields)[0]
    name = f"job:{status}"
    workspace = frame(name, {"jobId": JOB, **fields}, job_id=None)[0]
    pushed = hook(f"job.{status}", {"jobId": JOB, **fields}).events[0]
    for event in (polled, streamed, workspace, pushed):
        assert (event.kind.value, event.key, event.status, event.completed) == (
            status,
            f"{JOB}:terminal",
            JobStatus(status),
            100,
        )


def test_pages_have_one_key_on_every_channel() -> None:
    url = "https://example.com/page-1"
    assert (
        frame("page", {"url": url})[0].key
        == hook("job.page", {"jobId": JOB, "url": url}).events[0].key
        == f"{JOB}:page:{url}"
    )
    assert (
        frame("error", {"url": url, "error": "x"})[0].key
        == hook("job.page", {"jobId": JOB, "url": url, "error": "x"}).events[0].key
        == f"{JOB}:page_failed:{url}"
    )


def test_one_terminal_key_whatever_the_terminal_status() -> None:
    # One terminal event per run: whichever of completed / failed / cancelled arrives first.
    keys = {frame("done", {"status": s})[0].key for s in ("completed", "failed", "cancelled")}
    assert keys == {f"{JOB}:terminal"}


# -- errors ---------------------------------------------------------------------------------

RATE_LIMITED = {
    "code": "rate_limited",
    "message": "Rate limit of 60 requests per 60s exceeded. Retry after 12s.",
    "details": {"limit": 60, "windowSeconds": 60, "retryAfterSeconds": 12},
    "docsUrl": "https://reader.dev/docs/home/concepts/errors#rate-limited",
}
CONCURRENCY = {
    "code": "concurrency_limited",
    "message": "Concurrency limit reached. You have 10 active jobs (limit: 10).",
    "details": {"active": 10, "max": 10},
}


def test_rate_limited_with_retry_after() -> None:
    error = READER.error_for(error_response(429, RATE_LIMITED, **{"retry-after": "12"}))
    assert isinstance(error, RateLimited)
    assert (error.status, error.code, error.retry_after, error.request_id) == (
        429,
        "rate_limited",
        12.0,
        "req_1",
    )
    assert error.retryable
    assert "Rate limit of 60" in str(error)


def test_rate_limited_falls_back_to_the_body() -> None:
    error = READER.error_for(error_response(429, RATE_LIMITED))
    assert isinstance(error, RateLimited) and error.retry_after == 12.0


def test_concurrency_limited_has_no_retry_after() -> None:
    error = READER.error_for(error_response(429, CONCURRENCY))
    assert isinstance(error, RateLimited)
    assert (error.code, error.retry_after) == ("concurrency_limited", None)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-3", "soon", ""])
def test_retry_after_ignores_nonsense(value: str) -> None:
    # Never a pause without end: nonsense is ignored (and the body has no retryAfterSeconds).
    error = READER.error_for(error_response(429, CONCURRENCY, **{"retry-after": value}))
    assert isinstance(error, RateLimited) and error.retry_after is None


def test_nonsense_header_falls_back_to_the_body() -> None:
    error = READER.error_for(error_response(429, RATE_LIMITED, **{"retry-after": "inf"}))
    assert error.retry_after == 12.0  # type: ignore[attr-defined]


def test_huge_retry_after_is_capped() -> None:
    error = READER.error_for(error_response(429, CONCURRENCY, **{"retry-after": "1e12"}))
    assert isinstance(error, RateLimited) and error.retry_after == 3600.0


@pytest.mark.parametrize(
    ("status", "error", "cls", "hint"),
    [
        (
            404,
            {
                "code": "not_found",
                "message": "Job not found",
                "docsUrl": "https://reader.dev/docs/home/concepts/errors#not-found",
            },
            JobNotFound,
            "check the job id",
        ),
        (
            401,
            {
                "code": "unauthenticated",
                "message": "Invalid API key",
                "docsUrl": "https://reader.dev/docs/home/concepts/errors#unauthenticated",
            },
            AuthenticationError,
            "rdr_",
        ),
        (
            409,
            {
                "code": "conflict",
                "message": "Job is already completed",
                "details": {"status": "completed"},
                "docsUrl": "https://reader.dev/docs/home/concepts/errors#conflict",
            },
            APIError,
            "Job is already completed",
        ),
        (500, {"code": "internal_error", "message": "oops", "docsUrl": "x"}, APIError, "oops"),
    ],
)
def test_error_envelopes(
    status: int, error: dict[str, Any], cls: type[APIError], hint: str
) -> None:
    result = READER.error_for(error_response(status, error))
    assert type(result) is cls
    assert isinstance(result, APIError)
    assert (result.status, result.code, result.request_id) == (status, error["code"], "req_1")
    assert hint in str(result) and str(status) in str(result)
    assert result.retryable is (status >= 500)


@pytest.mark.parametrize(
    ("status", "cls"),
    [(404, JobNotFound), (401, AuthenticationError), (429, RateLimited), (409, APIError)],
)
def test_decode_status_raises_the_error_of_an_error_response(
    status: int, cls: type[APIError]
) -> None:
    response = error_response(status, {"code": "x", "message": "y", "docsUrl": "z"})
    with pytest.raises(cls):
        READER.decode_status(JOB, response, None, source="poll")
    with pytest.raises(cls):
        READER.decode_results(JOB, response)


def test_error_for_a_body_that_is_not_an_envelope() -> None:
    error = READER.error_for(Response(status=502, body=b"<html>Bad gateway</html>"))
    assert type(error) is APIError and error.code is None and error.retryable
    assert "502" in str(error)


# -- malformed payloads: a precise DecodeError, never a half-filled event ----------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: frame("bogus", {}), "unknown event 'bogus'"),
        (lambda: frame("job:page", {"jobId": JOB}, job_id=None), "unknown event 'job:page'"),
        (lambda: frame("progress", "{not json"), "'progress' frame is not valid JSON"),
        (lambda: frame("progress", "[1]"), "must be a JSON object, got list"),
        (lambda: frame("progress", {"completed": 1}), "has no 'status' field"),
        (lambda: frame("progress", {"status": 3}), "'status' must be a string"),
        (
            lambda: frame("progress", {"status": "processing", "completed": -1}),
            "'completed' must not be negative",
        ),
        (
            lambda: frame("progress", {"status": "processing", "completed": 1.5}),
            "'completed' must be an integer",
        ),
        (
            lambda: frame("progress", {"status": "processing", "total": True}),
            "'total' must be an integer",
        ),
        (
            lambda: frame("progress", {"status": "completed", "completed": 1}),
            "cannot carry the final status 'completed'",
        ),
        (lambda: frame("done", {"status": "processing"}), "needs a terminal status"),
        (lambda: frame("page", {"markdown": "x"}), "has no 'url' field"),
        (lambda: frame("page", {"url": 5}), "'url' must be a string"),
        (
            lambda: frame("job:progress", {"status": "processing"}, job_id=None),
            "has no 'jobId' field",
        ),
        (lambda: hook(None, {"jobId": JOB}), "names no event"),
        (lambda: hook("job.completed", {"status": "completed"}), "has no 'jobId' field"),
        (lambda: hook("job.completed", b"\xff\xfe"), "webhook body is not valid JSON"),
        (lambda: hook("job.completed", b'"text"'), "must be a JSON object"),
        (
            lambda: hook("job.started", {"jobId": JOB, "completed": "3"}),
            "'completed' must be an integer",
        ),
        (lambda: poll({"status": "processing", "completed": "many"}), "'completed' must be"),
        (lambda: poll({"completed": 1}), "has no 'status' field"),
        (
            lambda: READER.decode_status(
                JOB, Response(status=200, body=b'{"success": false}'), None, source="poll"
            ),
            "not Reader's success envelope",
        ),
        (
            lambda: READER.decode_status(
                JOB, Response(status=200, body=b'{"data": []}'), None, source="poll"
            ),
            "not Reader's success envelope",
        ),
        (lambda: READER.decode_results(JOB, envelope({"results": {}})), "'results' must be"),
    ],
)
def test_malformed_payloads(call: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: hook("job.completed", b"[" * 100_000),
        lambda: frame("progress", "[" * 100_000),
        lambda: frame("job:progress", '{"a":' * 50_000, job_id=None),
        lambda: READER.decode_status(
            JOB, Response(status=200, body=b"[" * 100_000), None, source="poll"
        ),
    ],
    ids=["webhook", "job-stream", "workspace-stream", "snapshot"],
)
def test_deeply_nested_json_is_a_decode_error(call: Any) -> None:
    with pytest.raises(DecodeError, match="nested too deeply"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: frame("page", '{"url": "https://example.com/\\ud800"}'),
        lambda: frame("job:progress", '{"jobId": "job_\\udfff", "status": "queued"}', job_id=None),
        lambda: hook("job.page", b'{"jobId": "job_1", "url": "https://example.com/\\ud800"}'),
    ],
    ids=["job-stream-url", "workspace-job-id", "webhook-url"],
)
def test_text_that_is_not_unicode_is_a_decode_error(call: Any) -> None:
    with pytest.raises(DecodeError):
        call()


def test_deeply_nested_error_body_still_gives_the_error() -> None:
    error = READER.error_for(Response(status=404, body=b"[" * 100_000))
    assert isinstance(error, JobNotFound) and error.code is None


# -- unknown status values ------------------------------------------------------------------


def test_unknown_status_in_a_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jobwatch.reader"):
        snap, events = poll({**SNAPSHOT, "status": "aborted"})
    assert (snap.status, snap.raw_status, snap.terminal) == (None, "aborted", False)
    assert [e.kind for e in events] == [EventKind.PROGRESS]
    assert events[0].status is None and events[0].data["status"] == "aborted"
    assert "'aborted'" in caplog.text and "not taken as running" in caplog.text


def test_unknown_status_on_the_streams(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jobwatch.reader"):
        (job,) = frame("progress", {"status": "aborted", "completed": 3})
        (workspace,) = frame(
            "job:progress", {"jobId": JOB, "status": "aborted", "completed": 3}, job_id=None
        )
    for event in (job, workspace):
        assert (event.kind, event.status, event.data["status"]) == (
            EventKind.PROGRESS,
            None,
            "aborted",
        )
    assert caplog.text.count("'aborted'") == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda: frame("done", {"status": "aborted"}),
        lambda: frame("job:completed", {"jobId": JOB, "status": "aborted"}, job_id=None),
        lambda: frame("job:failed", {"jobId": JOB, "status": "aborted"}, job_id=None),
        lambda: hook("job.completed", {"jobId": JOB, "status": "aborted"}),
    ],
    ids=["done", "job:completed", "job:failed", "job.completed"],
)
def test_unknown_status_never_ends_a_job(call: Any, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="jobwatch.reader"),
        pytest.raises(DecodeError, match="'aborted'"),
    ):
        call()
    assert "'aborted'" in caplog.text


def test_unknown_status_on_job_started_is_not_running() -> None:
    (event,) = hook("job.started", {"jobId": JOB, "status": "aborted"}).events
    assert event.status is None and event.data["status"] == "aborted"


@pytest.mark.parametrize("status", ["queued", "processing"])
def test_job_started_is_always_processing(status: str) -> None:
    # A started event with a terminal status would set the ordering guard's status to
    # terminal while the run is not, so that later progress is dropped as "backwards".
    (event,) = hook("job.started", {"jobId": JOB, "status": status}).events
    assert event.status is JobStatus.PROCESSING


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_job_started_with_a_terminal_body_is_refused(status: str) -> None:
    with pytest.raises(DecodeError, match=f"signed body is a 'job.{status}' delivery"):
        hook("job.started", {"jobId": JOB, "status": status})


# -- hypothesis: anything in, events or DecodeError / APIError out -----------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)
statuses = (
    st.sampled_from(["queued", "processing", "completed", "failed", "cancelled", "aborted", ""])
    | json_values
)
# Objects shaped like Reader's, with any field missing or of any type.
payloads = st.fixed_dictionaries(
    {},
    optional={
        "jobId": st.sampled_from([JOB, "job_73ab1"]) | json_values,
        "status": statuses,
        "completed": st.integers(-2, 200) | json_values,
        "total": st.integers(-2, 200) | json_values,
        "url": st.sampled_from(["https://example.com/a", ""]) | json_values,
        "error": st.none() | st.text(max_size=8) | json_values,
        "event": st.sampled_from(["job.page", "job.completed", "credit.low"]) | json_values,
        "type": json_values,
        "startedAt": st.sampled_from(["2026-04-04T12:00:00Z", "nope"]) | json_values,
        "completedAt": st.sampled_from(["2026-04-04T12:00:00Z", "nope"]) | json_values,
        "results": st.lists(json_values, max_size=2) | json_values,
        "extra": json_values,
    },
)
# Objects with every field well typed, so that the decoders get past the checks too.
typed_payloads = st.fixed_dictionaries(
    {
        "jobId": st.sampled_from([JOB, "job_73ab1"]),
        "status": st.sampled_from(
            ["queued", "processing", "completed", "failed", "cancelled", "aborted"]
        ),
    },
    optional={
        "completed": st.integers(0, 200),
        "total": st.integers(0, 200),
        "url": st.sampled_from(["https://example.com/a", "https://example.com/b"]),
        "error": st.none() | st.just("timeout"),
        "creditsUsed": st.integers(0, 9),
    },
)
bodies = st.one_of(
    typed_payloads.map(json.dumps),
    typed_payloads.map(json.dumps),
    payloads.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=40),
)
raw_bodies = bodies.map(str.encode) | st.binary(max_size=60)
JOB_EVENTS = [
    "progress",
    "page",
    "error",
    "done",
    "job:progress",
    "job:page",
    "job:error",
    "job:completed",
    "job:failed",
    "job:cancelled",
]
WORKSPACE_EVENTS = ["job:progress", "job:completed", "job:failed"]
HOOK_EVENTS = ["job.started", "job.page", "job.completed", "job.failed", "credit.low"]


def check_events(events: list[JobEvent], job_id: str | None = None) -> None:
    for event in events:
        assert isinstance(event, JobEvent) and isinstance(event.kind, EventKind)
        assert event.status is None or isinstance(event.status, JobStatus)
        if event.kind is EventKind.CREDIT_LOW:
            assert event.job_id is None and event.key.startswith("workspace:credit_low:")
            continue
        assert isinstance(event.job_id, str)
        assert job_id is None or event.job_id == job_id
        assert event.key.startswith(f"{event.job_id}:")
        if event.terminal:
            assert event.status is not None and event.status.value == event.kind.value
            assert event.key == f"{event.job_id}:terminal"
        if event.kind is EventKind.STARTED:
            # Unknown statuses aside (None), a started event is processing, whatever the body.
            assert event.status in (JobStatus.PROCESSING, None)
            assert event.status is not None or event.data.get("status") not in [
                s.value for s in JobStatus
            ]
        for count in (event.completed, event.total):
            assert count is None or (type(count) is int and count >= 0)


def expect_events_or_error(call: Any, job_id: str | None = None) -> None:
    try:
        result = call()
    except (DecodeError, APIError):
        return
    events = list(result.events) if isinstance(result, WebhookDelivery) else result
    check_events(events, job_id)


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(event=st.sampled_from(JOB_EVENTS) | st.text(max_size=10), data=bodies)
def test_fuzz_job_stream(event: str, data: str) -> None:
    expect_events_or_error(lambda: READER.decode_stream_event(JOB, event, data, source="s"), JOB)


@FUZZ
@given(event=st.sampled_from(WORKSPACE_EVENTS) | st.text(max_size=10), data=bodies)
def test_fuzz_workspace_stream(event: str, data: str) -> None:
    expect_events_or_error(lambda: READER.decode_stream_event(None, event, data, source="s"))


@FUZZ
@given(
    event=st.none() | st.sampled_from(HOOK_EVENTS) | st.text(max_size=10),
    delivery=st.none() | st.text(max_size=10),
    stamp=st.none() | st.text(max_size=12),
    body=raw_bodies,
)
def test_fuzz_webhook(
    event: str | None, delivery: str | None, stamp: str | None, body: bytes
) -> None:
    headers = {}
    for name, value in (
        ("x-reader-event", event),
        ("x-reader-delivery", delivery),
        ("x-reader-timestamp", stamp),
    ):
        if value is not None:
            headers[name] = value
    expect_events_or_error(lambda: READER.decode_webhook(headers, body, source="webhook"))


snapshot_bodies = (typed_payloads | payloads).map(
    lambda d: json.dumps({"success": True, "data": d})
) | bodies
statuses_http = st.sampled_from([200, 200, 200, 201, 401, 404, 409, 429, 500, 502]) | st.integers(
    100, 599
)


@FUZZ
@given(status=statuses_http, body=snapshot_bodies.map(str.encode) | st.binary(max_size=40))
def test_fuzz_status(status: int, body: bytes) -> None:
    response = Response(status=status, body=body)

    def decode() -> list[JobEvent]:
        snap, events = READER.decode_status(JOB, response, None, source="poll")
        assert snap.job_id == JOB and isinstance(snap.raw_status, str)
        assert snap.status is None or snap.status.value == snap.raw_status
        return events

    expect_events_or_error(decode, JOB)


@FUZZ
@given(
    status=statuses_http,
    body=snapshot_bodies.map(str.encode) | st.binary(max_size=40),
    pagination=st.none() | json_values,
)
def test_fuzz_results(status: int, body: bytes, pagination: Any) -> None:
    if pagination is not None and body.startswith(b'{"success"'):
        body = body[:-1] + b', "pagination": ' + json.dumps(pagination).encode() + b"}"
    try:
        page = READER.decode_results(JOB, Response(status=status, body=body))
    except (DecodeError, APIError):
        return
    assert all(isinstance(item, dict) for item in page.items)
    assert page.next is None or page.next.path == f"/v1/jobs/{JOB}"


@FUZZ
@given(
    status=st.integers(400, 599),
    body=raw_bodies,
    retry=st.none() | st.text(max_size=8) | st.integers(-5, 100).map(str),
)
def test_fuzz_error_for(status: int, body: bytes, retry: str | None) -> None:
    headers = {} if retry is None else {"retry-after": retry}
    error = READER.error_for(Response(status=status, headers=headers, body=body))
    assert isinstance(error, APIError) and isinstance(error, JobwatchError)
    assert error.status == status and str(status) in str(error)
    assert error.retry_after is None or error.retry_after >= 0


def test_is_a_provider() -> None:
    assert issubclass(ReaderProvider, Provider)
    assert ReaderProvider.capabilities.job_stream and ReaderProvider.capabilities.workspace_stream
    assert not ReaderProvider.capabilities.stream_event_ids
    assert not ReaderProvider.capabilities.announces_cancellation
    assert ReaderProvider.capabilities.webhook_scheme == "reader"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(text=bodies | st.text(max_size=40).map(lambda t: f" {t}") | bodies.map(lambda b: b + " "))
def test_the_fast_json_path_agrees_with_json_loads(text: str) -> None:
    # Stream frames skip json.loads' Python layers when they are exactly one object; the
    # answer (or the error) must be what json.loads would give.
    try:
        expected: Any = json.loads(text)
    except (ValueError, RecursionError):
        expected = DecodeError
    if not isinstance(expected, dict):
        with pytest.raises(DecodeError):
            _json_object(text, "frame")
    else:
        assert _json_object(text, "frame") == expected


@pytest.mark.parametrize(
    ("started", "seconds"),
    [
        ("2026-04-04T12:00:00Z", datetime(2026, 4, 4, 12, tzinfo=UTC).timestamp()),
        ("2026-04-04T12:00:00.250Z", datetime(2026, 4, 4, 12, tzinfo=UTC).timestamp() + 0.25),
        ("2026-04-04T12:00:00", datetime(2026, 4, 4, 12, tzinfo=UTC).timestamp()),  # no zone
        (None, None),
        ("not a time", None),
    ],
)
def test_a_snapshot_carries_when_the_job_started(started: Any, seconds: float | None) -> None:
    # What the poll schedule times a job's pace from, where it saw the job waiting.
    snap, _ = poll(
        {"id": JOB, "status": "processing", "completed": 1, "total": 4, "startedAt": started}
    )
    assert snap.started_at == (None if seconds is None else pytest.approx(seconds))
