"""The live dashboard and SSE relay of a Watcher (DESIGN §11): the ASGI shell around
:class:`~jobwatch._relay.Relay`.

:class:`DashboardApp` serves the page and its assets, ``GET /events`` (each client written to
as the relay says), ``GET /jobs``, ``GET /job``, ``GET /dead-letters``, the login and the token
check; :func:`serve_dashboard` runs a Watcher with its dashboard (``jobwatch dashboard``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
import attrs
from anyio.abc import TaskStatus

from ._config import Config, Secret
from ._errors import ConfigError, JobwatchError
from ._events import JobEvent
from ._relay import Client, Relay, Scrubber
from ._relay import encode as _encode
from .abc import Store

if TYPE_CHECKING:
    from ._watcher import Watcher

__all__ = ["DashboardApp", "DashboardOptions", "serve_dashboard"]

log = logging.getLogger("jobwatch.dashboard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The largest request body read, in bytes (a replay's key, the login form's token); larger: 413.
MAX_BODY = 4096
#: The shortest token accepted: a shorter one could be guessed.
MIN_TOKEN = 16
#: Seconds between ``: ping`` comments on an idle stream (proxies close silent connections).
PING_INTERVAL = 15.0
#: Seconds between ``stats`` events to a client that asked for them.
STATS_INTERVAL = 1.0
#: What the browser waits before reconnecting (the SSE ``retry:`` field), in milliseconds.
RETRY_MS = 1000
COOKIE = "jobwatch_dashboard"
#: Where the page asks for a dead letter's replay, and the header it must send with it.
REPLAY_ROUTE = "/dead-letters/replay"
REPLAY_HEADER = "x-jobwatch-dashboard"


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class DashboardOptions:
    """``[jobwatch.dashboard]``: who may look, where ``jobwatch dashboard`` listens, and the
    relay's bounds.

    Attributes:
        token: required to see anything when set (a bearer header, or the login form's
            cookie); required to listen anywhere but loopback. At least 16 characters.
        listen: where ``jobwatch dashboard`` serves (``--listen`` overrides it).
        certfile, keyfile: serve HTTPS (then the login cookie is ``Secure``).
        follow: watch every job the dashboard sees until it ends, so that the safety net
            and reconciliation cover it (a cancellation no stream reports shows up).
        buffer: events kept for ``Last-Event-ID`` resume.
        client_queue: events that may arrive while one write to a client is under way;
            past it that client is resynced with a snapshot.
        jobs: jobs kept in the table (the oldest finished ones leave first).
        timeline: entries kept per job.
        flush_interval: seconds from the end of one round of writes to the clients to the
            next; events arriving meanwhile are gathered into one write per client.
        send_timeout: seconds a write may take before the client is taken as stuck and
            disconnected (it reconnects and resumes).
    """

    token: Secret | None = None
    listen: str = "127.0.0.1:8788"
    certfile: str | None = None
    keyfile: str | None = None
    follow: bool = True
    buffer: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    client_queue: int = attrs.field(default=1_000, validator=attrs.validators.ge(1))
    jobs: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    timeline: int = attrs.field(default=200, validator=attrs.validators.ge(1))
    flush_interval: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    send_timeout: float = attrs.field(default=30.0, validator=_positive)

    @classmethod
    def from_config(cls, config: Config) -> DashboardOptions:
        """The options of ``config``'s ``[jobwatch.dashboard]``; ConfigError when wrong."""
        options = config.options("dashboard", cls)
        token = options.token
        if token is not None and len(token.reveal()) < MIN_TOKEN:
            raise ConfigError(
                f"[jobwatch.dashboard] token must be at least {MIN_TOKEN} characters long; "
                "generate one with python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return options


def check_exposure(host: str, options: DashboardOptions) -> None:
    """Refuse (ConfigError) to serve the dashboard beyond this machine without a token."""
    if options.token is None and not is_loopback(host):
        raise ConfigError(
            f"the dashboard would listen on {host}, which other machines can reach, and "
            '[jobwatch.dashboard] token is not set: set token = "${JOBWATCH_DASHBOARD_TOKEN}" '
            "(at least 16 characters), or listen on 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) names this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the ASGI app ---------------------------------------------------------------------------

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_ASSETS = {
    "/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", b"image/svg+xml"),
}
_HTML = b"text/html; charset=utf-8"
#: What the routes that answer GET answer: HEAD too, the same without the body.
_GET = b"GET, HEAD"
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    *_HEADERS,
]
_JSON = b"application/json"
_LOGIN_FAILED = b'<p class="problem" role="alert">That token is not right.</p>'


