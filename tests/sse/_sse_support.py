"""Scriptable SSE servers for the SSE transport's tests, served on loopback ports.

``FakeReader`` speaks just enough of Reader's API: ``GET /v1/jobs/{id}`` (the snapshot the
test set), ``GET /v1/jobs/{id}/stream`` and ``GET /v1/events``. Unlike Reader (and unlike the
simulator) it can send ``id:`` and ``retry:`` fields and replay from ``Last-Event-ID``, drop
every connection after a few frames, or refuse the stream (404, 405, text/html, 401).
``Hostile`` serves whatever stream answer a test writes; ``hostile_process`` runs the streams of
``_hostile_server.py`` in a child process, for tests that measure their own memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream

from jobwatch.transports._serve import lifespan, serve_app

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@attrs.define
class Frame:
    """One SSE event as the server writes it; ``job_id`` None = a workspace frame."""

    event: str
    data: str
    id: str | None = None
    job_id: str | None = None

    def encode(self, retry_ms: int | None) -> bytes:
        lines = [f"id: {self.id}"] if self.id is not None else []
        if retry_ms is not None:
            lines.append(f"retry: {retry_ms}")
        lines += [f"event: {self.event}", f"data: {self.data}"]
        return ("\n".join(lines) + "\n\n").encode()


@attrs.define
class FakeReader:
    """A scriptable ASGI server; tests change its attributes while it serves.

    ``stream_mode``: ``"sse"`` serves streams, an int answers that status with a Reader error
    envelope, ``"html"`` answers 200 text/html. ``drop_after``: close each stream connection
    abruptly after this many frames. ``replay``: honour Last-Event-ID (ids are the frames'
    positions). ``retry_ms``: a ``retry:`` field on every frame.
    """

    snapshots: dict[str, dict[str, Any]] = attrs.Factory(dict)
    frames: list[Frame] = attrs.Factory(list)
    stream_mode: str | int = "sse"
    drop_after: int | None = None
    replay: bool = True
    retry_ms: int | None = None
    ping_every: float = 0.05
    last_event_ids: list[str | None] = attrs.Factory(list)
    stream_opens: list[float] = attrs.Factory(list)
    polls: dict[str, int] = attrs.Factory(dict)
    _changed: anyio.Event = attrs.Factory(anyio.Event)

    def add(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        job_id: str | None = None,
        with_id: bool = True,
        raw: str | None = None,
    ) -> None:
        """Append a frame (its id is its position, from 1) and wake every open stream."""
        data = raw if raw is not None else json.dumps(payload)
        ident = str(len(self.frames) + 1) if with_id else None
        self.frames.append(Frame(event=event, data=data, id=ident, job_id=job_id))
        self._changed.set()
        self._changed = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if path == "/v1/events":
            await self._stream(None, headers, receive, send)
        elif path.startswith("/v1/jobs/") and path.endswith("/stream"):
            await self._stream(path.split("/")[3], headers, receive, send)
        elif path.startswith("/v1/jobs/"):
            await self._poll(path.split("/")[3], send)
        else:
            await _json(send, 404, _error("not_found", "no such route"))

    async def _poll(self, job_id: str, send: Send) -> None:
        self.polls[job_id] = self.polls.get(job_id, 0) + 1
        snapshot = self.snapshots.get(job_id)
        if snapshot is None:
            await _json(send, 404, _error("not_found", "Job not found"))
            return
        data = {
            "id": job_id,
            "mode": "batch",
            "creditsUsed": 0,
            "error": None,
            "results": [],
            "startedAt": None,
            "completedAt": None,
            "createdAt": "2026-01-01T00:00:00Z",
            **snapshot,
        }
        await _json(
            send,
            200,
            {
                "success": True,
                "data": data,
                "pagination": {"total": 0, "skip": 0, "limit": 1, "hasMore": False},
            },
        )

    async def _stream(
        self, job_id: str | None, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        # The position is taken before the open is announced: a test that adds frames once it
        # sees the open must find them sent on this connection, however late it gets going.
        start = self._start(headers.get("last-event-id"))
        self.last_event_ids.append(headers.get("last-event-id"))
        self.stream_opens.append(anyio.current_time())
        if self.stream_mode == "html":
            await _send(send, 200, b"<html>no stream here</html>", b"text/html")
            return
        if isinstance(self.stream_mode, int):
            codes = {401: "unauthenticated", 404: "not_found", 405: "method_not_allowed"}
            body = _error(codes.get(self.stream_mode, "internal_error"), "refused")
            await _json(send, self.stream_mode, body)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
            await self._write(job_id, start, send)
            tg.cancel_scope.cancel()

    def _start(self, last_event_id: str | None) -> int:
        if self.replay and last_event_id and last_event_id.isdigit():
            return int(last_event_id)
        return len(self.frames)  # a server without replay sends only what comes next

    async def _write(self, job_id: str | None, position: int, send: Send) -> None:
        sent = 0
        while True:
            while position < len(self.frames):
                frame = self.frames[position]
                position += 1
                if frame.job_id != job_id:
                    continue
                if self.drop_after is not None and sent >= self.drop_after:
                    return  # an unfinished body: the client sees the connection drop
                await _body(send, frame.encode(self.retry_ms))
                sent += 1
                if job_id is not None and frame.event == "done":
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            with anyio.move_on_after(self.ping_every):
                await self._changed.wait()
            if position >= len(self.frames):
                await _body(send, b": ping\n\n")


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _error(code: str, message: str) -> dict[str, Any]:
    return {
        "success": False,
        "error": {"code": code, "message": message, "docsUrl": "https://reader.dev/docs"},
    }


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    await _send(send, status, json.dumps(body).encode(), b"application/json")


async def _send(send: Send, status: int, body: bytes, kind: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with hypercorn on 127.0.0.1, port 0; yield its base URL."""
    async with anyio.create_task_group() as tg:
        url = await tg.start(serve_app, app, "127.0.0.1", 0)
        try:
            yield url
        finally:
            tg.cancel_scope.cancel()


