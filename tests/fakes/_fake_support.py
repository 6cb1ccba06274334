"""Helpers of the fakes' tests: a receiver that records webhook deliveries, a client, the
scheme verifiers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, MutableMapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import attrs
import httpx

from jobwatch._registry import load
from jobwatch.abc import Scheme
from jobwatch.transports._serve import serve_app


@attrs.frozen
class Received:
    headers: Mapping[str, str]
    body: bytes


class Receiver:
    """An ASGI app that records every POST and answers with `answers` (then 204)."""

    def __init__(self) -> None:
        self.url = ""
        self.received: list[Received] = []
        self.answers: list[int] = []
        self._changed: anyio.Event | None = None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers=headers, body=body))
        status = self.answers.pop(0) if self.answers else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if self._changed is not None:
            self._changed.set()

    async def wait(self, count: int) -> list[Received]:
        """Wait (10 s at most) until `count` deliveries arrived; return them all."""
        with anyio.fail_after(10):
            while len(self.received) < count:
                self._changed = anyio.Event()
                await self._changed.wait()
        return self.received


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with anyio.create_task_group() as tg:
        receiver.url = await tg.start(partial(serve_app, receiver, "127.0.0.1", 0)) + "/hook"
        try:
            yield receiver
        finally:
            tg.cancel_scope.cancel()


def scheme(name: str, secret: str) -> Scheme:
    """The installed scheme `name`, as a receiver configured with `secret` builds it."""
    kind: type[Scheme] = load("scheme", name, Scheme)
    return kind([secret], tolerance=300)


def verify(name: str, secret: str, received: Received) -> None:
    """Raise WebhookVerificationError unless `received` verifies as jobwatch's receiver does."""
    scheme(name, secret).verify(received.headers, received.body, now=time.time())


def client(base_url: str, token: str, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {token}", **headers}
    )