def _asset(name: str) -> bytes:
    return resources.files("jobwatch").joinpath("dashboard", name).read_bytes()


class DashboardApp:
    """The dashboard as an ASGI 3 app; build it with ``watcher.dashboard_app()``.

    Mount it anywhere (its links are relative). ``stats()`` gives the Watcher's counters,
    ``dead_letters()`` what its store keeps of them, and ``replay(key)`` hands one to the
    callbacks again (None: the store cannot).
    """

    def __init__(
        self,
        relay: Relay,
        options: DashboardOptions,
        *,
        stats: Callable[[], dict[str, Any]] = dict,
        dead_letters: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        replay: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.relay = relay
        self.options = options
        self._stats = stats
        self._dead_letters = dead_letters
        self._replay = replay
        token = options.token.reveal().encode() if options.token is not None else None
        self._token = token
        # The cookie holds a value derived from the token, never the token itself.
        self._session = (
            None
            if token is None
            else hmac.new(token, b"jobwatch dashboard session", hashlib.sha256).hexdigest().encode()
        )
        self._files = {path: (_asset(name), kind) for path, (name, kind) in _ASSETS.items()}
        self._page = _asset("index.html")
        self._login = _asset("login.html")
        self._stats_cache: tuple[float, bytes] | None = None
        self._ticks = _Ticks(relay, options.flush_interval, STATS_INTERVAL)

    @classmethod
    def for_watcher(cls, watcher: Watcher) -> DashboardApp:
        """The dashboard of ``watcher``: told of every event it dispatches or drops, in the
        order it does (a subscription would hear of dispatched events later than of drops)."""
        options = DashboardOptions.from_config(watcher.config)

        def follow(job_id: str) -> Any:
            try:
                # A subscription of a kind no job's event has keeps the job watched at no
                # cost per event.
                return watcher.subscribe(_ignore, kinds=("credit_low",), job_id=job_id)
            except JobwatchError:
                return None  # closing, or an id the Watcher cannot watch: shown anyway

        relay = Relay(
            scrubber=Scrubber.for_config(watcher.config),
            buffer=options.buffer,
            client_queue=options.client_queue,
            jobs=options.jobs,
            timeline=options.timeline,
            follow=follow if options.follow else None,
        )
        watcher._pipeline.observers.append(_guarded(relay.observe))
        return cls(
            relay,
            options,
            stats=lambda: watcher_stats(watcher, relay.scrubber),
            dead_letters=lambda: dead_letters(watcher, relay.scrubber),
            replay=watcher.replay_dead_letter if replays(watcher.store) else None,
        )

    def close(self) -> None:
        """End every ``/events`` stream (clients reconnect); call before the server stops."""
        self.relay.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            from .transports._serve import lifespan

            await lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = scope.get("root_path", "").rstrip("/")
        path: str = scope.get("path", "/")
        inner = (
            path[len(root) :] if root and (path == root or path.startswith(root + "/")) else path
        )
        if inner == "" and root:  # the mount point: its page's relative links need the slash
            await _reply(send, 308, b"", extra=[(b"location", (root + "/").encode())])
            return
        method = scope.get("method", "GET")
        head = method == "HEAD"
        if head:  # the answer a GET gets, without its body
            send = _bodiless(send)
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        if inner in self._files:
            if method not in ("GET", "HEAD"):
                await _reply(
                    send, 405, b"method not allowed\n", b"text/plain", extra=[(b"allow", _GET)]
                )
                return
            body, content_type = self._files[inner]
            await _reply(send, 200, body, content_type, cache=b"no-cache")
            return
        refusal = self._exposed(scope, headers)
        if refusal is not None:
            await _reply(send, 403, refusal.encode(), b"text/plain; charset=utf-8")
            return
        if inner == "/login":
            await self._login_route(scope, receive, send, method, root)
            return
        allowed = b"POST" if inner == REPLAY_ROUTE else _GET
        if method.encode() not in allowed.split(b", "):
            await _reply(
                send, 405, b"method not allowed\n", b"text/plain", extra=[(b"allow", allowed)]
            )
            return
        if not self._authorized(headers):
            await self._unauthorized(send, inner)
            return
        if inner == REPLAY_ROUTE:
            await self._replay_route(headers, receive, send)
            return
        # The query's bytes as the client sent them: a byte that is no UTF-8 reads as U+FFFD,
        # as a percent-escaped one does.
        raw = scope.get("query_string", b"").decode("utf-8", "replace")
        query = {k: v[-1] for k, v in parse_qs(raw).items()}
        await self._route(inner, query, headers, receive, send, head=head)

    async def _route(
        self,
        inner: str,
        query: dict[str, str],
        headers: dict[str, str],
        receive: Receive,
        send: Send,
        *,
        head: bool = False,
    ) -> None:
        if inner == "/":
            await _reply(send, 200, self._page, _HTML)
        elif inner == "/events":
            last = headers.get("last-event-id") or query.get("last_event_id")
            await self._events(receive, send, last, stats=query.get("stats") == "1", head=head)
        elif inner == "/jobs":
            await _json(send, 200, {**self.relay.table(), "stats": self.stats()})
        elif inner == "/job":
            found = self.relay.job(query.get("id", ""))
            if found is None:
                await _json(send, 404, {"error": "no such job in the table"})
            else:
                await _json(send, 200, found)
        elif inner == "/stats":
            await _json(send, 200, self.stats())
        elif inner == "/dead-letters":
            listed = (
                await self._dead_letters()
                if self._dead_letters is not None
                else {"listed": False, "reason": "no store", "entries": []}
            )
            await _json(send, 200, listed)
        else:
            await _reply(send, 404, b"not found\n", b"text/plain")

    async def _replay_route(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        """``POST dead-letters/replay`` with ``{"key": ...}``: the dead letter's event goes to
        the callbacks again. Only the page's own script can ask: it must send a JSON body and
        the ``x-jobwatch-dashboard`` header, which a form on another site cannot, and which
        a script elsewhere cannot without a preflight this app never grants."""
        if headers.get(REPLAY_HEADER) != "replay" or not headers.get("content-type", "").startswith(
            "application/json"
        ):
            await _json(
                send,
                403,
                {"error": f"a replay is a JSON POST with the header {REPLAY_HEADER}: replay"},
            )
            return
        body = await _read(receive)
        if body is None:
            too_big = f'the body is over {MAX_BODY} bytes: send only {{"key": "<the event key>"}}'
            await _json(send, 413, {"error": too_big})
            return
        try:
            key = json.loads(body).get("key")
        except (ValueError, AttributeError, RecursionError):  # deep nesting: RecursionError
            key = None
        if not isinstance(key, str) or not key:
            await _json(send, 400, {"error": 'the body must be {"key": "<the event key>"}'})
            return
        if self._replay is None:
            await _json(send, 409, {"error": "this store keeps no dead letters to replay"})
            return
        try:
            replayed = await self._replay(key)
        except JobwatchError as exc:
            await _json(send, 503, {"error": self.relay.scrubber.text(f"the store failed: {exc}")})
            return
        if not replayed:
            await _json(send, 404, {"error": "no dead letter with that key (replayed already?)"})
            return
        await _json(send, 200, {"replayed": key})

    # -- who may look ------------------------------------------------------------------------

    def _exposed(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """Why a dashboard without a token must not answer this request, if it must not."""
        if self._token is not None:
            return None
        server = scope.get("server")
        if server and not is_loopback(str(server[0])):
            return (
                "this dashboard has no token and is served beyond loopback: set "
                "[jobwatch.dashboard] token\n"
            )
        # A page elsewhere may point a name of its own at 127.0.0.1 (DNS rebinding): without
        # a token, only a loopback Host is answered.
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host and not is_loopback(name):
            return "this dashboard has no token: open it as localhost or 127.0.0.1\n"
        return None

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self._token is None or self._session is None:
            return True
        offered = headers.get("authorization", "")
        # The header's own bytes (read as latin-1): a token beyond ASCII arrives as UTF-8.
        bearer = offered[7:].strip().encode("latin-1") if offered[:7].lower() == "bearer " else b""
        cookie = _cookie(headers.get("cookie", ""), COOKIE).encode()
        # Both compared every time, each in constant time.
        by_header = hmac.compare_digest(bearer, self._token)
        by_cookie = hmac.compare_digest(cookie, self._session)
        return by_header or by_cookie

    async def _unauthorized(self, send: Send, inner: str) -> None:
        challenge = [(b"www-authenticate", b'Bearer realm="jobwatch dashboard"')]
        if inner == "/":
            await _reply(send, 401, self._login_page(), _HTML, extra=challenge)
        else:
            await _json(
                send,
                401,
                {"error": "unauthorized: send the token as a bearer header, or log in"},
                extra=challenge,
            )

    def _login_page(self, message: bytes = b"") -> bytes:
        return self._login.replace(b"<!--message-->", message)

    async def _login_route(
        self, scope: Scope, receive: Receive, send: Send, method: str, root: str
    ) -> None:
        if method not in ("GET", "HEAD", "POST"):
            await _reply(
                send,
                405,
                b"method not allowed\n",
                b"text/plain",
                extra=[(b"allow", _GET + b", POST")],
            )
            return
        if self._token is None or self._session is None:
            # Nothing to log in to: the page is open already.
            await _reply(send, 303, b"", extra=[(b"location", b"./")])
            return
        if method != "POST":
            await _reply(send, 200, self._login_page(), _HTML)
            return
        body = await _read(receive)
        if body is None:
            message = f"the form is over {MAX_BODY} bytes: send only the token\n"
            await _reply(send, 413, message.encode(), b"text/plain; charset=utf-8")
            return
        offered = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[-1].encode()
        if not hmac.compare_digest(offered, self._token):
            await _reply(send, 401, self._login_page(_LOGIN_FAILED), _HTML)
            return
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = (
            f"{COOKIE}={self._session.decode()}; Path={root or ''}/; HttpOnly; "
            f"SameSite=Strict{secure}"
        )
        await _reply(send, 303, b"", extra=[(b"location", b"./"), (b"set-cookie", cookie.encode())])

    # -- the stream --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {**self._stats(), "relay": self.relay.relay_stats(self.options.send_timeout)}

    def _stats_frame(self) -> bytes:
        now = anyio.current_time()
        if self._stats_cache is None or now - self._stats_cache[0] >= STATS_INTERVAL / 2:
            self._stats_cache = (now, b"event: stats\ndata: %s\n\n" % _encode(self.stats()))
        return self._stats_cache[1]

    async def _events(
        self,
        receive: Receive,
        send: Send,
        last_event_id: str | None,
        *,
        stats: bool,
        head: bool = False,
    ) -> None:
        # (A list of its own: middleware may add headers to it in place.)
        headers = list(_STREAM_HEADERS)
        start = {"type": "http.response.start", "status": 200, "headers": headers}
        if head:  # the stream's headers, and no stream
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        client = self.relay.connect(last_event_id)
        watch = _Watch(receive, client, self.options.send_timeout)
        try:
            await send(start)
            ended = False  # (the client may leave first: the stream is then cancelled)
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch.run, tg.cancel_scope)
                ended = await self._stream(client, send, stats)
                tg.cancel_scope.cancel()
            if watch.stuck:
                self.relay.counts["stuck"] += 1
                log.info(
                    "a dashboard client took over %g s to take a write; disconnected",
                    self.options.send_timeout,
                )
            elif ended:  # the dashboard closes: the body ends, and the browser reconnects
                # (Outside the task group: its end is no disconnect to cancel the write on.)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.relay.disconnect(client)

    async def _stream(self, client: Client, send: Send, stats: bool) -> bool:
        """Write to ``client`` at the ticks until the relay closes (True)."""
        relay, ticks = self.relay, self._ticks
        now = anyio.current_time()
        next_ping, next_stats = now + PING_INTERVAL, now + STATS_INTERVAL
        # The first write goes at once: the snapshot, or what a resuming client missed. The
        # retry field opens its first event's block: a block of its own would be an empty
        # event to some clients.
        data = f"retry: {RETRY_MS}\n".encode() + relay.take(client)
        if stats:
            data += self._stats_frame()
        tick = ticks.number
        while not relay.closed:
            if data:
                client.writing_since = now
                await send({"type": "http.response.body", "body": data, "more_body": True})
                client.writing_since = None
                next_ping = now + PING_INTERVAL
                relay.sent(client)
            # A client behind the last tick (its write was cut, it was resynced, or it missed
            # a tick while writing) goes on at once; the others wait for the next tick.
            if client.position is not None and client.position >= ticks.upto:
                await ticks.wait(tick)
                now = ticks.at
            else:
                now = anyio.current_time()
            tick = ticks.number
            data = relay.take(client, upto=ticks.upto)
            if stats and now >= next_stats:
                data += self._stats_frame()
                next_stats = now + STATS_INTERVAL
            if not data and now >= next_ping:
                data = b": ping\n\n"
        return True


class _Ticks:
    """When the ``/events`` clients of one dashboard are written to: all at the same moments,
    the ticks, so that clients at the same position share one write and each wakes once a
    tick rather than for each event.

    A tick comes as soon as an event is published after a quiet spell, ``interval`` seconds
    after the writes of the tick before are done at the soonest, and at least every
    ``heartbeat`` seconds (clients send their pings and statistics then). No task of its own
    keeps the time: the first client to wait for a tick does, for all of them, and another
    takes over if it leaves.
    ``upto`` is the last event published before the last tick: what clients are sent then.
    """

    def __init__(self, relay: Relay, interval: float, heartbeat: float) -> None:
        self.relay = relay
        self.interval = interval
        self.heartbeat = heartbeat
        self.number = 0
        self.at = -math.inf
        self.upto = relay.seq
        self._keeping = False
        self._ticked: anyio.Event | None = None

    async def wait(self, seen: int) -> None:
        """Wait until a tick after tick number ``seen``."""
        while self.number <= seen:
            if self._keeping:
                if self._ticked is None:
                    self._ticked = anyio.Event()
                await self._ticked.wait()
            else:
                await self._keep()

    async def _keep(self) -> None:
        relay = self.relay
        self._keeping = True
        # The first client back from its write keeps the time: the clients of a tick are
        # written to together, so when it is done the others nearly are too. The next tick
        # comes ``interval`` after that, rather than after the tick: a busy process, whose
        # writes take longer, makes fewer and larger ones.
        ready = anyio.current_time()
        try:
            if relay.seq == self.upto and not relay.closed:
                with anyio.CancelScope(deadline=self.at + self.heartbeat):
                    await relay.changed().wait()
            if not relay.closed:
                await anyio.sleep_until(ready + self.interval)
            self.number += 1
            self.at, self.upto = anyio.current_time(), relay.seq
        finally:
            # On a tick, or when the keeper leaves: the others wake (one keeps the time next).
            self._keeping = False
            ticked, self._ticked = self._ticked, None
            if ticked is not None:
                ticked.set()


class _Watch:
    """What ends one ``/events`` stream from outside it: the client leaving, or a write to it
    pending for longer than ``send_timeout`` (``stuck``)."""

    def __init__(self, receive: Receive, client: Client, send_timeout: float) -> None:
        self.receive = receive
        self.client = client
        self.send_timeout = send_timeout
        self.stuck = False

    async def run(self, scope: anyio.CancelScope) -> None:
        # One timer a quarter of send_timeout apart while no write is pending, none per write.
        timeout = self.send_timeout
        check = timeout / 4
        while True:
            with anyio.move_on_after(check):
                while (await self.receive())["type"] != "http.disconnect":
                    pass
                scope.cancel()
                return
            since, now = self.client.writing_since, anyio.current_time()
            if since is not None and now - since >= timeout:
                # Where the server lets a write be cancelled, it ends now; where it does not
                # (hypercorn on trio), when the write does, and the client counts as stalled.
                self.stuck = True
                scope.cancel()
                return
            check = since + timeout - now if since is not None else timeout / 4


def _ignore(event: JobEvent) -> None:
    pass


def _guarded(
    observe: Callable[[JobEvent, str | None], None],
) -> Callable[[JobEvent, str | None], None]:
    """``observe``, logging rather than raising: a fault of the dashboard must never reach
    the Watcher's pipeline."""

    def call(event: JobEvent, dropped: str | None) -> None:
        try:
            observe(event, dropped)
        except Exception:
            log.exception("the dashboard could not take the event %s", event.key)

    return call


def watcher_stats(watcher: Watcher, scrubber: Scrubber | None = None) -> dict[str, Any]:
    """The Watcher's counters as the page shows them, and the transports that stopped for
    good with why (scrubbed of secrets: an API's error text may quote what it was sent)."""
    s = watcher.statistics()
    scrub = scrubber.text if scrubber is not None else str
    transports = {name: dict(counts) for name, counts in s.transports.items()}
    return {
        "requests": s.requests,
        "duplicates": s.duplicates,
        "reconnects": s.reconnects,
        "fallbacks": sum(c.get("fallbacks", 0) for c in transports.values()),
        "dead_letters": s.dead_letters,
        "callback_errors": s.callback_errors,
        "events_in": s.events_in,
        "events_out": s.events_out,
        "rate_limited": s.rate_limited,
        "reconciles": s.reconciles,
        "safety_polls": s.safety_polls,
        "dropped": dict(s.dropped),
        "transports": transports,
        "stopped": {name: scrub(why) for name, why in s.stopped.items()},
    }


#: Dead letters listed at most (the newest).
DEAD_LETTERS_SHOWN = 200


async def dead_letters(watcher: Watcher, scrubber: Scrubber) -> dict[str, Any]:
    """What the store keeps of dead letters: a store lists them with ``dead_letters`` (a
    list, or an async method returning one) of ``(event, subscriber, error)``."""
    store = watcher.store
    kept = getattr(store, "dead_letters", None)
    answer: dict[str, Any] = {
        "store": store.name,
        "replay": replays(store),
        "counted": watcher.statistics().dead_letters,
    }
    if callable(kept):
        try:
            kept = await kept()
        except JobwatchError as exc:
            return {
                **answer,
                "listed": False,
                "entries": [],
                "reason": scrubber.text(f"the {store.name} store failed: {exc}"),
            }
    if not isinstance(kept, list):
        return {
            **answer,
            "listed": False,
            "entries": [],
            "reason": f"the {store.name} store does not list dead letters",
        }
    entries = [
        {"event": scrubber.event(event), "subscriber": subscriber, "error": scrubber.text(error)}
        for event, subscriber, error in kept[-DEAD_LETTERS_SHOWN:]
    ]
    return {**answer, "listed": True, "total": len(kept), "entries": entries[::-1]}


def replays(store: Store) -> bool:
    """Whether ``store`` keeps dead letters it can put back into its inbox."""
    return type(store).replay_dead_letter is not Store.replay_dead_letter


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


async def _read(receive: Receive, limit: int = MAX_BODY) -> bytes | None:
    """The request's body; None when it is over ``limit`` bytes (read no further)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return body


def _bodiless(send: Send) -> Send:
    """``send`` for a HEAD request: the status and headers as they are (``content-length``
    too, the length GET would get), then an empty body in place of the body."""
    ended = False

    async def bodiless(message: Message) -> None:
        nonlocal ended
        if message["type"] != "http.response.body":
            await send(message)
        elif not ended:
            ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return bodiless


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes | None = None,
    *,
    extra: Iterable[tuple[bytes, bytes]] = (),
    cache: bytes = b"no-store",
) -> None:
    headers = [
        *_HEADERS,
        (b"cache-control", cache),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(
    send: Send, status: int, value: Any, *, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await _reply(send, status, _encode(value), _JSON, extra=extra)


# -- jobwatch dashboard ----------------------------------------------------------------------


async def serve_dashboard(
    config: Config,
    listen: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a Watcher with the transports ``config`` picks and serve its dashboard, until
    SIGTERM or SIGINT; print ``listening on URL`` first.

    ``listen`` (``HOST:PORT``, port 0 for any free one) overrides ``[jobwatch.dashboard]
    listen``. The policy sees a long-running service: webhooks where configured, else the
    workspace stream.
    """
    from ._policy import Signals
    from ._watcher import Watcher
    from .transports._serve import serve_app, stop_on_signal
    from .transports.webhook import parse_listen

    options = DashboardOptions.from_config(config)
    where = "--listen" if listen is not None else "[jobwatch.dashboard] listen"
    host, port = parse_listen(listen or options.listen, where)
    check_exposure(host, options)
    signals = attrs.evolve(Signals.detect(), tty=False, web_server=True)
    watcher = Watcher(config, environ=environ, signals=signals)
    app = watcher.dashboard_app()

    # The signals are heard from the start: the Watcher may wait to start (a Redis owner's
    # lease another process holds).
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
        async with anyio.create_task_group() as tg:
            # (Streams end at once, so that the server need not wait for them.)
            stop = functools.partial(stop_on_signal, first=app.close)
            tg.start_soon(stop, received, tg.cancel_scope, "stopping")
            async with watcher:
                url = await tg.start(
                    functools.partial(
                        serve_app,
                        app,
                        host,
                        port,
                        certfile=options.certfile,
                        keyfile=options.keyfile,
                    )
                )
                print(f"listening on {url}", flush=True)
                task_status.started(url)
                await anyio.sleep_forever()
