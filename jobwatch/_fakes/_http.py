"""The HTTP shell of the fakes: requests and replies as values, a tiny router, ASGI I/O.

Handlers see a `Request` and return a `Reply` (JSON) or a `StreamReply` (Server-Sent Events),
or raise `FakeError` with the API's own error body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import anyio
import attrs

__all__ = [
    "FakeError",
    "Reply",
    "Request",
    "Route",
    "StreamReply",
    "Write",
    "bearer",
    "read_request",
    "send_reply",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Write = Callable[[bytes], Awaitable[None]]


class FakeError(Exception):
    """An error answer: status, the API's error body, extra headers."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


@attrs.frozen(kw_only=True)
class Request:
    """What a handler sees of a request: header names in lower case, path parameters decoded."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    base_url: str
    params: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Reply:
    """A JSON answer (a ``body`` of bytes: sent as it is, ``application/octet-stream``)."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class StreamReply:
    """A Server-Sent Events answer: `write` sends frames until it returns True (the stream
    ended) or False (cut: the connection is dropped)."""

    write: Callable[[Write], Awaitable[bool]]
    headers: Mapping[str, str] = attrs.field(factory=dict)


Handler = Callable[[Request], Reply | StreamReply]


@attrs.frozen(kw_only=True)
class Route:
    """``METHOD /path/{param}``; a parameter is one raw path segment, percent-decoded."""

    method: str
    template: str
    handler: Handler
    auth: bool = True
    pattern: re.Pattern[str] = attrs.field(init=False)

    @pattern.default
    def _compile(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template) + "$")


def bearer(headers: Mapping[str, str]) -> str:
    """The token of ``Authorization: Bearer TOKEN`` (or ``Token``/``token``), else ``""``."""
    kind, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if kind.lower() in ("bearer", "token") else ""


async def read_request(scope: Scope, receive: Receive) -> Request:
    """The request of an ASGI ``http`` scope; its body is read and dropped."""
    while True:  # the fakes' routes read no body: drain it
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    # The raw path: a job id's %2F stays inside its segment, as an API's router sees it.
    raw = scope.get("raw_path") or scope["path"].encode()
    query = dict(
        parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    )
    host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("127.0.0.1", 80)))
    return Request(
        method=scope["method"],
        path=raw.decode("latin-1").split("?", 1)[0],
        query=query,
        headers=headers,
        base_url=f"{scope.get('scheme', 'http')}://{host}",
    )


async def send_reply(
    reply: Reply | StreamReply, request_id: str, receive: Receive, send: Send
) -> None:
    """Send `reply` as the ASGI response."""
    if isinstance(reply, StreamReply):
        await _send_stream(reply, request_id, receive, send)
    else:
        await _send_json(reply, request_id, send)


async def _send_json(reply: Reply, request_id: str, send: Send) -> None:
    if isinstance(reply.body, bytes):
        body, kind = reply.body, b"application/octet-stream"
    else:
        body = b"" if reply.body is None else json.dumps(reply.body, separators=(",", ":")).encode()
        kind = b"application/json; charset=utf-8"
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_stream(reply: StreamReply, request_id: str, receive: Receive, send: Send) -> None:
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-store"),
        (b"x-request-id", request_id.encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def write(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    finished = False
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
        finished = await reply.write(write)
        tg.cancel_scope.cancel()
    if finished:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    # Otherwise return with the body unfinished: the server drops the connection, which is
    # what a cut stream looks like to the client.


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
