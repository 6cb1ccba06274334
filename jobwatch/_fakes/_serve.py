"""Serving a fake: `running_fake`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TypeVar

import anyio

from ..transports._serve import serve_app
from ._fake_api import FakeAPI

__all__ = ["running_fake"]

F = TypeVar("F", bound=FakeAPI)


@asynccontextmanager
async def running_fake(fake: F, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[F]:
    """Serve `fake` over HTTP for the duration of the block, with its clock and webhook
    sender; port 0 picks a free port. Yields the fake, whose `url` and `base_url` are set::

        async with running_fake(OpenAIBatchFake(time_scale=100)) as fake:
            config = jobwatch.Config.from_mapping(fake.config(transport="poll"))
    """
    async with anyio.create_task_group() as tg:
        await tg.start(fake.run)
        fake.url = await tg.start(partial(serve_app, fake, host, port))
        try:
            yield fake
        finally:
            fake.url = None
            tg.cancel_scope.cancel()
