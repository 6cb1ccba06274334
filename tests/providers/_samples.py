"""Wire samples of the three preset APIs, as their documentation shows them
(``reference/job-apis.md`` of the design: OpenAI §2.1, Replicate §2.3, GitHub §2.8), and the
providers built from configuration, as a user's file would build them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jobwatch
from jobwatch._registry import base, load
from jobwatch.abc import Provider, Response
from jobwatch.testing import ProviderSamples

REPOSITORY = "octo-org/hello-world"


def provider(name: str, table: Mapping[str, Any] | None = None, **core: Any) -> Provider:
    """The provider ``name`` as ``{"jobwatch": {"provider": name, ..., name: table}}`` builds
    it (an API key set, so that requests carry credentials)."""
    document: dict[str, Any] = {"provider": name, "api_key": "sk-test", **core}
    if table is not None:
        document[name] = dict(table)
    config = jobwatch.Config.from_mapping({"jobwatch": document}, environ={})
    return load("provider", name, base("provider")).from_config(config)  # type: ignore[no-any-return]


def answer(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(status=status, headers=headers, body=json.dumps(body).encode())


# -- OpenAI batches ------------------------------------------------------------------------

BATCH = "batch_abc123"


def batch(
    status: str, *, completed: int = 0, failed: int = 0, total: int = 100, **fields: Any
) -> dict[str, Any]:
    return {
        "id": BATCH,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": 1711471533,
        "in_progress_at": 1711471538,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        **fields,
    }


def openai_event(kind: str, batch_id: str = BATCH) -> tuple[dict[str, str], bytes]:
    body = {
        "id": "evt_685343a1381c819085d44c354e1b330e",
        "object": "event",
        "created_at": 1750287018,
        "type": f"batch.{kind}",
        "data": {"id": batch_id},
    }
    return {
        "webhook-id": "wh_685342e6c53881918bd7bee1e4b9b62c",
        "content-type": "application/json",
    }, json.dumps(body).encode()


OPENAI = ProviderSamples(
    job_id=BATCH,
    statuses={
        "queued": answer(batch("validating", total=0)),
        "processing": answer(batch("in_progress", completed=40, failed=2)),
        "completed": answer(
            batch(
                "completed",
                completed=95,
                failed=5,
                output_file_id="file-out",
                completed_at=1711493133,
            )
        ),
        "failed": answer(
            batch(
                "failed",
                total=0,
                errors={
                    "object": "list",
                    "data": [
                        {
                            "code": "invalid_json_line",
                            "message": "line 3 is not valid JSON",
                            "param": None,
                            "line": 3,
                        }
                    ],
                },
            )
        ),
        "cancelled": answer(batch("cancelled", completed=10, cancelled_at=1711493133)),
    },
    unknown_status=answer(batch("paused")),
    webhooks={
        "completed": openai_event("completed"),
        "failed": openai_event("failed"),
        "cancelled": openai_event("cancelled"),
    },
    not_found=answer(
        {
            "error": {
                "message": "No batch found with id 'batch_x'.",
                "type": "invalid_request_error",
                "code": None,
            }
        },
        404,
    ),
    rate_limited=answer(
        {
            "error": {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
        429,
        **{"retry-after": "20", "x-ratelimit-remaining-requests": "0"},
    ),
)

# -- GitHub Actions workflow runs ----------------------------------------------------------

RUN = "30433642"


def run(
    status: str, conclusion: str | None = None, *, attempt: int = 1, repository: str = REPOSITORY
) -> dict[str, Any]:
    return {
        "id": int(RUN),
        "name": "Build",
        "run_number": 562,
        "event": "push",
        "status": status,
        "conclusion": conclusion,
        "workflow_id": 159038,
        "run_attempt": attempt,
        "run_started_at": "2026-01-20T12:00:00Z",
        "updated_at": "2026-01-20T12:04:10Z",
        "repository": {"full_name": repository},
    }


def github_event(
    action: str,
    workflow_run: Mapping[str, Any],
    *,
    repository: str = REPOSITORY,
    event: str = "workflow_run",
    delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
) -> tuple[dict[str, str], bytes]:
    body = {
        "action": action,
        "workflow_run": dict(workflow_run),
        "repository": {"full_name": repository},
        "sender": {"login": "octocat"},
    }
    return {
        "x-github-event": event,
        "x-github-delivery": delivery,
        "content-type": "application/json",
    }, json.dumps(body).encode()


GITHUB = ProviderSamples(
    job_id=RUN,
    statuses={
        "queued": answer(run("queued")),
        "processing": answer(run("in_progress")),
        "completed": answer(run("completed", "success")),
        "failed": answer(run("completed", "failure")),
        "cancelled": answer(run("completed", "cancelled")),
    },
    unknown_status=answer(run("frozen")),
    webhooks={
        status: github_event("completed", run("completed", conclusion))
        for status, conclusion in (
            ("completed", "success"),
            ("failed", "timed_out"),
            ("cancelled", "cancelled"),
        )
    },
    not_found=answer(
        {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404
    ),
    # GitHub's secondary limit: a 403 that says when to come back.
    rate_limited=answer(
        {"message": "You have exceeded a secondary rate limit."}, 403, **{"retry-after": "60"}
    ),
)

# -- Replicate predictions -----------------------------------------------------------------

PREDICTION = "gm3qorzdhgbfurvjtvhg6dckhu"
STREAM_URL = "https://stream.replicate.com/v1/files/qoxq-bm4nmgkmxr4rbl3ohg4p3mbgbrm3rkmv"


def prediction(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": PREDICTION,
        "model": "replicate/hello-world",
        "version": "5c7d5dc6",
        "input": {"text": "Alice"},
        "logs": "",
        "output": None,
        "error": None,
        "status": status,
        "created_at": "2026-01-20T12:00:00.000Z",
        "urls": {
            "get": f"https://api.replicate.com/v1/predictions/{PREDICTION}",
            "cancel": f"https://api.replicate.com/v1/predictions/{PREDICTION}/cancel",
            "stream": STREAM_URL,
        },
        **fields,
    }


def replicate_delivery(
    body: Mapping[str, Any], delivery: str = "msg_2fM0b3GxlEb4CXvJ"
) -> tuple[dict[str, str], bytes]:
    return {"webhook-id": delivery, "content-type": "application/json"}, json.dumps(body).encode()


REPLICATE = ProviderSamples(
    job_id=PREDICTION,
    statuses={
        "queued": answer(prediction("starting")),
        "processing": answer(prediction("processing", logs="Using seed: 42\n")),
        "completed": answer(
            prediction(
                "succeeded",
                output=["https://replicate.delivery/out.png"],
                completed_at="2026-01-20T12:00:09.000Z",
            )
        ),
        "failed": answer(prediction("failed", error="CUDA out of memory")),
        "cancelled": answer(prediction("canceled")),
    },
    unknown_status=answer(prediction("hibernating")),
    frames={
        "completed": ("done", "{}"),
        "failed": ("error", "CUDA out of memory"),
        "cancelled": ("done", json.dumps({"reason": "canceled"})),
    },
    webhooks={
        "completed": replicate_delivery(prediction("succeeded", output="hi Alice")),
        "failed": replicate_delivery(prediction("failed", error="boom")),
        "cancelled": replicate_delivery(prediction("canceled")),
    },
    not_found=answer({"detail": "Not found."}, 404),
    rate_limited=answer({"detail": "Request was throttled."}, 429, **{"retry-after": "2"}),
)
