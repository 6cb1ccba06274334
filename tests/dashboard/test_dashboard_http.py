"""The dashboard's answers as HTTP defines them, on a real loopback server: HEAD wherever GET
answers, and request bodies over the limit told so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from _dashboard_support import TOKEN, serving

import jobwatch
from jobwatch._dashboard import DashboardApp
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport

pytestmark = pytest.mark.anyio

BEARER = {"authorization": f"Bearer {TOKEN}"}
STATIC = ["/dashboard.js", "/dashboard.css", "/favicon.svg"]
FINITE = ["/", "/jobs", "/job?id=job_1", "/stats", "/dead-letters"]


@asynccontextmanager
async def dashboard(**options: Any) -> AsyncIterator[tuple[DashboardApp, httpx.AsyncClient]]:
    """A running Watcher's dashboard served on loopback, and a client of it."""
    config = jobwatch.Config.from_mapping({"jobwatch": {"dashboard": options}})
    watcher = jobwatch.Watcher(config, transports=[ScriptedTransport()], store=MemoryStore())
    app = watcher.dashboard_app()
    async with watcher, serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        yield app, http


async def same_but_bodiless(http: httpx.AsyncClient, route: str, **kw: Any) -> httpx.Response:
    """HEAD ``route``: the answer GET gives, without its body."""
    got = await http.get(route, **kw)
    head = await http.head(route, **kw)
    assert head.status_code == got.status_code, route
    assert head.content == b"", route
    for name in ("content-type", "cache-control", "location", "www-authenticate"):
        assert head.headers.get(name) == got.headers.get(name), (route, name)
    return head


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_head_answers_wherever_get_does_without_a_body(token: str | None) -> None:
    options = {} if token is None else {"token": token}
    auth = {} if token is None else BEARER
    async with dashboard(**options) as (app, http):
        for route in STATIC + ["/"]:
            head = await same_but_bodiless(http, route, headers=auth)
            assert head.status_code == 200
            # The length of what GET sends, as HTTP asks of a HEAD.
            got = await http.get(route, headers=auth)
            assert int(head.headers["content-length"]) == len(got.content)
        for route in FINITE:
            head = await same_but_bodiless(http, route, headers=auth)
            assert head.status_code == (404 if route.startswith("/job?") else 200), route
        # /login: the form with a token, the way to the page without one.
        login = await same_but_bodiless(http, "/login")
        assert login.status_code == (303 if token is None else 200)
        if token is not None:
            for route in ["/", "/jobs", "/events"]:  # still nothing without the token
                assert (await same_but_bodiless(http, route)).status_code == 401
        # The relay's headers, and no stream: no client is kept for a HEAD.
        events = await http.head("/events", headers=auth)
        assert events.status_code == 200 and events.content == b""
        assert events.headers["content-type"].startswith("text/event-stream")
        assert app.relay.relay_stats()["clients"] == 0
        # A method no route answers names the ones it does.
        put = await http.put("/jobs", headers=auth)
        assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD"
        asset = await http.post("/dashboard.js")
        assert asset.status_code == 405 and asset.headers["allow"] == "GET, HEAD"
        put = await http.put("/login")
        assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD, POST"


REPLAY = {**BEARER, "x-jobwatch-dashboard": "replay", "content-type": "application/json"}


def padded(size: int) -> bytes:
    """A replay body of exactly ``size`` bytes, for a key no dead letter has."""
    body = b'{"key": "job_1:terminal#1", "pad": ""}'
    return body[:-2] + b"x" * (size - len(body)) + body[-2:]


async def test_a_body_over_the_limit_is_told_so_with_413() -> None:
    async with dashboard(token=TOKEN) as (_, http):
        fits = await http.post("/dead-letters/replay", headers=REPLAY, content=padded(4096))
        assert fits.status_code == 404  # read whole: no dead letter has that key
        for body in (padded(4097), padded(200_000)):  # (the server reads the long one in parts)
            big = await http.post("/dead-letters/replay", headers=REPLAY, content=body)
            assert big.status_code == 413, len(body)
            assert big.json() == {
                "error": 'the body is over 4096 bytes: send only {"key": "<the event key>"}'
            }
        form = {"token": TOKEN, "pad": "x" * 4096}
        login = await http.post("/login", data=form)
        assert login.status_code == 413 and "set-cookie" not in login.headers
        assert "over 4096 bytes" in login.text
        assert (await http.post("/login", data={"token": TOKEN})).status_code == 303
