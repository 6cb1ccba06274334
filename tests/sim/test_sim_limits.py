"""RPM window, concurrency cap, idempotency replay, crawl growth and fault bursts."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from jobwatch.sim import ManualClock, Simulator
from jobwatch.sim._limits import IdempotencyCache, StoredResponse

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., httpx.AsyncClient]


async def test_rpm_sliding_window(make_client: MakeClient) -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock, tier="free")
    async with make_client(simulator) as client:
        for _ in range(10):
            assert (await client.get("/v1/usage/credits")).status_code == 200
            clock.advance(1)
        limited = await client.get("/v1/usage/credits")
        assert limited.status_code == 429
        assert limited.json()["error"] == {
            "code": "rate_limited",
            "message": "Rate limit of 10 requests per 60s exceeded. Retry after 50s.",
            "details": {"limit": 10, "windowSeconds": 60, "retryAfterSeconds": 50},
            "docsUrl": "https://reader.dev/docs/home/concepts/errors#rate-limited",
        }
        assert limited.headers["retry-after"] == "50"
        clock.advance(49.5)
        assert (await client.get("/v1/usage/credits")).status_code == 429
        clock.advance(0.5)  # the first request of the window has just left it
        assert (await client.get("/v1/usage/credits")).status_code == 200
        assert (await client.get("/v1/usage/credits")).status_code == 429


async def test_concurrency_cap_frees_up(make_client: MakeClient) -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock, tier="free")
    async with make_client(simulator) as client:
        for _ in range(2):
            created = await client.post("/v1/read", json={"urls": ["https://example.com/"]})
            assert created.status_code == 201
        capped = await client.post("/v1/read", json={"urls": ["https://example.com/"]})
        assert capped.status_code == 429 and "retry-after" not in capped.headers
        assert capped.json()["error"]["code"] == "concurrency_limited"
        scrape = await client.post("/v1/read", json={"url": "https://example.com/"})
        assert scrape.status_code == 200, "sync scrapes are not jobs"
        clock.advance(5)
        freed = await client.post("/v1/read", json={"urls": ["https://example.com/"]})
        assert freed.status_code == 201


async def test_idempotency_replay(make_client: MakeClient) -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock)
    async with make_client(simulator) as client:
        key = {"x-idempotency-key": "batch-2026-04-04"}
        body = {"urls": ["https://example.com/a", "https://example.com/b"]}
        first = await client.post("/v1/read", json=body, headers=key)
        clock.advance(3600)
        again = await client.post("/v1/read", json=body, headers=key)
        assert again.status_code == first.status_code == 201
        assert again.json() == first.json(), "the first response, verbatim"
        assert again.headers["x-request-id"] != first.headers["x-request-id"]
        other = await client.post("/v1/read", json=body, headers={"x-idempotency-key": "x"})
        assert other.json()["data"]["id"] != first.json()["data"]["id"]
        clock.advance(86_400)
        expired = await client.post("/v1/read", json=body, headers=key)
        assert expired.json()["data"]["id"] != first.json()["data"]["id"]


async def test_crawl_total_grows(make_client: MakeClient) -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock, seed=3)
    async with make_client(simulator) as client:
        body = {"url": "https://docs.example.com/", "maxDepth": 3, "maxPages": 40}
        created = (await client.post("/v1/read", json=body)).json()["data"]
        assert (created["mode"], created["total"]) == ("crawl", 1)
        totals = []
        for _ in range(60):
            clock.advance(0.5)
            job = (await client.get(f"/v1/jobs/{created['id']}")).json()["data"]
            totals.append(job["total"])
            if job["status"] == "completed":
                break
        assert job["status"] == "completed"
        assert totals == sorted(totals) and 1 < totals[-1] <= 40 and len(set(totals)) > 2
        assert job["completed"] == job["total"]
        hosts = {r["url"].split("/")[2] for r in simulator.job(created["id"])["results"]}
        assert hosts == {"docs.example.com"}


async def test_bursts_are_counted(make_client: MakeClient) -> None:
    simulator = Simulator(clock=ManualClock(), faults="error_burst=2,rate_limit_burst=1")
    async with make_client(simulator) as client:
        statuses = [(await client.get("/v1/usage/credits")).status_code for _ in range(4)]
        assert statuses == [500, 500, 429, 200]
        assert simulator.fault_counts()["error_burst"] == 2
        assert simulator.fault_counts()["rate_limit_burst"] == 1
        simulator.set_faults("rate_limit_burst=1")
        limited = await client.get("/v1/usage/credits")
        assert limited.headers["retry-after"] == "1"
        assert simulator.fault_counts()["rate_limit_burst"] == 2


async def test_request_counts(make_client: MakeClient) -> None:
    simulator = Simulator(clock=ManualClock())
    async with make_client(simulator) as client, make_client(simulator, "rdr_other") as other:
        await client.get("/v1/usage/credits", headers={"user-agent": "mybot/1"})
        await client.get("/v1/jobs/job_a")
        await client.get("/v1/jobs/job_b")
        await other.get("/v1/usage/credits")
        await client.get("/_sim/state")
    counts = simulator.request_counts()
    assert counts.total == 4
    assert counts.by_api_key == {"rdr_sim": 3, "rdr_other": 1}
    assert counts.by_user_agent["mybot/1"] == 1
    assert counts.by_endpoint == {"GET /v1/usage/credits": 2, "GET /v1/jobs/{id}": 2}


def test_expired_idempotency_keys_are_forgotten() -> None:
    # A simulator left running keeps a key for 24 simulated hours, not for ever: keys that are
    # never sent again must not pile up.
    cache = IdempotencyCache(ttl=10.0)
    stored = StoredResponse(status=201, body=b"{}")
    for n in range(1000):
        cache.put(f"key-{n}", float(n) / 100, stored)
    assert len(cache) == 1000
    cache.put("late", 100.0, stored)
    assert len(cache) == 1
    assert cache.get("late", 105.0) == stored and cache.get("key-999", 105.0) is None
