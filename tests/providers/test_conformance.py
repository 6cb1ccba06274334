"""The generic provider, described here, and each preset pass the provider conformance suite,
with samples written from the APIs' documentation."""

from __future__ import annotations

import json

import pytest
from _samples import GITHUB, OPENAI, REPLICATE, answer, provider

from jobwatch.abc import Provider
from jobwatch.testing import ProviderConformance, ProviderSamples

#: A small API described for the generic provider: a value map, counts, a stream with a
#: template URL, webhooks whose body names the event.
CRAWLS = {
    "api": "Crawls",
    "base_url": "https://api.crawls.example",
    "auth": {"style": "header", "header": "x-api-key"},
    "job": {"get": "GET /v2/crawl/{id}", "id": "id", "error": "error"},
    "status": {
        "path": "status",
        "map": {
            "pending": "queued",
            "scraping": "processing",
            "completed": "completed",
            "failed": "failed",
            "cancelled": "cancelled",
        },
    },
    "progress": {"kind": "counts", "done": "completed", "total": "total"},
    "stream": {
        "url": "GET /v2/crawl/{id}/events",
        "events": {"snapshot": "status", "document": {"kind": "page", "id": "url"}},
    },
    "webhook": {
        "scheme": "hmac-sha256",
        "event_path": "type",
        "job_id": "id",
        "delivery_path": "webhookId",
        "payload": "thin",
        "events": {
            "crawl.started": "started",
            "crawl.completed": "completed",
            "crawl.failed": "failed",
            "crawl.cancelled": "cancelled",
        },
    },
}


def crawl(status: str, **fields: object) -> dict[str, object]:
    return {"id": "crawl_1", "status": status, "completed": 3, "total": 10, **fields}


def crawl_hook(kind: str) -> tuple[dict[str, str], bytes]:
    body = {"success": True, "type": f"crawl.{kind}", "id": "crawl_1", "webhookId": "w1"}
    return {"content-type": "application/json"}, json.dumps(body).encode()


class TestGenericProvider(ProviderConformance):
    @pytest.fixture
    def provider(self) -> Provider:
        return provider("generic", CRAWLS)

    @pytest.fixture
    def samples(self) -> ProviderSamples:
        terminal = {
            "completed": crawl("completed", completed=10),
            "failed": crawl("failed", error="robots.txt disallows"),
            "cancelled": crawl("cancelled"),
        }
        return ProviderSamples(
            job_id="crawl_1",
            statuses={
                "queued": answer(crawl("pending")),
                "processing": answer(crawl("scraping")),
                **{status: answer(body) for status, body in terminal.items()},
            },
            unknown_status=answer(crawl("paused")),
            frames={status: ("snapshot", json.dumps(body)) for status, body in terminal.items()},
            webhooks={status: crawl_hook(status) for status in terminal},
            not_found=answer({"success": False, "error": "Crawl job not found"}, 404),
        )


class TestOpenAIBatch(ProviderConformance):
    @pytest.fixture
    def provider(self) -> Provider:
        return provider("openai-batch")

    @pytest.fixture
    def samples(self) -> ProviderSamples:
        return OPENAI


class TestGitHubActions(ProviderConformance):
    @pytest.fixture
    def provider(self) -> Provider:
        return provider("github-actions", {"repository": "octo-org/hello-world"})

    @pytest.fixture
    def samples(self) -> ProviderSamples:
        return GITHUB


class TestReplicate(ProviderConformance):
    @pytest.fixture
    def provider(self) -> Provider:
        return provider("replicate")

    @pytest.fixture
    def samples(self) -> ProviderSamples:
        return REPLICATE
