"""Serve an ASGI app with hypercorn on the running backend (trio or asyncio), port 0 allowed.

The listening socket is bound here, before hypercorn starts, so that the bound address —
the real port when 0 was asked for — is known and reported through ``task_status``.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import sniffio
from anyio.abc import TaskStatus

from .._errors import ConfigError

__all__ = ["bind", "check_tls", "format_url", "lifespan", "serve_app", "serve_socket"]

log = logging.getLogger("jobwatch.server")

#: Seconds a closing server waits for requests in flight.
GRACEFUL_TIMEOUT = 2.0


def format_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, with brackets around an IPv6 host."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); ConfigError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now, not when hypercorn gets to it: a client may connect at once.
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {format_url('http', host, port)}: {exc}") from None
    return sock


def _hypercorn_config(fd: int, certfile: str | None, keyfile: str | None) -> Any:
    from hypercorn.config import Config as HypercornConfig

    config = HypercornConfig()
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.include_server_header = False
    if certfile is not None or keyfile is not None:
        check_tls(certfile, keyfile)
        config.certfile, config.keyfile = certfile, keyfile
    return config


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Raise ConfigError unless both files are given and load as a certificate and its key."""
    from hypercorn.config import Config as HypercornConfig

    if certfile is None or keyfile is None:
        raise ConfigError("TLS needs both a certificate file and a key file")
    config = HypercornConfig()
    config.certfile, config.keyfile = certfile, keyfile
    try:
        config.create_ssl_context()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot use the TLS certificate {certfile!r}: {exc}") from None


async def serve_app(
    app: Any,
    host: str,
    port: int,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``task_status.started(bound_url)``.

    With ``certfile`` and ``keyfile`` the server speaks HTTPS. Port 0 binds a free port, and
    the URL handed to ``task_status`` names it.
    """
    await serve_socket(app, bind(host, port), certfile=certfile, keyfile=keyfile,
                       task_status=task_status)


async def serve_socket(
    app: Any,
    sock: socket.socket,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on a socket from :func:`bind` (which it takes over) until cancelled."""
    bound_host, bound_port = sock.getsockname()[:2]
    url = format_url("https" if certfile else "http", bound_host, bound_port)
    try:
        config = _hypercorn_config(sock.fileno(), certfile, keyfile)
    except BaseException:
        sock.close()
        raise
    sock.detach()  # hypercorn owns the descriptor from here on, and closes it
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_run_shielded, app, config, stop)
        log.info("serving on %s", url)
        task_status.started(url)
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()


async def _run_shielded(app: Any, config: Any, stop: anyio.Event) -> None:
    # Cancelling hypercorn's asyncio server mid-flight leaks its tasks; instead it is asked to
    # stop through its shutdown trigger, and given GRACEFUL_TIMEOUT to finish in-flight requests.
    with anyio.CancelScope(shield=True):
        if sniffio.current_async_library() == "trio":
            from hypercorn.trio import serve as trio_serve

            await trio_serve(app, config, shutdown_trigger=stop.wait, mode="asgi")
        else:
            from hypercorn.asyncio import serve as asyncio_serve

            await asyncio_serve(app, config, shutdown_trigger=stop.wait, mode="asgi")


async def lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI server's lifespan messages for an app that needs no start-up work."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