Respond = Callable[[Scope, Send], Awaitable[None]]
HOSTILE_SERVER = Path(__file__).resolve().parent / "_hostile_server.py"


@attrs.define
class Hostile:
    """A loopback server whose stream answer the test writes: ``respond(scope, send)`` serves
    every stream path (``/v1/events``, ``/v1/jobs/{id}/stream`` and any other path that is not
    a job), and is cancelled when the client goes away. ``GET /v1/jobs/{id}`` answers a
    processing snapshot, counted in ``polls`` with its time in ``poll_times``; ``requests``
    records the path and headers of every request.
    """

    respond: Respond
    requests: list[tuple[str, dict[str, str]]] = attrs.Factory(list)
    polls: dict[str, int] = attrs.Factory(dict)
    poll_times: list[float] = attrs.Factory(list)
    stream_opens: list[float] = attrs.Factory(list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path: str = scope["path"]
        self.requests.append((path, {k.decode().lower(): v.decode() for k, v in scope["headers"]}))
        parts = path.split("/")
        if len(parts) == 4 and parts[:3] == ["", "v1", "jobs"]:
            self.polls[parts[3]] = self.polls.get(parts[3], 0) + 1
            self.poll_times.append(anyio.current_time())
            await FakeReader(
                snapshots={parts[3]: {"status": "processing", "completed": 0, "total": 9}}
            )._poll(parts[3], send)
            return
        self.stream_opens.append(anyio.current_time())
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
            await self.respond(scope, send)
            tg.cancel_scope.cancel()


async def start_stream(send: Send, *, encoding: bytes | None = None) -> None:
    """Begin a 200 text/event-stream answer, with a Content-Encoding if given."""
    headers = [(b"content-type", b"text/event-stream")]
    if encoding is not None:
        headers.append((b"content-encoding", encoding))
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def write(send: Send, data: bytes, *, more: bool = True) -> None:
    """Write a piece of the body (the last one with ``more=False``)."""
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def redirect(send: Send, status: int, location: str) -> None:
    """Answer a redirect to ``location``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def hostile_process() -> AsyncIterator[str]:
    """Run ``_hostile_server.py`` in a child process; yield its URL."""
    process = await anyio.open_process(
        [sys.executable, str(HOSTILE_SERVER)], stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(30):
            url = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 200)
        yield url.decode().strip()
    finally:
        process.kill()
        with anyio.move_on_after(10, shield=True):
            await process.wait()
