"""What a described API's answers decode to: statuses, counts, errors, attempts, results,
stream frames, webhook deliveries and the classification of every answer."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from _samples import (
    BATCH,
    PREDICTION,
    REPOSITORY,
    RUN,
    STREAM_URL,
    answer,
    batch,
    github_event,
    openai_event,
    prediction,
    provider,
    replicate_delivery,
    run,
)
from test_description import described

import jobwatch
from jobwatch import EventKind, JobStatus
from jobwatch.abc import Outcome, Response


def poll(
    table_or_name: Any, body: Any, job_id: str = "j1", previous: Any = None, **variables: Any
) -> tuple[Any, list[jobwatch.JobEvent]]:
    built = (
        provider(table_or_name, variables or None)
        if isinstance(table_or_name, str)
        else provider("generic", table_or_name)
    )
    return built.decode_status(job_id, answer(body), previous, source="poll")


def kinds(events: list[jobwatch.JobEvent]) -> list[tuple[str, str]]:
    return [(e.kind.value, e.key) for e in events]


# -- statuses and progress -----------------------------------------------------------------


def test_counts_summed_of_a_total() -> None:
    snapshot, events = poll("openai-batch", batch("in_progress", completed=40, failed=2), BATCH)
    assert (snapshot.completed, snapshot.total) == (42, 100)
    assert kinds(events) == [("started", f"{BATCH}:started"), ("progress", f"{BATCH}:progress:42")]
    assert events[0].occurred_at == datetime.fromtimestamp(1711471538, UTC)


@pytest.mark.parametrize(
    ("progress", "body", "counts"),
    [
        (
            {"kind": "buckets", "buckets": "request_counts", "done": ["succeeded", "errored"]},
            {"request_counts": {"processing": 5, "succeeded": 3, "errored": 2, "expired": 0}},
            (5, 10),
        ),
        ({"kind": "fraction", "value": "progress"}, {"progress": 0.25}, (25, 100)),
        (
            {"kind": "percent", "value": "metadata.progressPercent"},
            {"metadata": {"progressPercent": 70}},
            (70, 100),
        ),
        ({"kind": "counts", "done": "done", "total": "total"}, {"done": 3}, (3, None)),
        ({"kind": "none"}, {"done": 3, "total": 9}, (None, None)),
    ],
)
def test_progress_kinds(
    progress: dict[str, Any], body: dict[str, Any], counts: tuple[int | None, int | None]
) -> None:
    snapshot, _ = poll(described(progress=progress), {"status": "running", **body})
    assert (snapshot.completed, snapshot.total) == counts


@pytest.mark.parametrize(
    ("progress", "body"),
    [
        ({"kind": "fraction", "value": "p"}, {"p": 1.5}),
        ({"kind": "percent", "value": "p"}, {"p": "70%"}),
        ({"kind": "counts", "done": "d"}, {"d": -1}),
        ({"kind": "counts", "done": "d"}, {"d": True}),
        ({"kind": "buckets", "buckets": "b", "done": ["x"]}, {"b": {"x": "1"}}),
    ],
)
def test_counts_that_are_not_counts_are_refused(
    progress: dict[str, Any], body: dict[str, Any]
) -> None:
    with pytest.raises(jobwatch.DecodeError):
        poll(described(progress=progress), {"status": "running", **body})


def test_whole_numbers_written_with_a_fraction_are_counts() -> None:
    # JSON knows numbers only: 10.0 is 10. Refused, the batch's end was never delivered.
    body = batch("completed", completed=9, failed=1, total=10)
    body["request_counts"] = {k: float(v) for k, v in body["request_counts"].items()}
    snapshot, events = poll("openai-batch", body, BATCH)
    assert (snapshot.completed, snapshot.total) == (10, 10)
    assert (events[-1].kind, events[-1].completed, events[-1].total) == (
        EventKind.COMPLETED,
        10,
        10,
    )
    assert type(events[-1].completed) is int
    headers, raw = github_event("completed", {**run("completed", "success"), "run_attempt": 2.0})
    delivery = provider("github-actions", {"repository": REPOSITORY}).decode_webhook(
        headers, raw, source="webhook"
    )
    assert [e.attempt for e in delivery.events] == [2]
    buckets = {"kind": "buckets", "buckets": "b", "done": ["x"]}
    snapshot, _ = poll(described(progress=buckets), {"status": "running", "b": {"x": 2.0, "y": 1}})
    assert (snapshot.completed, snapshot.total) == (2, 3)


@pytest.mark.parametrize("count", [2.5, -1.0, float("nan"), float("inf"), 2.0**64])
def test_numbers_that_are_not_whole_are_not_counts(count: float) -> None:
    with pytest.raises(jobwatch.DecodeError):
        poll(described(progress={"kind": "counts", "done": "d"}), {"status": "running", "d": count})
    buckets = {"kind": "buckets", "buckets": "b", "done": ["x"]}
    with pytest.raises(jobwatch.DecodeError):
        poll(described(progress=buckets), {"status": "running", "b": {"x": count}})


def test_a_growing_total_is_reported() -> None:
    table = described(
        progress={"kind": "counts", "done": "c", "total": "t", "total_may_grow": True}
    )
    first, events = poll(table, {"status": "running", "c": 3, "t": 10})
    _, later = poll(table, {"status": "running", "c": 3, "t": 25}, previous=first)
    assert [e.key for e in events if e.kind is EventKind.PROGRESS] == ["j1:progress:3/10"]
    assert [e.key for e in later if e.kind is EventKind.PROGRESS] == ["j1:progress:3/25"]


def test_a_status_change_without_counts_is_progress_keyed_by_status() -> None:
    _, queued = poll("replicate", prediction("starting"), PREDICTION)
    assert kinds(queued) == [("progress", f"{PREDICTION}:progress:queued")]
    assert queued[0].status is JobStatus.QUEUED and queued[0].completed is None


def test_a_transitional_state_is_reported_when_entered() -> None:
    first, _ = poll("openai-batch", batch("in_progress", completed=100), BATCH)
    snapshot, events = poll(
        "openai-batch", batch("finalizing", completed=100), BATCH, previous=first
    )
    assert snapshot.status is JobStatus.PROCESSING
    assert [e.key for e in events if e.kind is EventKind.PROGRESS] == [
        f"{BATCH}:progress:100:finalizing"
    ]
    _, again = poll("openai-batch", batch("finalizing", completed=100), BATCH, previous=snapshot)
    assert [e.kind for e in again] == [EventKind.STARTED]


def test_a_terminal_guard_keeps_an_unbelievable_end_running() -> None:
    table = described(
        progress={"kind": "counts", "done": "completed", "total": "total"},
        status__guards=[{"status": "completed", "require": "total > `0`"}],
    )
    early, _ = poll(table, {"status": "done", "completed": 0, "total": 0})
    done, events = poll(table, {"status": "done", "completed": 4, "total": 4})
    assert early.status is JobStatus.PROCESSING and not early.terminal
    assert done.status is JobStatus.COMPLETED and [e.kind for e in events] == [EventKind.COMPLETED]


@pytest.mark.parametrize(("policy", "status"), [("warn", None), ("fail", JobStatus.FAILED)])
def test_an_unknown_status_warns_or_fails(
    policy: str, status: JobStatus | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="jobwatch.generic"):
        snapshot, events = poll(described(status__unknown=policy), {"status": "paused"})
    assert snapshot.status is status and snapshot.raw_status == "paused"
    if status is None:
        assert events == [] and "'paused'" in caplog.text and "deadline" in caplog.text
    else:
        assert [(e.kind, e.error) for e in events] == [
            (EventKind.FAILED, "unknown status 'paused'")
        ]


def test_an_answer_without_a_status_is_malformed() -> None:
    with pytest.raises(jobwatch.DecodeError, match="no status at 'status'"):
        poll(described(), {"state": "done"})


def test_the_job_may_sit_inside_an_envelope() -> None:
    snapshot, events = poll(
        described(job__root="data"), {"success": True, "data": {"status": "done"}}
    )
    assert snapshot.status is JobStatus.COMPLETED and events[0].data["status"] == "done"
    with pytest.raises(jobwatch.DecodeError, match="'data'"):
        poll(described(job__root="data"), {"success": False})


@pytest.mark.parametrize(
    ("conclusion", "status", "error"),
    [
        ("success", JobStatus.COMPLETED, None),
        ("neutral", JobStatus.COMPLETED, None),
        ("skipped", JobStatus.COMPLETED, None),
        ("cancelled", JobStatus.CANCELLED, None),
        ("failure", JobStatus.FAILED, "failure"),
        ("timed_out", JobStatus.FAILED, "timed_out"),
        ("startup_failure", JobStatus.FAILED, "startup_failure"),
        ("action_required", JobStatus.FAILED, "action_required"),
        ("stale", JobStatus.FAILED, "stale"),
        (None, JobStatus.PROCESSING, None),
    ],
)
def test_github_two_field_status(
    conclusion: str | None, status: JobStatus, error: str | None
) -> None:
    snapshot, events = poll(
        "github-actions", run("completed", conclusion), RUN, repository=REPOSITORY
    )
    assert snapshot.status is status
    assert events[-1].error == error and events[-1].attempt == 1


@pytest.mark.parametrize("word", ["requested", "queued", "pending", "waiting"])
def test_github_waiting_words_are_queued(word: str) -> None:
    snapshot, _ = poll("github-actions", run(word), RUN, repository=REPOSITORY)
    assert snapshot.status is JobStatus.QUEUED


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (prediction("failed", error="CUDA out of memory"), "CUDA out of memory"),
        (prediction("aborted"), "aborted"),
        (prediction("failed"), "failed"),
    ],
)
def test_a_failure_says_why_or_its_status_word(body: dict[str, Any], error: str) -> None:
    _, events = poll("replicate", body, PREDICTION)
    assert [(e.kind, e.error) for e in events] == [(EventKind.FAILED, error)]


def test_openai_expired_and_validation_failures_say_why() -> None:
    _, expired = poll("openai-batch", batch("expired", completed=60), BATCH)
    failed = batch("failed", errors={"data": [{"message": "line 3 is not valid JSON"}]})
    _, invalid = poll("openai-batch", failed, BATCH)
    assert expired[0].error == "expired" and expired[0].completed == 60
    assert invalid[0].error == "line 3 is not valid JSON"


# -- results -------------------------------------------------------------------------------


def test_inline_results() -> None:
    replicate = provider("replicate")
    request = replicate.results_request(PREDICTION)
    assert request == replicate.status_request(PREDICTION)
    page = replicate.decode_results(
        PREDICTION,
        answer(prediction("succeeded", output=["https://replicate.delivery/a.png", {"text": "b"}])),
    )
    assert page.items == ({"value": "https://replicate.delivery/a.png"}, {"text": "b"})
    assert page.next is None
    single = replicate.decode_results(PREDICTION, answer(prediction("succeeded", output="hi")))
    assert single.items == ({"value": "hi"},)


def test_results_paged_by_link_header_keep_credentials_at_home() -> None:
    github = provider("github-actions", {"repository": REPOSITORY})
    first = github.results_request(RUN)
    assert (first.path, dict(first.params)) == (
        f"/repos/{REPOSITORY}/actions/runs/{RUN}/jobs",
        {"per_page": "100"},
    )
    assert first.headers["authorization"] == "Bearer sk-test"
    link = (
        f"<https://api.github.com/repositories/1/actions/runs/{RUN}/jobs?page=2>; "
        'rel="next", <https://api.github.com/x?page=5>; rel="last"'
    )
    page = github.decode_results(RUN, answer({"total_count": 3, "jobs": [{"id": 1}]}, link=link))
    assert page.items == ({"id": 1},)
    assert page.next is not None and page.next.path.endswith("jobs?page=2")
    assert page.next.headers["authorization"] == "Bearer sk-test"
    elsewhere = github.decode_results(
        RUN, answer({"jobs": []}, link='<https://evil.example/steal>; rel="next"')
    )
    assert elsewhere.next is not None and "authorization" not in elsewhere.next.headers
    last = github.decode_results(RUN, answer({"jobs": []}, link='<https://x>; rel="prev"'))
    assert last.next is None


def test_results_from_a_file_the_job_names() -> None:
    openai = provider("openai-batch")
    assert openai.results_request(BATCH) == openai.status_request(BATCH)
    found = openai.decode_results(BATCH, answer(batch("completed", output_file_id="file-9")))
    assert found.items == () and found.next is not None
    assert found.next.path == "/files/file-9/content"
    lines = b'{"custom_id": "r1", "response": {}}\n\n{"custom_id": "r2", "response": {}}\n'
    page = openai.decode_results(BATCH, Response(status=200, body=lines))
    assert [item["custom_id"] for item in page.items] == ["r1", "r2"] and page.next is None
    # One line of output is a JSON object too, but not this batch.
    one = openai.decode_results(BATCH, Response(status=200, body=b'{"id": "batch_req_1"}'))
    assert one.items == ({"id": "batch_req_1"},)
    nothing = openai.decode_results(BATCH, answer(batch("completed", output_file_id=None)))
    assert nothing.items == () and nothing.next is None and nothing.then == ()


def test_results_of_a_batch_with_failures_go_on_to_its_error_file() -> None:
    openai = provider("openai-batch")
    both = openai.decode_results(
        BATCH, answer(batch("completed", output_file_id="file-9", error_file_id="file-e"))
    )
    assert both.items == () and both.next is not None
    assert both.next.path == "/files/file-9/content"
    assert [request.path for request in both.then] == ["/files/file-e/content"]
    # A batch whose requests all failed names no output file: its error file alone.
    failed = openai.decode_results(BATCH, answer(batch("completed", error_file_id="file-e")))
    assert failed.next is not None and failed.next.path == "/files/file-e/content"
    assert failed.then == ()


@pytest.mark.parametrize(
    ("results", "body", "expected"),
    [
        (
            {"source": "inline", "items": "data", "next": "url", "next_path": "next"},
            {
                "status": "done",
                "data": [{"u": 1}],
                "next": "https://api.example.com/jobs/j1?skip=1",
            },
            ("https://api.example.com/jobs/j1?skip=1", {}),
        ),
        (
            {
                "source": "request",
                "get": "GET /jobs/{id}/items?limit=10",
                "items": "items",
                "next": "cursor",
                "next_path": "next_page_token",
                "cursor_param": "page_token",
            },
            {"items": [{"u": 1}], "next_page_token": "t2"},
            ("/jobs/j1/items", {"limit": "10", "page_token": "t2"}),
        ),
    ],
)
def test_results_paged_by_url_or_cursor(
    results: dict[str, Any], body: dict[str, Any], expected: tuple[str, dict[str, str]]
) -> None:
    built = provider("generic", described(results=results))
    page = built.decode_results("j1", answer(body))
    assert page.items == ({"u": 1},) and page.next is not None
    assert (page.next.path, dict(page.next.params)) == expected
    assert page.next.headers.get("authorization") == "Bearer sk-test"


def test_results_from_a_url_field() -> None:
    table = described(
        job__id="id", results={"source": "url", "url": "results_url", "format": "jsonl"}
    )
    built = provider("generic", table)
    job = {"id": "j1", "status": "done", "results_url": "https://files.example.net/r.jsonl"}
    found = built.decode_results("j1", answer(job))
    assert found.next is not None and found.next.path == "https://files.example.net/r.jsonl"
    assert dict(found.next.headers) == {}, "no credentials to another origin"


def test_no_results_described_is_a_clear_error() -> None:
    with pytest.raises(jobwatch.ConfigError, match="no \\[results\\]"):
        provider("generic", described()).results_request("j1")


# -- streams -------------------------------------------------------------------------------


def test_a_stream_named_by_the_job_is_known_once_its_status_is_read() -> None:
    replicate = provider("replicate")
    with pytest.raises(jobwatch.StreamError, match="urls.stream"):
        replicate.job_stream_request(PREDICTION)
    replicate.decode_status(PREDICTION, answer(prediction("processing")), None, source="poll")
    request = replicate.job_stream_request(PREDICTION)
    assert request.path == STREAM_URL
    assert "authorization" not in request.headers, "another origin gets no credentials"
    home = provider("replicate", base_url="https://stream.replicate.com")
    home.decode_status(PREDICTION, answer(prediction("processing")), None, source="poll")
    assert home.job_stream_request(PREDICTION).headers["authorization"] == "Bearer sk-test"


def test_replicate_stream_frames() -> None:
    replicate = provider("replicate")

    def frame(name: str, data: str) -> list[tuple[str, str | None, str]]:
        events = replicate.decode_stream_event(PREDICTION, name, data, source="sse")
        return [(e.kind.value, e.error, e.key) for e in events]

    terminal = f"{PREDICTION}:terminal"
    assert frame("output", "Hello") == [("started", None, f"{PREDICTION}:started")]
    assert frame("logs", "Using seed: 42") == [("started", None, f"{PREDICTION}:started")]
    assert frame("done", "{}") == [("completed", None, terminal)]
    assert frame("done", '{"reason": "canceled"}') == [("cancelled", None, terminal)]
    assert frame("done", '{"reason": "error"}') == [("failed", "error", terminal)]
    assert frame("error", "CUDA out of memory") == [("failed", "CUDA out of memory", terminal)]
    assert frame("heartbeat", "") == []


def test_a_done_frame_with_an_unknown_reason_ends_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jobwatch.generic"):
        events = provider("replicate").decode_stream_event(
            PREDICTION, "done", '{"reason": "preempted"}', source="sse"
        )
    assert events == [] and "'preempted'" in caplog.text


def test_stream_event_names_in_the_body_and_pages() -> None:
    table = described(
        stream={
            "url": "GET /jobs/{id}/ws",
            "event_path": "type",
            "events": {
                "catchup": "status",
                "document": {"kind": "page", "id": "data.url"},
                "skipped": {"kind": "page_failed", "id": "url", "error": "reason"},
            },
        }
    )
    built = provider("generic", table)
    assert built.job_stream_request("j/1").path == "/jobs/j%2F1/ws"

    def frame(payload: dict[str, Any]) -> list[jobwatch.JobEvent]:
        return built.decode_stream_event("j1", "message", json.dumps(payload), source="sse")

    (page,) = frame({"type": "document", "data": {"url": "https://a.example/x"}})
    assert (page.kind, page.key) == (EventKind.PAGE, "j1:page:https://a.example/x")
    (failed,) = frame({"type": "skipped", "url": "https://a.example/y", "reason": "404"})
    assert (failed.kind, failed.error) == (EventKind.PAGE_FAILED, "404")
    (done,) = frame({"type": "catchup", "status": "done"})
    assert done.kind is EventKind.COMPLETED and done.key == "j1:terminal"
    with pytest.raises(jobwatch.DecodeError, match="page id"):
        frame({"type": "document", "data": {}})


# -- webhooks ------------------------------------------------------------------------------


def test_github_deliveries() -> None:
    github = provider("github-actions", {"repository": REPOSITORY})
    headers, body = github_event("completed", run("completed", "failure", attempt=2))
    delivery = github.decode_webhook(headers, body, source="webhook")
    assert delivery.event_name == "workflow_run.completed" and delivery.reconcile == ()
    assert delivery.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    (final,) = delivery.events
    assert (final.kind, final.key, final.error, final.attempt) == (
        EventKind.FAILED,
        f"{RUN}:terminal",
        "failure",
        2,
    )
    assert final.data["id"] == int(RUN), "the run, not the envelope"


@pytest.mark.parametrize(
    "headers_body",
    [
        github_event("completed", run("completed", "success"), repository="someone/else"),
        github_event("created", {"id": 1}, event="ping"),
        github_event("completed", {"id": 9}, event="workflow_job"),
    ],
)
def test_github_pings_and_other_repositories_are_ignored(
    headers_body: tuple[dict[str, str], bytes],
) -> None:
    github = provider("github-actions", {"repository": REPOSITORY})
    delivery = github.decode_webhook(*headers_body, source="webhook")
    assert delivery.events == () and delivery.reconcile == ()


def test_a_repository_compares_without_regard_to_case() -> None:
    github = provider("github-actions", {"repository": "Octo-Org/Hello-World"})
    headers, body = github_event("in_progress", run("in_progress"))
    assert [e.kind for e in github.decode_webhook(headers, body, source="webhook").events] == [
        EventKind.STARTED
    ]


def test_a_thin_delivery_asks_for_one_status_request() -> None:
    openai = provider("openai-batch")
    delivery = openai.decode_webhook(*openai_event("expired"), source="webhook")
    assert delivery.reconcile == (BATCH,)
    assert delivery.event_name == "batch.expired"
    assert delivery.delivery_id == "wh_685342e6c53881918bd7bee1e4b9b62c"
    (final,) = delivery.events
    assert (final.kind, final.status, final.error, final.key) == (
        EventKind.FAILED,
        JobStatus.FAILED,
        "expired",
        f"{BATCH}:terminal",
    )
    other = openai.decode_webhook(
        {"content-type": "application/json"},
        json.dumps({"type": "fine_tuning.job.succeeded", "data": {"id": "ft"}}).encode(),
        source="webhook",
    )
    assert other.events == () and other.reconcile == ()


def test_a_delivery_whose_body_is_the_job() -> None:
    replicate = provider("replicate")
    delivery = replicate.decode_webhook(
        *replicate_delivery(prediction("aborted")), source="webhook"
    )
    assert delivery.event_name == "aborted" and delivery.delivery_id == "msg_2fM0b3GxlEb4CXvJ"
    assert [(e.kind, e.error) for e in delivery.events] == [(EventKind.FAILED, "aborted")]
    assert replicate.job_stream_request(PREDICTION).path == STREAM_URL


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b"{",
        json.dumps({"status": "succeeded"}).encode(),
        json.dumps({"id": "", "status": "succeeded"}).encode(),
    ],
)
def test_a_malformed_delivery_is_refused(body: bytes) -> None:
    with pytest.raises(jobwatch.DecodeError):
        provider("replicate").decode_webhook({}, body, source="webhook")


# -- answers -------------------------------------------------------------------------------


#: GitHub's headers on the answer that used the last request of the hour.
_SPENT = {
    "x-ratelimit-remaining": "0",
    "x-ratelimit-reset": "1700000120",
    "date": "Tue, 14 Nov 2023 22:13:20 GMT",
}


@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome", "wait"),
    [
        (403, {"retry-after": "30"}, {"message": "secondary"}, Outcome.RATE_LIMITED, 30.0),
        (429, {"retry-after": "7"}, {}, Outcome.RATE_LIMITED, 7.0),
        (
            403,
            {
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": "1700000120",
                "date": "Tue, 14 Nov 2023 22:13:20 GMT",
            },
            {"message": "API rate limit exceeded"},
            Outcome.RATE_LIMITED,
            120.0,
        ),
        (
            403,
            {},
            {"message": "You have exceeded a secondary rate limit."},
            Outcome.RATE_LIMITED,
            60.0,
        ),
        (403, {}, {"message": "Resource not accessible by integration"}, Outcome.FATAL, None),
        # The request that spends the hour's last unit gets its real answer, with
        # remaining 0: the run is gone, the token refused. The budget pauses what follows.
        (404, _SPENT, {"message": "Not Found"}, Outcome.GONE, None),
        (401, _SPENT, {"message": "Bad credentials"}, Outcome.FATAL, None),
        (422, _SPENT, {"message": "Validation Failed"}, Outcome.FATAL, None),
        (401, {}, {"message": "Bad credentials"}, Outcome.FATAL, None),
        (404, {}, {"message": "Not Found"}, Outcome.GONE, None),
        (502, {}, {}, Outcome.RETRY, None),
    ],
)
def test_github_answers(
    status: int, headers: dict[str, str], body: dict[str, Any], outcome: Outcome, wait: float | None
) -> None:
    github = provider("github-actions", {"repository": REPOSITORY})
    verdict = github.classify(answer(body, status, **headers))
    assert (verdict.outcome, verdict.wait) == (outcome, wait)
    error = github.error_for(answer(body, status, **headers))
    assert isinstance(error, jobwatch.RateLimited) == (outcome is Outcome.RATE_LIMITED)
    if status == 401:
        assert isinstance(error, jobwatch.AuthenticationError), "says to check the key"
    if headers.get("x-ratelimit-remaining") == "0":
        assert verdict.rate_limit is not None and verdict.rate_limit.remaining == 0


def test_errors_say_what_to_do() -> None:
    github = provider("github-actions", {"repository": REPOSITORY})
    refused = github.error_for(answer({"message": "Bad credentials"}, 401))
    assert isinstance(refused, jobwatch.AuthenticationError)
    assert "GitHub answered HTTP 401: Bad credentials" in str(refused)
    assert "GITHUB_TOKEN" in str(refused)
    gone = provider("openai-batch").error_for(
        answer({"error": {"message": "No batch found with id 'b'."}}, 404)
    )
    assert isinstance(gone, jobwatch.JobNotFound) and "No batch found" in str(gone)
    assert isinstance(
        provider("replicate").error_for(Response(status=500, body=b"<html>")), jobwatch.APIError
    )


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({}, {"authorization": "Bearer sk-test"}),
        ({"style": "header", "header": "X-Api-Key"}, {"x-api-key": "sk-test"}),
        (
            {"style": "header", "header": "Authorization", "prefix": "Token "},
            {"authorization": "Token sk-test"},
        ),
        ({"style": "raw"}, {"authorization": "sk-test"}),
        ({"style": "none"}, {}),
    ],
)
def test_auth_styles(auth: dict[str, str], expected: dict[str, str]) -> None:
    built = provider("generic", described(auth=auth, request={"headers": {"Accept": "a/b"}}))
    assert dict(built.status_request("j1").headers) == expected
    assert dict(built.headers()) == {"accept": "a/b"}, "no credentials outside requests"


def test_a_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    config = jobwatch.Config.from_mapping({"jobwatch": {"provider": "openai-batch"}})
    from jobwatch.providers.presets import OpenAIBatchProvider

    request = OpenAIBatchProvider.from_config(config).status_request(BATCH)
    assert request.headers["authorization"] == "Bearer sk-from-env"


def test_a_page_delivery_that_failed() -> None:
    table = described(
        webhook={
            "scheme": "hmac-sha256",
            "event_path": "type",
            "job_id": "id",
            "delivery_path": "webhookId",
            "events": {
                "crawl.page": {
                    "kind": "page",
                    "id": "data[0].metadata.sourceURL",
                    "failed_when": "success == `false`",
                    "error": "error",
                }
            },
        }
    )
    built = provider("generic", table)

    def page(success: bool, **more: Any) -> jobwatch.JobEvent:
        body = {
            "type": "crawl.page",
            "id": "c1",
            "webhookId": "w1",
            "success": success,
            "data": [{"metadata": {"sourceURL": "https://a.example/x"}}],
            **more,
        }
        (event,) = built.decode_webhook({}, json.dumps(body).encode(), source="webhook").events
        return event

    assert (page(True).kind, page(True).key) == (EventKind.PAGE, "c1:page:https://a.example/x")
    failed = page(False, error="timeout")
    assert (failed.kind, failed.error, failed.key) == (
        EventKind.PAGE_FAILED,
        "timeout",
        "c1:page_failed:https://a.example/x",
    )
    assert page(False).error == "failed"


@pytest.mark.parametrize("value", [" sk-from-env", "sk-from-env\n", "sk-fr\u00f6m-env"])
def test_a_key_from_the_environment_that_no_header_can_carry_is_refused_unsaid(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx refused the header naming its value, and the key reached the log; a key outside
    # ASCII made every request raise UnicodeEncodeError.
    monkeypatch.setenv("OPENAI_API_KEY", value)
    config = jobwatch.Config.from_mapping({"jobwatch": {"provider": "openai-batch"}})
    from jobwatch.providers.presets import OpenAIBatchProvider

    with pytest.raises(jobwatch.ConfigError, match="^OPENAI_API_KEY .* remove them") as caught:
        OpenAIBatchProvider.from_config(config)
    assert "sk-fr" not in str(caught.value)


@pytest.mark.parametrize(
    ("request_table", "said"),
    [
        ({"headers": {"X-Token": "t0ken\n"}}, "the value of 'X-Token'"),
        ({"headers": {"X-Token": " t0ken"}}, "the value of 'X-Token'"),
        ({"headers": {"X-Token": "t\u00f6ken"}}, "the value of 'X-Token'"),
    ],
)
def test_a_described_header_no_request_can_carry_is_refused_unsaid(
    request_table: dict[str, Any], said: str
) -> None:
    with pytest.raises(jobwatch.ConfigError, match="remove them") as caught:
        provider("generic", described(request=request_table))
    assert said in str(caught.value) and "t0ken" not in str(caught.value)


def test_an_auth_prefix_no_header_can_carry_is_refused() -> None:
    with pytest.raises(jobwatch.ConfigError, match="prefix .* remove them"):
        provider("generic", described(auth={"style": "header", "prefix": "Token\n"}))
    built = provider("generic", described(auth={"style": "header", "prefix": "Token "}))
    assert dict(built.status_request("j1").headers) == {"x-api-key": "Token sk-test"}


@pytest.mark.parametrize(
    ("name", "body", "asked", "variables"),
    [
        ("replicate", prediction("succeeded"), "other_prediction", {}),
        ("github-actions", run("completed", "success"), "1", {"repository": REPOSITORY}),
    ],
)
def test_a_status_answer_about_another_job_is_refused(
    name: str, body: dict[str, Any], asked: str, variables: dict[str, str]
) -> None:
    # A proxy or cache that mixed answers up: the other job's end would end this job's watch.
    with pytest.raises(jobwatch.DecodeError, match="answered about another job"):
        poll(name, body, asked, **variables)
    snap, _ = poll(name, body, str(body["id"]), **variables)  # its own answer is read
    assert snap.status is JobStatus.COMPLETED


def test_a_described_snapshot_carries_when_the_job_started() -> None:
    body = prediction("processing", started_at="2026-01-20T12:00:01.500Z")
    snap, _ = poll("replicate", body, PREDICTION)
    assert snap.started_at == pytest.approx(
        datetime(2026, 1, 20, 12, 0, 1, 500000, tzinfo=UTC).timestamp()
    )
    snap, _ = poll("replicate", prediction("starting"), PREDICTION)
    assert snap.started_at is None


def test_a_declared_rate_limit_status_waits_for_the_reset_of_a_spent_budget() -> None:
    # An API that refuses a spent budget with a status of its own (here 420) declares it in
    # [rate_limit] statuses: its x-ratelimit-reset says how long to wait, as on a 429.
    described_api = provider("generic", described(rate_limit__statuses=[420, 429]))
    for status in (420, 429):
        verdict = described_api.classify(answer({"message": "slow down"}, status, **_SPENT))
        assert (verdict.outcome, verdict.wait) == (Outcome.RATE_LIMITED, 120.0), status
