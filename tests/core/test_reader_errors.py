"""The Reader provider says why a job or a page failed: ``JobEvent.error``, in Reader's words.

Reader puts a failed job's reason in the job's ``error`` (polls, the workspace ``job:failed``
frame, the ``job.failed`` webhook) and a failed page's in its result entry's ``error`` (the
per-job ``error`` frame, ``job.page``). Where it gives none, ``error`` is the status word.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwatch import EventKind, JobEvent
from jobwatch.abc import Response
from jobwatch.providers.reader import ReaderProvider

READER = ReaderProvider()
JOB = "job_73ab1"


def polled(data: dict[str, Any]) -> list[JobEvent]:
    body = json.dumps({"success": True, "data": data}).encode()
    return READER.decode_status(JOB, Response(status=200, body=body), None, source="poll")[1]


def streamed(name: str, data: dict[str, Any], job_id: str | None = JOB) -> list[JobEvent]:
    return READER.decode_stream_event(job_id, name, json.dumps(data), source="sse")


def delivered(name: str, body: dict[str, Any]) -> list[JobEvent]:
    headers = {"x-reader-event": name, "x-reader-delivery": "d-1"}
    return list(READER.decode_webhook(headers, json.dumps(body).encode(), source="webhook").events)


def failures(error: Any) -> dict[str, JobEvent]:
    """A failed job as each channel reports it, with ``error`` in the body (None: absent)."""
    extra = {} if error is None else {"error": error}
    return {
        "poll": polled({"id": JOB, "status": "failed", "completed": 2, "total": 5, **extra})[-1],
        "job stream": streamed("done", {"status": "failed", **extra})[0],
        "workspace stream": streamed("job:failed", {"jobId": JOB, **extra}, job_id=None)[0],
        "webhook": delivered("job.failed", {"jobId": JOB, "status": "failed", **extra})[0],
    }


def test_a_failed_job_says_why_on_every_channel() -> None:
    reports = failures("Upstream site blocked every URL")
    assert {e.kind for e in reports.values()} == {EventKind.FAILED}
    assert {e.error for e in reports.values()} == {"Upstream site blocked every URL"}
    assert {e.key for e in reports.values()} == {f"{JOB}:terminal"}


@pytest.mark.parametrize("error", [None, ""])
def test_without_a_reason_error_is_the_status_word(error: str | None) -> None:
    assert {e.error for e in failures(error).values()} == {"failed"}


def test_a_reason_that_is_not_text_is_kept_as_its_json() -> None:
    reports = failures({"code": "blocked", "urls": 3})
    assert {e.error for e in reports.values()} == {'{"code":"blocked","urls":3}'}


def test_a_failed_page_says_why() -> None:
    url = "https://example.com/a"
    frame = streamed("error", {"url": url, "error": "HTTP 503 from the site"})[0]
    hook = delivered("job.page", {"jobId": JOB, "url": url, "error": "HTTP 503 from the site"})[0]
    for event in (frame, hook):
        assert (event.kind, event.error) == (EventKind.PAGE_FAILED, "HTTP 503 from the site")
    assert frame.key == hook.key
    bare = streamed("error", {"url": url})[0]  # the error frame itself says it failed
    assert (bare.kind, bare.error) == (EventKind.PAGE_FAILED, "failed")


@pytest.mark.parametrize("status", ["completed", "cancelled"])
def test_only_failures_carry_an_error(status: str) -> None:
    data = {"id": JOB, "status": status, "completed": 5, "total": 5, "error": None}
    assert [e.error for e in polled(data)] == [None]
    assert streamed("done", {"status": status})[0].error is None
    page = streamed("page", {"url": "https://example.com/b", "markdown": "# B"})[0]
    assert (page.kind, page.error) == (EventKind.PAGE, None)
    running = polled(
        {"id": JOB, "status": "processing", "completed": 1, "total": 5, "error": "not final yet"}
    )
    assert [e.error for e in running] == [None, None]


errors = (
    st.none()
    | st.text()
    | st.integers()
    | st.lists(st.text(), max_size=2)
    | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)
)


@settings(max_examples=200, deadline=None)
@given(errors, st.sampled_from(["completed", "failed", "cancelled"]))
def test_error_is_set_exactly_on_failures(error: Any, status: str) -> None:
    extra = {"error": error}
    events = [
        *polled({"id": JOB, "status": status, **extra}),
        *streamed("done", {"status": status, **extra}),
        *delivered("job.page", {"jobId": JOB, "url": "https://example.com/c", **extra}),
    ]
    for event in events:
        failed = event.kind in (EventKind.FAILED, EventKind.PAGE_FAILED)
        assert (event.error is not None) is failed
        if failed:
            assert isinstance(event.error, str) and event.error
        assert JobEvent.from_json(event.to_json()) == event
