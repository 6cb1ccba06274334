"""A FastAPI service that receives Reader's signed webhooks and acts on finished jobs.

With this ``jobwatch.toml`` in the working directory (the secret is the one Reader signs
with; register ``https://<your host>/hooks/reader`` with Reader)::

    [jobwatch]
    transport = "webhook"

    [jobwatch.webhook]
    secrets = ["${READER_WEBHOOK_SECRET}"]

run it with hypercorn (installed with jobwatch) or any ASGI server::

    READER_WEBHOOK_SECRET=... hypercorn fastapi_service:app --bind 127.0.0.1:8000
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

import jobwatch

watcher = jobwatch.Watcher(jobwatch.load_config())
finished: dict[str, str] = {}  # job id -> how it ended


@watcher.on("completed", "failed", "cancelled")
async def job_finished(event: jobwatch.JobEvent) -> None:
    # Once per job run, after the delivery was verified and recorded. Keep it short: hand
    # slow work to a queue.
    if event.job_id is not None:
        finished[event.job_id] = event.kind.value


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with watcher:  # until it runs, the receiver answers 503 and the sender retries
        yield


app = FastAPI(lifespan=lifespan)
# Mounted at /hooks, the receiver answers at its path, /hooks/reader (see docs/web-apps.md).
app.mount("/hooks", watcher.asgi_app())


@app.get("/jobs/{job_id}")
async def job(job_id: str) -> dict[str, str | None]:
    return {"job_id": job_id, "finished": finished.get(job_id)}
