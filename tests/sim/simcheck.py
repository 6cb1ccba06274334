"""Helpers of the simulator's tests: OpenAPI checks, a webhook receiver, SSE reading."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs
import httpx
import jsonschema

from jobwatch.sim import Simulator
from jobwatch.sim._runner import serve_asgi

# A copy of Reader's published OpenAPI file (github.com/vakra-dev/reader-docs, openapi.json).
OPENAPI_FILE = Path(__file__).parent / "data" / "reader-openapi.json"
OPENAPI: dict[str, Any] = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return value.endswith("Z") and datetime.fromisoformat(value[:-1]).tzinfo is None


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc)


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    """The OpenAPI schema of one response, with ``#/components`` resolvable inside it.

    Statuses the OpenAPI file does not list for the operation (injected 500s, 429s on GETs,
    405) are checked against the shared ``ErrorEnvelope``.
    """
    responses = OPENAPI["paths"][path].get(method.lower(), {}).get("responses", {})
    if str(status) in responses:
        schema = responses[str(status)]["content"]["application/json"]["schema"]
    else:
        assert status >= 400, f"{method} {path} answered {status}, not in the OpenAPI file"
        schema = {"$ref": "#/components/schemas/ErrorEnvelope"}
    return {**schema, "components": OPENAPI["components"]}


def assert_valid(response: httpx.Response, path: str) -> dict[str, Any]:
    """Check a JSON response against Reader's OpenAPI schema; return its body."""
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    schema = response_schema(path, response.request.method, response.status_code)
    jsonschema.Draft202012Validator(schema, format_checker=FORMATS).validate(body)
    if response.status_code >= 400:
        code = body["error"]["code"]
        assert body["error"]["docsUrl"] == (
            "https://reader.dev/docs/home/concepts/errors#" + code.replace("_", "-")
        )
    return dict(body)


@attrs.define
class Received:
    """One webhook request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> str:
        return self.headers["x-reader-event"]

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class Receiver:
    """A tiny ASGI webhook receiver: records each request, answers `statuses` in turn, then
    200."""

    statuses: list[int] = attrs.Factory(list)
    received: list[Received] = attrs.Factory(list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers=headers, body=body))
        status = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a loopback port for the block; yield its URL."""
    async with anyio.create_task_group() as tg:
        url = await tg.start(serve_asgi, app)
        yield url
        tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll `predicate` every few milliseconds until it holds (at most 10 s)."""
    with anyio.fail_after(10):
        # Polling, not an Event: the predicates watch another process's side of a socket.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def verify_signature(secret: str, received: Received) -> bool:
    """The verification recipe of Reader's docs, as a receiver would write it."""
    timestamp = received.headers["x-reader-timestamp"]
    payload = f"{timestamp}.{received.body.decode('utf-8')}"
    expected = "sha256=" + hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, received.headers["x-reader-signature"])


@asynccontextmanager
async def engine_running(simulator: Simulator) -> AsyncIterator[None]:
    """Run a simulator's clock and webhook sender (no HTTP server) for the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(simulator.run)
        yield
        tg.cancel_scope.cancel()
