"""Signed deliveries that decode, but hold what no durable store can keep, are refused with 400.

Answered 503 instead, the sender would retry them for as long as it retries, and never once
be recorded: a count past SQLite's 64-bit integers, an id that is not Unicode text (a JSON
escape of half a character, which neither SQLite nor Redis can write as UTF-8).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from _webhook_helpers import PATH, delivery, receiving

import jobwatch
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.transports._signatures import GitHubScheme, StandardWebhooksScheme
from jobwatch.transports.webhook import WebhookTransport

pytestmark = pytest.mark.anyio

_TOO_BIG = 2**63  # one past SQLite's largest INTEGER


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        (
            "job.started",
            {"jobId": "job_1", "status": "processing", "completed": 1, "total": _TOO_BIG},
        ),
        ("job.completed", {"jobId": "job_1", "status": "completed", "completed": _TOO_BIG}),
        ("job.completed", {"jobId": "job_1", "status": "completed", "total": 10**30}),
    ],
)
async def test_a_reader_count_no_store_holds_is_400_not_503_forever(
    tmp_path: Path, event: str, payload: dict[str, Any]
) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    async with receiving(store=store) as running, running.client() as client:
        headers, body = delivery(event, payload)
        replies = [await client.post(PATH, content=body, headers=headers) for _ in range(2)]
    assert [r.status_code for r in replies] == [400, 400], replies[0].text
    assert f"must be at most {_TOO_BIG - 1}" in replies[0].json()["error"], replies[0].text
    assert running.events == []


async def test_the_largest_count_sqlite_holds_is_recorded(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    most = _TOO_BIG - 1
    payload = {"jobId": "job_1", "status": "completed", "completed": most, "total": most}
    async with receiving(store=store) as running, running.client() as client:
        headers, body = delivery("job.completed", payload)
        reply = await client.post(PATH, content=body, headers=headers)
        assert reply.status_code == 200, reply.text
        final = await running.watcher.wait("job_1", timeout=5)
    assert (final.completed, final.total) == (most, most)


_SECRET = "whsec_" + base64.b64encode(b"replicate-test-secret-0123").decode()
_REPOSITORY = "octo-org/hello-world"


@asynccontextmanager
async def _generic(
    tmp_path: Path, provider: str, secret: str, **tables: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, list[Any]]]:
    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "provider": provider,
                "api_key": "test-key",
                "transport": "webhook",
                "safety_poll": 0,
                "webhook": {"secrets": [secret]},
                **tables,
            }
        }
    )
    transport = WebhookTransport.from_config(config)
    store = SQLiteStore(tmp_path / "state.db")
    watcher = jobwatch.Watcher(config, transports=[transport], store=store)
    events: list[jobwatch.JobEvent] = []
    watcher.subscribe(events.append)
    async with watcher:
        app: Any = watcher.asgi_app()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hook"
        ) as client:
            yield client, events


async def test_a_generic_job_id_that_is_not_unicode_is_400_not_503_forever(
    tmp_path: Path,
) -> None:
    # Half of a character, escaped in JSON: valid JSON text, but no store can write it.
    body = json.dumps({"id": "p_\ud800", "status": "succeeded"}).encode()
    async with _generic(tmp_path, "replicate", _SECRET) as (client, events):
        replies = []
        for n in range(2):
            headers = StandardWebhooksScheme([_SECRET]).sign(
                body, now=time.time(), delivery_id=f"msg_{n}"
            )
            headers["content-type"] = "application/json"
            replies.append(await client.post("/hooks/replicate", content=body, headers=headers))
    assert [r.status_code for r in replies] == [400, 400], replies[0].text
    assert "Unicode" in replies[0].json()["error"], replies[0].text
    assert events == []


async def test_a_generic_attempt_no_store_holds_is_400_not_503_forever(tmp_path: Path) -> None:
    run = {
        "id": 30433642,
        "status": "in_progress",
        "conclusion": None,
        "run_attempt": _TOO_BIG,
        "repository": {"full_name": _REPOSITORY},
    }
    body = json.dumps(
        {"action": "in_progress", "workflow_run": run, "repository": {"full_name": _REPOSITORY}}
    ).encode()
    secret = "github-test-secret-0123"
    tables = {"github-actions": {"repository": _REPOSITORY}}
    async with _generic(tmp_path, "github-actions", secret, **tables) as (client, events):
        replies = []
        for n in range(2):
            headers = {
                **GitHubScheme([secret]).sign(body, now=time.time()),
                "content-type": "application/json",
                "x-github-event": "workflow_run",
                "x-github-delivery": f"d-{n}",
            }
            replies.append(
                await client.post("/hooks/github-actions", content=body, headers=headers)
            )
    assert [r.status_code for r in replies] == [400, 400], replies[0].text
    assert f"at most {_TOO_BIG - 1}" in replies[0].json()["error"], replies[0].text
    assert events == []
