"""The webhook receiver as an ASGI 3 application, for any ASGI server on asyncio or trio.

:class:`WebhookApp` answers the early checks (404, 405, 413 from ``Content-Length``, 415)
before reading the body, reads at most ``max_body`` bytes of it, and hands the rest to the
shared :class:`~jobwatch.transports._receiver.Receiver`. It answers ``lifespan`` messages so
that a server may run it alone, and refuses websockets.

Mounted in a framework (a ``root_path`` in the scope), it answers at the receiver's path taken
either as the whole URL path or as the part after the mount point, and at the mount point
itself: with the default path ``/hooks/<provider>``, ``app.mount("/hooks", ...)`` serves
``/hooks/<provider>`` and ``app.mount("/hooks/<provider>", ...)`` serves ``/hooks/<provider>/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ._receiver import Receiver, Reply, normalize_headers
from ._serve import lifespan

__all__ = ["ASGIApp", "WebhookApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _path(scope: Scope, wanted: str | None) -> str:
    """The path to check against the receiver's ``wanted`` one: ``wanted`` itself when the
    request is for the receiver wherever it is mounted, else the path after the mount point."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "").rstrip("/")
    # ASGI puts a mount prefix in root_path, and in `path` too (frameworks that follow older
    # servers strip it from `path`): the part after it is what the app itself was asked for.
    inner = path[len(root) :] if root and (path == root or path.startswith(root + "/")) else path
    if wanted is not None and (
        inner == wanted
        or root + inner == wanted  # mounted at a prefix of the receiver's path
        or (root and inner in ("", "/"))  # the mount point itself
    ):
        return wanted
    return inner or "/"


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
    headers = dict(pairs)
    # A repeated header (rare) is joined the way normalize_headers joins it.
    return headers if len(headers) == len(pairs) else normalize_headers(pairs)


def _length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


class WebhookApp:
    """An ASGI app around a :class:`Receiver`; ``receiver`` may be attached later.

    Until the Watcher starts and attaches its receiver, every delivery is answered 503, so
    that the sender retries (mounting the app before the Watcher runs is fine).
    """

    def __init__(self, receiver: Receiver | None = None) -> None:
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        receiver = self.receiver
        if receiver is None:
            await _send(send, Reply(503, (("retry-after", "1"),), b"receiver not started\n"))
            return
        method: str = scope.get("method", "GET")
        path = _path(scope, receiver.path)
        headers = _headers(scope.get("headers", ()))
        early = receiver.check(method, path, headers, _length(headers))
        if early is not None:
            await _send(send, receiver.rejected(early))
            return
        try:
            body = await _read_body(receive, receiver.max_body)
        except _TooLarge:
            too_large = receiver.check(method, path, headers, receiver.max_body + 1)
            assert too_large is not None
            await _send(send, receiver.rejected(too_large))
            return
        except _Disconnected:
            return  # the sender gave up; it retries, and nothing was recorded
        await _send(send, await receiver.accept(headers, body))


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, reply: Reply) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
