"""Hostile SSE streams served from a child process, so that a test measures only its own memory.

``python _hostile_server.py`` serves on 127.0.0.1, port 0, prints ``http://HOST:PORT`` and
serves until killed. The first path segment picks the stream (use ``{url}/{name}`` as the
base URL); any other request answers 404:

- ``line``: ``data: `` and then 64 MiB without a line feed, and the end of the body.
- ``gzip-bomb``: gzip of 64 MiB of zero bytes (about 64 KiB on the wire), then silence.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sse_support import start_stream, write  # noqa: E402

from jobwatch.transports._serve import lifespan, serve_app  # noqa: E402

MiB = 2**20


def _bomb() -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = b"\0" * MiB
    return b"".join(deflate.compress(zeros) for _ in range(64)) + deflate.flush()


BOMB = _bomb()


async def line(send: Any) -> None:
    chunk = b"x" * 65_536
    await start_stream(send)
    await write(send, b"data: ")
    for _ in range(1024):
        await write(send, chunk)
    await write(send, b"", more=False)


async def gzip_bomb(send: Any) -> None:
    await start_stream(send, encoding=b"gzip")
    for start in range(0, len(BOMB), 16_384):
        await write(send, BOMB[start : start + 16_384])
    await anyio.sleep_forever()


STREAMS = {"line": line, "gzip-bomb": gzip_bomb}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    stream = STREAMS.get(scope["path"].split("/")[1])
    if stream is None or not scope["path"].endswith("/events"):
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await stream(send)


async def main() -> None:
    async with anyio.create_task_group() as tg:
        url = await tg.start(serve_app, app, "127.0.0.1", 0)
        print(url, flush=True)


if __name__ == "__main__":
    anyio.run(main, backend="trio")
