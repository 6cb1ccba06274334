"""The receiver's ASGI app mounted in Starlette and FastAPI: where it answers, and where not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from _webhook_helpers import PATH, delivery, receiving, until
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from jobwatch.transports._asgi import _path

pytestmark = pytest.mark.anyio


async def _post(app: Any, url: str, *, follow: bool = False) -> httpx.Response:
    headers, body = delivery()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://service", follow_redirects=follow
    ) as client:
        return await client.post(url, content=body, headers=headers)


@pytest.mark.parametrize(
    ("mount", "url"),
    [
        ("/hooks/reader", "/hooks/reader/"),  # the mount point itself
        ("/hooks", "/hooks/reader"),  # mounted at a prefix of the receiver's path
        ("/hooks/reader", "/hooks/reader/hooks/reader"),  # the path taken after the mount point
        ("/api", "/api/hooks/reader"),
    ],
)
async def test_fastapi_mount_answers_deliveries(mount: str, url: str) -> None:
    async with receiving() as running:
        app = FastAPI()
        app.mount(mount, running.watcher.asgi_app())
        reply = await _post(app, url)
        assert (reply.status_code, reply.json()) == (200, {"ok": True, "duplicate": False})
        await until(lambda: len(running.events) == 1)
    assert running.events[0].job_id == "job_1"


async def test_the_mount_points_slash_redirect_lands_on_the_receiver() -> None:
    # Starlette redirects /hooks/reader to /hooks/reader/ (307); a sender that follows the
    # redirect reaches the receiver.
    async with receiving() as running:
        app = Starlette(routes=[Mount("/hooks/reader", running.watcher.asgi_app())])
        reply = await _post(app, "/hooks/reader", follow=True)
        assert reply.status_code == 200
        await until(lambda: len(running.events) == 1)


async def test_a_starlette_route_to_the_exact_path() -> None:
    async with receiving() as running:
        app = Starlette(routes=[Route(PATH, running.watcher.asgi_app())])
        assert (await _post(app, PATH)).status_code == 200
        await until(lambda: len(running.events) == 1)


@pytest.mark.parametrize(
    ("mount", "url"),
    [
        ("/hooks", "/hooks/other"),
        ("/hooks/reader", "/hooks/reader/other"),
        ("/webhooks", "/webhooks/reader"),
    ],
)
async def test_other_paths_under_the_mount_are_404(mount: str, url: str) -> None:
    async with receiving() as running:
        app = FastAPI()
        app.mount(mount, running.watcher.asgi_app())
        reply = await _post(app, url)
    assert reply.status_code == 404
    assert running.events == []


async def test_served_alone_the_root_is_not_the_receiver() -> None:
    async with receiving() as running:
        reply = await _post(running.watcher.asgi_app(), "/")
    assert reply.status_code == 404


_segment = st.text(alphabet="abz-_.", min_size=1, max_size=5).map(lambda s: "/" + s)
_paths = st.lists(_segment, max_size=3).map("".join)


@given(root=_paths, wanted=_paths.filter(bool), stripped=st.booleans())
def test_the_receivers_path_under_any_mount_point(root: str, wanted: str, stripped: bool) -> None:
    # Whether the framework leaves the mount prefix in `path` or strips it, the receiver's
    # path after the mount point, and the mount point itself, are the receiver.
    for inner in (wanted, "/", ""):
        path = inner if stripped else root + inner
        if not root and inner != wanted:
            continue  # not mounted: only the receiver's own path
        assert _path({"path": path, "root_path": root}, wanted) == wanted


@given(path=st.text(max_size=30), root=st.text(max_size=10), wanted=_paths.filter(bool))
def test_any_other_path_is_reported_as_asked(path: str, root: str, wanted: str) -> None:
    got = _path({"path": path, "root_path": root}, wanted)
    assert got == wanted or path.endswith(got) or got == "/"
