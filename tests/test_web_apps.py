"""The web-app recipes (examples/ and docs/web-apps.md) behind a real ASGI server.

Each application is served by hypercorn with its lifespan, which enters its Watcher; the Reader
simulator creates a job whose inline webhook points at the application, and the signed
deliveries must be answered 200 and reach the application's callback. Django runs on asyncio
only: its ASGI handler is built on asyncio.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from _serving import load_example, serving

from jobwatch.sim import Simulator, running

pytestmark = pytest.mark.anyio

SECRET = "whsec-web-apps-tests-0123456789"


@pytest.fixture
def webhook_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "jobwatch.toml"
    path.write_text(
        '[jobwatch]\ntransport = "webhook"\nstore = "memory"\nsafety_poll = 0\n'
        '[jobwatch.webhook]\nsecrets = ["${TEST_WEBHOOK_SECRET}"]\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("JOBWATCH_CONFIG", str(path))
    return path


async def _deliver_a_job_to(url: str, finished: dict[str, str]) -> tuple[str, list[int | None]]:
    """A simulated job whose webhook posts to ``url``; returns its id and the statuses."""
    simulator = Simulator(time_scale=100)
    async with running(simulator):
        job_id = simulator.create_job(
            urls=["https://example.com/a", "https://example.com/b"],
            webhook={"url": url + "/hooks/reader", "secret": SECRET},
        )
        with anyio.fail_after(10):
            # The callback may run before the simulator has read the answer.
            while job_id not in finished or not simulator.deliveries():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        return job_id, [a.status_code for a in simulator.deliveries()]


@pytest.mark.parametrize("name", ["fastapi_service", "starlette_app"])
async def test_fastapi_and_starlette_recipes(name: str, webhook_config: Path) -> None:
    example = load_example(name)
    async with serving(example.app) as url:
        job_id, statuses = await _deliver_a_job_to(url, example.finished)
        async with httpx.AsyncClient(base_url=url) as client:
            reply = await client.get(f"/jobs/{job_id}")
            other = await client.post("/hooks/other", content=b"{}")
    assert statuses == [200]
    assert reply.json() == {"job_id": job_id, "finished": "completed"}
    assert other.status_code == 404
    assert example.watcher.statistics().transports["webhook"]["deliveries"] == 1


asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@asyncio_only
async def test_django_recipe(webhook_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "_django_site")
    example = load_example("django_asgi")
    async with serving(example.application) as url:
        job_id, statuses = await _deliver_a_job_to(url, example.finished)
        async with httpx.AsyncClient(base_url=url) as client:
            page = await client.get("/")
    assert statuses == [200]
    assert example.finished == {job_id: "completed"}
    assert page.json() == {"served_by": "django"}


@asyncio_only
async def test_django_recipe_behind_a_root_path(
    webhook_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Behind a proxy that strips /api (the server's --root-path), the ASGI path still holds
    # the prefix: the recipe sent /api/hooks/reader to Django, which answered 404.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "_django_site")
    example = load_example("django_asgi")
    async with serving(example.application, root_path="/api") as url:
        job_id, statuses = await _deliver_a_job_to(url + "/api", example.finished)
    assert statuses == [200]
    assert example.finished == {job_id: "completed"}


def test_django_recipe_takes_a_root_path_with_or_without_its_slash(
    webhook_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hypercorn hands the prefix on as configured; another server may keep a trailing slash.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "_django_site")
    mounted = load_example("django_asgi")._mounted_path
    for root in ("/api", "/api/"):
        assert mounted({"path": "/api/hooks/reader", "root_path": root}) == "/hooks/reader"
    assert mounted({"path": "/hooks/reader", "root_path": "/api"}) == "/hooks/reader"
    assert mounted({"path": "/apiary/x", "root_path": "/api"}) == "/apiary/x"


@asyncio_only
async def test_a_watcher_that_cannot_start_fails_the_django_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "_django_site")
    path = tmp_path / "jobwatch.toml"
    # The sqlite store's directory is a file: opening the store fails at start-up.
    (tmp_path / "blocked").write_text("")
    path.write_text(
        '[jobwatch]\ntransport = "webhook"\nsafety_poll = 0\n'
        '[jobwatch.sqlite]\npath = "blocked/state.db"\n'
        "[jobwatch.webhook]\nallow_unsigned = true\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("JOBWATCH_CONFIG", str(path))
    monkeypatch.chdir(tmp_path)
    example = load_example("django_asgi")
    sent: list[dict[str, object]] = []
    messages: list[dict[str, object]] = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await example.application({"type": "lifespan"}, receive, send)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert str(sent[0]["message"]).startswith("jobwatch: ")
    assert "state.db" in str(sent[0]["message"])
