"""A Starlette application receiving Reader's webhooks at /hooks/reader.

Configuration as in ``fastapi_service.py``: ``transport = "webhook"`` and the signing secret
in ``[jobwatch.webhook] secrets``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import jobwatch

watcher = jobwatch.Watcher(jobwatch.load_config())
finished: dict[str, str] = {}


@watcher.on("completed", "failed", "cancelled")
def job_finished(event: jobwatch.JobEvent) -> None:
    if event.job_id is not None:
        finished[event.job_id] = event.kind.value


async def job(request: Request) -> JSONResponse:
    job_id = request.path_params["job_id"]
    return JSONResponse({"job_id": job_id, "finished": finished.get(job_id)})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with watcher:
        yield


app = Starlette(
    routes=[Route("/jobs/{job_id}", job), Mount("/hooks", watcher.asgi_app())],
    lifespan=lifespan,
)
