"""Shared by the tests of examples/ and docs/web-apps.md: load an example, serve an ASGI app.

:func:`serving` runs an application under hypercorn on a loopback port (port 0), on the
running backend, with the ASGI lifespan — so that an application's start-up and shut-down code
runs as it does in production, which ``httpx.ASGITransport`` does not do.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import sniffio
from hypercorn.config import Config as HypercornConfig

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """A fresh import of ``examples/<name>.py`` (its module-level code runs again)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}_{uuid.uuid4().hex[:8]}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def serving(app: Any, *, root_path: str = "") -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn on 127.0.0.1 at a free port; yields its base URL.
    ``root_path``: the prefix a proxy in front would strip (hypercorn's ``--root-path``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here on
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    config.root_path = root_path
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        if sniffio.current_async_library() == "trio":
            from hypercorn.trio import serve as trio_serve

            await tg.start(_trio_serve, trio_serve, app, config, stop.wait)
        else:
            from hypercorn.asyncio import serve as asyncio_serve

            started = anyio.Event()
            tg.start_soon(_asyncio_serve, asyncio_serve, app, config, stop.wait, started)
            await started.wait()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()


async def _trio_serve(
    serve: Callable[..., Any],
    app: Any,
    config: HypercornConfig,
    trigger: Callable[[], Any],
    *,
    task_status: Any,
) -> None:
    await serve(app, config, shutdown_trigger=trigger, task_status=task_status)


async def _asyncio_serve(
    serve: Callable[..., Any],
    app: Any,
    config: HypercornConfig,
    trigger: Callable[[], Any],
    started: anyio.Event,
) -> None:
    # hypercorn's asyncio server has no task_status: the socket already listens, so a client
    # connecting before it accepts waits in the backlog.
    started.set()
    await serve(app, config, shutdown_trigger=trigger)
