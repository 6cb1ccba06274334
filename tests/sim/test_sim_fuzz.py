"""Whatever arrives, the simulator answers with Reader's envelope and never with a 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simcheck import assert_valid

from jobwatch.sim import ManualClock, Simulator

pytestmark = pytest.mark.anyio

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
READ_KEYS = ["url", "urls", "formats", "maxDepth", "maxPages", "timeoutMs", "webhook", "cache"]
URLISH = st.sampled_from(["https://example.com/a", "http://x.test", "nope", "", "ftp://a.b"])
READ_BODIES = st.dictionaries(
    st.sampled_from(READ_KEYS), JSON | URLISH | st.lists(URLISH, max_size=3), max_size=4
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fresh_client() -> tuple[ManualClock, httpx.AsyncClient]:
    clock = ManualClock()
    simulator = Simulator(clock=clock, tier="enterprise")
    transport = httpx.ASGITransport(app=simulator.app)
    headers = {"x-api-key": simulator.api_key}
    return clock, httpx.AsyncClient(
        transport=transport, base_url="http://sim.test", headers=headers
    )


def _check(response: httpx.Response, path: str) -> None:
    assert response.status_code < 500, response.text
    body = assert_valid(response, path)
    if response.status_code >= 400:
        assert body["success"] is False


@FUZZ
@given(body=st.one_of(READ_BODIES, JSON))
async def test_read_with_any_json(body: Any) -> None:
    clock, client = _fresh_client()
    async with client:
        response = await client.post("/v1/read", content=json.dumps(body))
        _check(response, "/v1/read")
        clock.advance(3600)


@FUZZ
@given(raw=st.binary(max_size=200))
async def test_read_with_any_bytes(raw: bytes) -> None:
    _, client = _fresh_client()
    async with client:
        _check(await client.post("/v1/read", content=raw), "/v1/read")


@FUZZ
@given(
    query=st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40),
    pairs=st.dictionaries(st.sampled_from(["skip", "limit", "x"]), st.text(max_size=8), max_size=3),
)
async def test_get_job_with_any_query(query: str, pairs: dict[str, str]) -> None:
    _, client = _fresh_client()
    async with client:
        created = await client.post("/v1/read", json={"urls": ["https://example.com/a"]})
        job_id = created.json()["data"]["id"]
        _check(await client.get(f"/v1/jobs/{job_id}?{query}"), "/v1/jobs/{id}")
        _check(await client.get(f"/v1/jobs/{job_id}", params=pairs), "/v1/jobs/{id}")


@FUZZ
@given(body=JSON, path=st.sampled_from(["/v1/webhooks", "/v1/webhooks/wh_nope"]))
async def test_webhooks_with_any_json(body: Any, path: str) -> None:
    _, client = _fresh_client()
    async with client:
        method = "POST" if path == "/v1/webhooks" else "PATCH"
        response = await client.request(method, path, content=json.dumps(body))
        _check(response, "/v1/webhooks" if method == "POST" else "/v1/webhooks/{id}")
