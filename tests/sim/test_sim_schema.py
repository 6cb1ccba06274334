"""Every JSON response of the simulator validates against Reader's OpenAPI schemas."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from simcheck import assert_valid

from jobwatch.sim import ManualClock, Simulator, Step

pytestmark = pytest.mark.anyio

Client = tuple[Simulator, httpx.AsyncClient]
URLS = [f"https://example.com/docs/page-{n}" for n in range(25)]


async def test_batch_job_lifecycle(sim_client: Client, clock: ManualClock) -> None:
    simulator, client = sim_client
    created = assert_valid(await client.post("/v1/read", json={"urls": URLS}), "/v1/read")
    assert created["data"]["status"] == "queued"
    assert (created["data"]["mode"], created["data"]["total"]) == ("batch", 25)
    job_id = created["data"]["id"]

    clock.advance(3)
    response = await client.get(f"/v1/jobs/{job_id}")
    body = assert_valid(response, "/v1/jobs/{id}")
    assert body["data"]["status"] == "processing"
    assert body["data"]["startedAt"] is not None and body["data"]["completedAt"] is None

    clock.advance(60)
    body = assert_valid(await client.get(f"/v1/jobs/{job_id}"), "/v1/jobs/{id}")
    assert body["data"]["status"] == "completed"
    assert body["data"]["creditsUsed"] == 25 == body["data"]["completed"]
    assert body["pagination"] == {
        "total": 25,
        "skip": 0,
        "limit": 20,
        "hasMore": True,
        "next": f"http://sim.test/v1/jobs/{job_id}?skip=20&limit=20",
    }
    last = assert_valid(await client.get(body["pagination"]["next"]), "/v1/jobs/{id}")
    assert len(last["data"]["results"]) == 5
    assert last["pagination"]["hasMore"] is False and "next" not in last["pagination"]
    assert [r["url"] for r in body["data"]["results"] + last["data"]["results"]] == URLS


async def test_cancel_and_conflict(sim_client: Client) -> None:
    _, client = sim_client
    job_id = (await client.post("/v1/read", json={"urls": URLS})).json()["data"]["id"]
    cancelled = assert_valid(await client.delete(f"/v1/jobs/{job_id}"), "/v1/jobs/{id}")
    assert cancelled == {"success": True, "data": {"id": job_id, "status": "cancelled"}}
    again = await client.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 409
    assert assert_valid(again, "/v1/jobs/{id}") == {
        "success": False,
        "error": {
            "code": "conflict",
            "message": "Job is already cancelled",
            "details": {"status": "cancelled"},
            "docsUrl": "https://reader.dev/docs/home/concepts/errors#conflict",
        },
    }


async def test_retry(sim_client: Client, clock: ManualClock) -> None:
    simulator, client = sim_client
    job_id = simulator.create_job(
        steps=[Step(kind="page"), Step(kind="page_error", error="HTTP 503"), Step(kind="page")]
    )
    busy = await client.post(f"/v1/jobs/{job_id}/retry")
    assert busy.status_code == 409
    assert_valid(busy, "/v1/jobs/{id}/retry")
    clock.advance(10)
    retried = assert_valid(await client.post(f"/v1/jobs/{job_id}/retry"), "/v1/jobs/{id}/retry")
    assert retried["data"] == {"id": job_id, "status": "queued", "retrying": 1}
    clock.advance(10)
    done = assert_valid(await client.get(f"/v1/jobs/{job_id}"), "/v1/jobs/{id}")["data"]
    assert done["status"] == "completed" and done["completed"] == 3
    assert not [r for r in done["results"] if "error" in r]
    nothing = await client.post(f"/v1/jobs/{job_id}/retry")
    assert nothing.status_code == 400
    assert assert_valid(nothing, "/v1/jobs/{id}/retry")["error"]["message"] == (
        "Job has no failed URLs to retry"
    )


async def test_sync_scrape_and_crawl(sim_client: Client) -> None:
    _, client = sim_client
    scraped = await client.post("/v1/read", json={"url": "https://example.com"})
    assert scraped.status_code == 200
    data = assert_valid(scraped, "/v1/read")["data"]
    assert data["url"] == "https://example.com" and data["markdown"].startswith("# ")
    crawl = await client.post("/v1/read", json={"url": "https://example.com", "maxPages": 5})
    assert crawl.status_code == 201
    assert assert_valid(crawl, "/v1/read")["data"]["mode"] == "crawl"


async def test_credits(sim_client: Client) -> None:
    _, client = sim_client
    await client.post("/v1/read", json={"url": "https://example.com"})
    credits = assert_valid(await client.get("/v1/usage/credits"), "/v1/usage/credits")["data"]
    assert (credits["balance"], credits["used"], credits["limit"]) == (4999, 1, 5000)
    assert credits["tier"] == "pro"


async def test_webhooks_crud(sim_client: Client) -> None:
    _, client = sim_client
    body = {
        "url": "https://hooks.example.com/reader",
        "name": "ci",
        "events": ["job.completed", "job.failed"],
        "secret": "s" * 32,
        "headers": {"X-Team": "data"},
    }
    created = await client.post("/v1/webhooks", json=body)
    assert created.status_code == 201
    hook = assert_valid(created, "/v1/webhooks")["data"]
    assert hook["secret"] == "s" * 32
    assert hook["deliveryStats"] == {
        "totalAttempts": 0,
        "failedDeliveries": 0,
        "lastDeliveryAt": None,
        "lastDeliveryStatus": None,
    }
    for n in range(9):
        assert (await client.post("/v1/webhooks", json={**body, "name": f"n{n}"})).is_success
    full = await client.post("/v1/webhooks", json=body)
    assert full.status_code == 409
    assert assert_valid(full, "/v1/webhooks")["error"] == {
        "code": "conflict",
        "message": "Maximum of 10 webhooks per workspace",
        "details": {"limit": 10},
        "docsUrl": "https://reader.dev/docs/home/concepts/errors#conflict",
    }
    listed = assert_valid(await client.get("/v1/webhooks", params={"limit": 4}), "/v1/webhooks")
    assert len(listed["data"]) == 4 and all("secret" not in h for h in listed["data"])
    assert listed["pagination"]["next"] == "http://sim.test/v1/webhooks?skip=4&limit=4"

    patched = await client.patch(f"/v1/webhooks/{hook['id']}", json={"active": False})
    assert assert_valid(patched, "/v1/webhooks/{id}")["data"]["active"] is False
    assert "secret" not in patched.json()["data"]
    deleted = assert_valid(await client.delete(f"/v1/webhooks/{hook['id']}"), "/v1/webhooks/{id}")
    assert deleted == {"success": True, "data": {"id": hook["id"]}}
    for method in ("PATCH", "DELETE"):
        missing = await client.request(method, f"/v1/webhooks/{hook['id']}", json={})
        assert missing.status_code == 404
        assert_valid(missing, "/v1/webhooks/{id}")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"url": "https://h.example.com/x", "name": "n", "events": []}, "events"),
        ({"url": "ftp://h.example.com/x", "name": "n", "events": ["job.page"]}, "url"),
        ({"url": "https://h.example.com", "name": "n", "events": ["job.x"]}, "events.0"),
        ({"url": "https://h.example.com", "name": "", "events": ["job.page"]}, "name"),
        (
            {"url": "https://h.example.com", "name": "n", "events": ["job.page"], "secret": "x"},
            "secret",
        ),
    ],
)
async def test_webhook_create_invalid(sim_client: Client, body: object, path: str) -> None:
    _, client = sim_client
    response = await client.post("/v1/webhooks", json=body)
    assert response.status_code == 400
    issues = assert_valid(response, "/v1/webhooks")["error"]["details"]["issues"]
    assert [issue["path"] for issue in issues] == [path]


async def test_errors_of_each_code(make_client: Callable[..., httpx.AsyncClient]) -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock, tier="free")
    async with make_client(simulator) as client, make_client(simulator, "rdr_wrong") as stranger:
        unauthenticated = await stranger.get("/v1/usage/credits")
        assert unauthenticated.status_code == 401
        assert assert_valid(unauthenticated, "/v1/usage/credits")["error"]["message"] == (
            "Missing or invalid API key"
        )
        missing = await client.get("/v1/jobs/job_nope")
        assert missing.status_code == 404
        assert assert_valid(missing, "/v1/jobs/{id}")["error"]["message"] == "Job not found"
        bad = await client.post("/v1/read", json={"urls": ["not a url"]})
        assert bad.status_code == 400
        assert assert_valid(bad, "/v1/read")["error"]["details"]["issues"] == [
            {"path": "urls.0", "code": "invalid_string", "message": "Invalid url"}
        ]
        simulator.set_credits(used=999)
        broke = await client.post("/v1/read", json={"urls": URLS[:5]})
        assert broke.status_code == 402
        assert assert_valid(broke, "/v1/read")["error"]["details"]["required"] == 5
        simulator.set_credits(used=0)

        for _ in range(2):
            job = await client.post("/v1/read", json={"urls": URLS})
            assert job.status_code == 201
        bad_query = await client.get(f"/v1/jobs/{job.json()['data']['id']}?limit=101&skip=-1")
        assert bad_query.status_code == 400
        issues = assert_valid(bad_query, "/v1/jobs/{id}")["error"]["details"]["issues"]
        assert [issue["path"] for issue in issues] == ["skip", "limit"]
        busy = await client.post("/v1/read", json={"urls": URLS})
        assert busy.status_code == 429 and "retry-after" not in busy.headers
        assert assert_valid(busy, "/v1/read")["error"] == {
            "code": "concurrency_limited",
            "message": "Concurrency limit reached. You have 2 active jobs (limit: 2).",
            "details": {"active": 2, "max": 2},
            "docsUrl": "https://reader.dev/docs/home/concepts/errors#concurrency-limited",
        }
        clock.advance(60)
        simulator.set_faults("error_burst=1")
        broken = await client.get("/v1/usage/credits")
        assert broken.status_code == 500
        assert assert_valid(broken, "/v1/usage/credits")["error"]["code"] == "internal_error"
        for _ in range(10):
            assert (await client.get("/v1/usage/credits")).status_code == 200
        limited = await client.post("/v1/read", json={"url": "https://example.com"})
        assert limited.status_code == 429
        error = assert_valid(limited, "/v1/read")["error"]
        assert error["code"] == "rate_limited"
        assert limited.headers["retry-after"] == str(error["details"]["retryAfterSeconds"])


async def test_unknown_route_and_method(sim_client: Client) -> None:
    _, client = sim_client
    unknown = await client.get("/v1/nothing")
    assert unknown.status_code == 404
    assert assert_valid(unknown, "/v1/jobs/{id}")["error"]["code"] == "not_found"
    wrong = await client.put("/v1/read", json={})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert assert_valid(wrong, "/v1/read")["error"]["code"] == "invalid_request"
