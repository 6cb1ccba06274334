"""Serve an ASGI app with hypercorn's HTTP protocol on the running backend (trio or asyncio).

The listening socket is bound here (port 0 allowed), so that the bound address is known and
reported through ``task_status``. Connections are accepted here too, not by hypercorn's own
server loop, so that a hostile client cannot take the descriptors genuine senders need
(:class:`ServerLimits`):

- a request's headers must arrive within ``idle_timeout`` of the connection (or of the previous
  response), and its body within ``body_timeout`` of its headers, else the connection closes
  (a late body is answered 408);
- at most ``max_connections`` are open: past it the oldest connection that is not processing a
  request is closed to make room; while every one is busy, new ones wait in the listen queue;
- an accept that fails (out of descriptors) is retried after a pause and logged at most once
  per ``LOG_INTERVAL`` seconds, with a count.

Each accepted connection is then served by hypercorn's per-connection server.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import attrs
import sniffio
from anyio.abc import TaskGroup, TaskStatus

from .._errors import ConfigError

__all__ = [
    "ServerLimits",
    "bind",
    "check_tls",
    "format_url",
    "lifespan",
    "serve_app",
    "serve_socket",
]

log = logging.getLogger("jobwatch.server")

#: Seconds a closing server waits for requests in flight.
GRACEFUL_TIMEOUT = 2.0
#: Seconds between two log lines about refused connections or failing accepts.
LOG_INTERVAL = 10.0
#: Seconds the accept loop pauses after the system refused a descriptor.
_ACCEPT_PAUSE = 0.1
#: accept(2) errors that mean "out of descriptors or memory": retried, never fatal.
_CAPACITY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@attrs.frozen(kw_only=True)
class ServerLimits:
    """How long a client may take, and how many connections may be open at once.

    ``max_connections=None`` derives the bound from the process's descriptor limit
    (:func:`default_max_connections`), leaving room for the store, log files and outgoing
    connections.
    """

    body_timeout: float = 10.0
    idle_timeout: float = 5.0
    handshake_timeout: float = 5.0
    max_connections: int | None = None

    def connections(self) -> int:
        return self.max_connections or default_max_connections()


def default_max_connections() -> int:
    """The connection bound for the current descriptor limit (``RLIMIT_NOFILE``).

    Leaves an eighth of the limit, and at least 64 descriptors, for everything else the
    process opens; at most 4,096 connections.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return 1000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(8, min(4096, soft - max(64, soft // 8)))


def format_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, with brackets around an IPv6 host."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


async def stop_on_signal(
    signals: AsyncIterator[int],
    scope: anyio.CancelScope,
    doing: str,
    *,
    first: Callable[[], object] | None = None,
) -> None:
    """On the first of ``signals``, say so (``jobwatch: SIGTERM: {doing}``), call ``first``
    and cancel ``scope``: how ``jobwatch listen`` and ``jobwatch dashboard`` stop serving."""
    async for signum in signals:
        print(f"jobwatch: {signal.Signals(signum).name}: {doing}", file=sys.stderr, flush=True)
        if first is not None:
            first()
        scope.cancel()
        return


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); ConfigError if not."""
    where = format_url("http", host, port)
    if not 0 <= port <= 65535:
        raise ConfigError(f"cannot listen on {where}: a port is 1 to 65535, or 0 for any free one")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now, not when the accept loop gets to it: a client may connect at once.
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {where}: {_why_not(exc, host)}") from None
    return sock


def _why_not(exc: OSError, host: str) -> str:
    """What went wrong binding, and what to do about it."""
    if isinstance(exc, socket.gaierror):
        return (
            f"{host!r} is not a host name known here ({exc.strerror}); give an address of "
            "this machine (127.0.0.1, or 0.0.0.0 for every interface)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{exc.strerror}: {host} is not an address of this machine; give one of its "
            "addresses (127.0.0.1, or 0.0.0.0 for every interface)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"{exc.strerror} (ports below 1024 need privileges); choose a port from 1024, "
            "or port 0 for any free one"
        )
    return f"{exc}; choose another port, or port 0 for any free one"


def _hypercorn_config(limits: ServerLimits, certfile: str | None, keyfile: str | None) -> Any:
    from hypercorn.config import Config as HypercornConfig

    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.include_server_header = False
    # hypercorn's keep-alive timer runs from the connection (or the last response) until a
    # request's headers are complete: it bounds the time a client may take to send them.
    config.keep_alive_timeout = limits.idle_timeout
    config.ssl_handshake_timeout = limits.handshake_timeout
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
    limits: ServerLimits | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``task_status.started(bound_url)``.

    With ``certfile`` and ``keyfile`` the server speaks HTTPS. Port 0 binds a free port, and
    the URL handed to ``task_status`` names it.
    """
    await serve_socket(
        app,
        bind(host, port),
        certfile=certfile,
        keyfile=keyfile,
        limits=limits,
        task_status=task_status,
    )


async def serve_socket(
    app: Any,
    sock: socket.socket,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    limits: ServerLimits | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on a socket from :func:`bind` (which it takes over) until cancelled.

    The app needs no lifespan start-up: none is sent.
    """
    limits = limits or ServerLimits()
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        url = format_url("https" if certfile else "http", bound_host, bound_port)
        config = _hypercorn_config(limits, certfile, keyfile)
        server = _Server(app, config, limits)
    except BaseException:
        sock.close()
        raise
    await server.run(sock, url, task_status)


class _Server:
    """The accept loop and the connections it spawned, on either backend."""

    def __init__(self, app: Any, config: Any, limits: ServerLimits) -> None:
        self.app = app
        self.config = config
        self.limits = limits
        self.ssl_context = config.create_ssl_context()
        self.connections = Connections(limits.connections())
        self.notes = RateLimitedLog(log, LOG_INTERVAL)
        self.trio = sniffio.current_async_library() == "trio"
        self.context: Any
        if self.trio:
            from hypercorn.trio.worker_context import WorkerContext as TrioContext

            self.context = TrioContext(None)
        else:
            from hypercorn.asyncio.worker_context import WorkerContext as AsyncioContext

            self.context = AsyncioContext(None)

    async def run(self, sock: socket.socket, url: str, task_status: TaskStatus[str]) -> None:
        accept = self._accept_function(sock)
        try:
            async with anyio.create_task_group() as tg:
                try:
                    tg.start_soon(self._accept_loop, accept, tg)
                    log.info("serving on %s", url)
                    task_status.started(url)
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._drain()
        finally:
            sock.close()

    async def _drain(self) -> None:
        # Connections are shielded from the server's cancellation (see _serve_connection):
        # idle ones close at once, requests in flight get GRACEFUL_TIMEOUT, then all end.
        await self.context.terminated.set()
        with anyio.move_on_after(GRACEFUL_TIMEOUT):
            await self.connections.wait_empty()
        self.connections.cancel_all()

    def _accept_function(self, sock: socket.socket) -> Callable[[], Awaitable[Any]]:
        if self.trio:
            import trio

            listener = trio.socket.from_stdlib_socket(sock)

            async def accept_trio() -> Any:
                conn, _ = await listener.accept()
                return conn

            return accept_trio
        sock.setblocking(False)

        async def accept_asyncio() -> Any:
            conn, _ = await asyncio.get_running_loop().sock_accept(sock)
            # As trio's SocketStream does: a response's last segment must not wait for the
            # client's delayed acknowledgement of the one before (40 ms a request).
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return conn

        return accept_asyncio

    async def _accept_loop(
        self, accept: Callable[[], Awaitable[Any]], connections: TaskGroup
    ) -> None:
        while True:
            if self.connections.full():
                # Every connection is busy (or closing): new ones wait in the listen queue.
                self.notes.note(
                    "new connections waited",
                    f"{len(self.connections)} are open "
                    f"(max_connections {self.connections.limit}) and none is idle",
                )
                await self.connections.room()
            try:
                conn = await accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY:
                    raise
                # Out of descriptors: close the oldest idle connection, so that the next try
                # may succeed, and wait a moment rather than spin on a listener that stays
                # readable.
                self._shed(self.connections.oldest_idle())
                self.notes.note(
                    "accept failed",
                    f"{exc.strerror or exc}; retrying every "
                    f"{_ACCEPT_PAUSE:g} s, closing idle connections",
                )
                await anyio.sleep(_ACCEPT_PAUSE)
                continue
            record, victim = self.connections.admit(conn)
            self._shed(victim)
            connections.start_soon(self._serve_connection, record)
            # A connection that is ready at once is accepted without waiting (asyncio): let
            # the ones just closed end before the next.
            await anyio.lowlevel.checkpoint()

    def _shed(self, record: Connection | None) -> None:
        if record is None:
            return
        self.notes.note(
            "idle connection closed",
            f"{self.connections.limit} connections "
            "(max_connections) are open; the oldest idle one makes room for a new one",
        )
        # Cancelled, not shut down: hypercorn keeps a connection whose client has gone until its
        # keep-alive timer ends.
        record.scope.cancel()

    async def _serve_connection(self, record: Connection) -> None:
        from hypercorn.app_wrappers import ASGIWrapper

        app = ASGIWrapper(
            functools.partial(_guarded, self.app, self.limits, self.connections, record)
        )
        try:
            with record.scope:
                if self.trio:
                    await self._serve_trio(app, record.sock)
                else:
                    await self._serve_asyncio(app, record.sock)
        except Exception as exc:  # a failing handshake, a bug: this connection only
            log.debug("connection failed", exc_info=True)
            self.notes.note("connection failed", f"{type(exc).__name__}: {exc}")
        finally:
            _close(record.sock)
            self.connections.release(record)

    async def _serve_trio(self, app: Any, conn: Any) -> None:
        import trio
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.typing import ConnectionState

        stream: Any = trio.SocketStream(conn)
        if self.ssl_context is not None:
            stream = trio.SSLStream(
                stream, self.ssl_context, server_side=True, https_compatible=True
            )
        await TCPServer(app, self.config, self.context, ConnectionState({}), stream)

    async def _serve_asyncio(self, app: Any, conn: socket.socket) -> None:
        from hypercorn.asyncio.tcp_server import TCPServer

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        handshake = self.limits.handshake_timeout if self.ssl_context is not None else None
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, conn, ssl=self.ssl_context, ssl_handshake_timeout=handshake
            )
        except (OSError, TimeoutError):  # a failed TLS handshake: the client is gone
            log.debug("TLS handshake failed", exc_info=True)
            return
        try:
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await TCPServer(app, loop, self.config, self.context, {}, reader, writer)
        finally:
            # Through the transport: it unregisters the socket from the loop before closing it.
            transport.abort()


def _close(conn: Any) -> None:
    try:
        conn.close()
    except OSError:
        pass


@attrs.define(eq=False)
class Connection:
    """An open connection: its socket, and how many of its requests are being processed."""

    sock: Any
    busy: int = 0
    #: Shielded: a server that is cancelled lets requests in flight finish, then cancels it.
    scope: anyio.CancelScope = attrs.field(factory=lambda: anyio.CancelScope(shield=True))


class Connections:
    """The open connections in the order they were accepted, and the bound on their number.

    :meth:`admit` registers a new one; past the bound it names the oldest idle connection (no
    request being processed: connecting, sending headers or a body, or kept alive between
    requests) to close. :meth:`full` says when no connection may be accepted: every one is
    busy, or too many are closing (closed, not yet ended: up to ``limit // 8``, 8 to 32).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slack = max(8, min(32, limit // 8))
        self._open: dict[Connection, None] = {}  # oldest first
        self._closing: set[Connection] = set()
        self._changed: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._open) + len(self._closing)

    def admit(self, sock: Any) -> tuple[Connection, Connection | None]:
        """Register ``sock``; returns its record and the connection to close, if any."""
        record = Connection(sock)
        self._open[record] = None
        return record, self.oldest_idle() if len(self) > self.limit else None

    def full(self) -> bool:
        """True when accepting one more would pass the bound with nothing to close."""
        if len(self) >= self.limit + self._slack:
            return True
        return len(self) >= self.limit and all(c.busy for c in self._open)

    def oldest_idle(self) -> Connection | None:
        """The oldest connection processing no request, now counted as closing; or None."""
        victim = next((c for c in self._open if not c.busy), None)
        if victim is not None:
            del self._open[victim]
            self._closing.add(victim)
        return victim

    def busy(self, record: Connection, change: int) -> None:
        """A request of ``record`` began (+1) or ended (-1) being processed."""
        record.busy += change
        if not record.busy:
            self._wake()

    def release(self, record: Connection) -> None:
        """The connection has ended."""
        self._open.pop(record, None)
        self._closing.discard(record)
        self._wake()

    def cancel_all(self) -> None:
        for record in [*self._open, *self._closing]:
            record.scope.cancel()

    async def room(self) -> None:
        """Wait until :meth:`full` is False."""
        while self.full():
            await self._wait()

    async def wait_empty(self) -> None:
        while self:
            await self._wait()

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class RateLimitedLog:
    """Warnings about one kind of trouble at most once per ``interval`` seconds each, with the
    count since the last line (a flood of failing accepts must not become a flood of log)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float,
        *,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._counts: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def note(self, what: str, detail: str) -> None:
        self._counts[what] = self._counts.get(what, 0) + 1
        now = self.clock()
        last = self._logged.get(what)
        if last is not None and now - last < self.interval:
            return
        count, self._counts[what] = self._counts[what], 0
        since = "" if last is None else f" in the last {now - last:.0f} s"
        self.logger.warning("%s %d time(s)%s: %s", what, count, since, detail)
        self._logged[what] = now


async def _guarded(
    app: Any,
    limits: ServerLimits,
    connections: Connections,
    connection: Connection,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Run ``app`` for one request, bounding the time its body may take to arrive.

    While the body arrives the connection counts as idle (it may be closed to make room);
    from its last byte until the app returns, as busy.
    """
    if scope.get("type") != "http":
        await app(scope, receive, send)
        return
    request = _Request(
        connections,
        connection,
        anyio.current_time() + limits.body_timeout,
        has_body=_has_body(scope),
    )
    try:
        await app(scope, request.receive(receive), request.send(send))
    finally:
        request.done()
    if request.timed_out and not request.responded:
        await send(
            {
                "type": "http.response.start",
                "status": 408,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"connection", b"close"),
                    (b"content-length", str(len(_LATE_BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _LATE_BODY})


_LATE_BODY = b"the request body did not arrive in time\n"


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name == b"transfer-encoding" or name == b"content-length" and value.strip() != b"0":
            return True
    return False


class _Request:
    def __init__(
        self, connections: Connections, connection: Connection, deadline: float, *, has_body: bool
    ) -> None:
        self.connections = connections
        self.connection = connection
        self.deadline = deadline
        self.receiving = has_body
        self.timed_out = False
        self.responded = False
        self.busy = False
        if not has_body:
            self._busy()

    def _busy(self) -> None:
        self.busy = True
        self.connections.busy(self.connection, 1)

    def done(self) -> None:
        if self.busy:
            self.busy = False
            self.connections.busy(self.connection, -1)

    def receive(self, receive: Receive) -> Receive:
        async def bounded() -> Message:
            if not self.receiving:
                return await receive()
            with anyio.move_on_after(self.deadline - anyio.current_time()):
                message = await receive()
                if message.get("type") == "http.disconnect":
                    self.receiving = False
                elif not message.get("more_body", False):
                    self.receiving = False
                    self._busy()
                return message
            # Too slow: to the app the client is gone; the 408 follows once it returns.
            self.receiving = False
            self.timed_out = True
            return {"type": "http.disconnect"}

        return bounded

    def send(self, send: Send) -> Send:
        async def tracked(message: Message) -> None:
            if message.get("type") == "http.response.start":
                self.responded = True
            await send(message)

        return tracked


async def lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI server's lifespan messages for an app that needs no start-up work."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
