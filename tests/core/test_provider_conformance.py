"""The Reader provider passes the conformance suite a third-party provider subclasses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobwatch import Config
from jobwatch.abc import Provider, Response
from jobwatch.providers.reader import ReaderProvider
from jobwatch.testing import ProviderConformance, ProviderSamples

JOB = "job_9fba2"


def snapshot(status: str, **fields: Any) -> Response:
    data = {
        "id": JOB,
        "status": status,
        "mode": "batch",
        "completed": 2,
        "total": 2,
        "creditsUsed": 2,
        "error": None,
        "results": [],
        **fields,
    }
    return Response(status=200, body=json.dumps({"success": True, "data": data}).encode())


def webhook(event: str, body: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    headers = {
        "content-type": "application/json",
        "x-reader-event": event,
        "x-reader-delivery": f"d-{event}",
        "x-reader-timestamp": "1712275200",
    }
    return headers, json.dumps({"jobId": JOB, **body}).encode()


class TestReaderConformance(ProviderConformance):
    @pytest.fixture
    def provider(self) -> Provider:
        return ReaderProvider(Config.from_mapping({"jobwatch": {"api_key": "rdr_x"}}))

    @pytest.fixture
    def samples(self) -> ProviderSamples:
        failed = "the crawl exceeded its page limit"
        return ProviderSamples(
            job_id=JOB,
            statuses={
                "queued": snapshot("queued", completed=0),
                "processing": snapshot("processing", completed=1),
                "completed": snapshot("completed"),
                "failed": snapshot("failed", error=failed),
                "cancelled": snapshot("cancelled", completed=1),
            },
            unknown_status=snapshot("paused"),
            frames={
                "completed": (
                    "done",
                    json.dumps({"status": "completed", "completed": 2, "total": 2}),
                ),
                "failed": ("done", json.dumps({"status": "failed", "error": failed})),
                "cancelled": ("done", json.dumps({"status": "cancelled"})),
            },
            webhooks={
                "completed": webhook(
                    "job.completed",
                    {"status": "completed", "completed": 2, "total": 2, "creditsUsed": 2},
                ),
                "failed": webhook("job.failed", {"status": "failed", "error": failed}),
            },
            not_found=Response(
                status=404,
                body=json.dumps(
                    {"success": False, "error": {"code": "not_found", "message": "Job not found"}}
                ).encode(),
            ),
            rate_limited=Response(
                status=429,
                headers={"retry-after": "12"},
                body=json.dumps(
                    {
                        "success": False,
                        "error": {
                            "code": "rate_limited",
                            "message": "Too many",
                            "details": {"retryAfterSeconds": 12},
                        },
                    }
                ).encode(),
            ),
        )
