"""A Django project's ``asgi.py`` that also receives Reader's webhooks at /hooks/reader.

Django answers no ASGI ``lifespan`` messages, so this module is the application the ASGI
server runs: lifespan enters the Watcher, requests under /hooks/ go to the receiver, and
everything else to Django. Configuration as in ``fastapi_service.py``. Run it with::

    hypercorn mysite.asgi:application
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

import jobwatch

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_app = get_asgi_application()

watcher = jobwatch.Watcher(jobwatch.load_config())
hooks = watcher.asgi_app()
finished: dict[str, str] = {}


@watcher.on("completed", "failed", "cancelled")
def job_finished(event: jobwatch.JobEvent) -> None:
    if event.job_id is not None:
        finished[event.job_id] = event.kind.value


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and _mounted_path(scope).startswith("/hooks/"):
        await hooks(scope, receive, send)
    else:
        await django_app(scope, receive, send)


def _mounted_path(scope: dict[str, Any]) -> str:
    """The path after the prefix a proxy strips (``root_path``), which servers keep in
    ``path``: behind ``--root-path /api``, ``/api/hooks/reader`` is ``/hooks/reader``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "").rstrip("/")
    return path[len(root) :] if root and path.startswith(root + "/") else path


async def lifespan(receive: Any, send: Any) -> None:
    await receive()  # lifespan.startup
    started = False
    try:
        async with watcher:
            await send({"type": "lifespan.startup.complete"})
            started = True
            await receive()  # lifespan.shutdown
    except Exception as exc:  # the server reports it and stops (a wrong configuration, say)
        phase = "shutdown" if started else "startup"
        await send({"type": f"lifespan.{phase}.failed", "message": f"jobwatch: {exc}"})
        return
    await send({"type": "lifespan.shutdown.complete"})
