"""The ``relay`` transport: events from a fleet of receivers to a fleet of workers, on a Stream.

It plays one of two roles (``[jobwatch.relay] role``; ``auto`` publishes when the Watcher runs
other transports beside it, and consumes when the relay is its only transport):

**publish** — on a receiver (``transport = ["webhook", "relay"]``). The relay subscribes to
every event its Watcher dispatches and appends it to the stream, once per event key (a marker
key makes a replay after a crash publish nothing twice). While Redis is away it retries; the
event stays in the receiver's inbox until it is published, so nothing is lost.

**consume** — on a worker (``transport = "relay"``). The relay reads the stream through a
consumer group, so each entry goes to one worker; hands each event to its Watcher's pipeline
(``host.deliver``); waits until the event has left the Watcher's inbox — which happens once
every callback has finished (or given up as a dead letter) — and only then acknowledges the
entry (``XACK``). Entries a worker left unacknowledged for ``claim_idle`` seconds (it died, or
hangs) are claimed by another (``XAUTOCLAIM``); while a slow callback runs, the worker renews
its claim so that no one else takes the entry from a live worker.

The stream is the workers' durable inbox, so a worker needs no durable store: use
``store = "memory"`` there (see docs/scaling.md).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
from collections.abc import Sequence
from typing import Any, Literal

import anyio
import attrs
import redis
from anyio.abc import TaskStatus

from jobwatch import Config, ConfigError, DecodeError, JobEvent, JobwatchError, PluginError
from jobwatch.abc import Transport, TransportHost

from . import _scripts
from ._backoff import Backoff
from ._client import RedisClient, describe_url
from ._inflight import InFlight
from ._keys import as_str, decode_entry
from ._store import RedisStore

__all__ = ["RelayOptions", "RelayTransport"]

log = logging.getLogger("jobwatch.relay")

Entry = tuple[bytes, Any]


@attrs.frozen(kw_only=True)
class RelayOptions:
    """``[jobwatch.relay]``.

    - ``url``: the Redis server holding the stream.
    - ``stream`` / ``group``: the stream's key and the workers' consumer group.
    - ``consumer``: this worker's name in the group (default ``hostname-pid``).
    - ``role``: ``publish``, ``consume`` or ``auto`` (see the module docstring).
    - ``claim_idle``: seconds an entry may stay unacknowledged before another worker claims it.
    - ``batch``: entries read at once; ``block``: seconds one read waits for new entries.
    - ``maxlen``: the stream is trimmed to about this many entries (0: never trimmed).
    - ``published_ttl``: seconds a published key is remembered (no republish within it).
    - ``connections`` / ``timeout``: the connection pool and its per-command timeout.
    """

    url: str = attrs.field(
        default="redis://127.0.0.1:6379/0", repr=lambda url: repr(describe_url(url))
    )
    stream: str = "jobwatch:events"
    group: str = "jobwatch"
    consumer: str | None = None
    role: Literal["auto", "publish", "consume"] = "auto"
    claim_idle: float = 30.0
    batch: int = 100
    block: float = 1.0
    maxlen: int = 1_000_000
    published_ttl: float = 24 * 3600.0
    connections: int = 4
    timeout: float = 5.0


def _check(options: RelayOptions) -> None:
    if not options.claim_idle > 0 or not options.block > 0 or not options.published_ttl > 0:
        raise ConfigError(
            "[jobwatch.relay] claim_idle, block and published_ttl must be > 0 seconds"
        )
    if options.timeout <= options.block:
        raise ConfigError("[jobwatch.relay] timeout must be longer than block")
    if options.batch < 1 or options.maxlen < 0 or options.connections < 1:
        raise ConfigError("[jobwatch.relay] batch and connections must be >= 1, maxlen >= 0")
    if not options.stream or not options.group or options.consumer == "":
        raise ConfigError("[jobwatch.relay] stream, group and consumer must not be empty")


class RelayTransport(Transport):
    """Publishes a receiver's events to a Redis Stream, or consumes them on a worker."""

    name = "relay"
    push = True

    def __init__(self, options: RelayOptions | None = None) -> None:
        self.options = options or RelayOptions()
        _check(self.options)
        self.consumer = self.options.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.role: str | None = None
        self._client: RedisClient | None = None

    @classmethod
    def from_config(cls, config: Config) -> RelayTransport:
        return cls(config.options("relay", RelayOptions))

    def describe(self) -> dict[str, Any]:
        """Non-secret facts for ``jobwatch doctor``."""
        o = self.options
        return {
            "url": describe_url(o.url),
            "stream": o.stream,
            "group": o.group,
            "consumer": self.consumer,
            "role": o.role,
        }

    def _role(self, host: TransportHost) -> str:
        if self.options.role != "auto":
            return self.options.role
        names = host.transports  # what runs beside us
        return "publish" if any(n != self.name for n in names) else "consume"

    @property
    def client(self) -> RedisClient:
        if self._client is None:
            raise JobwatchError("the relay transport is not running; use it inside a Watcher")
        return self._client

    async def run(
        self, host: TransportHost, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.role = self._role(host)
        self._client = RedisClient(
            self.options.url,
            connections=self.options.connections,
            timeout=self.options.timeout,
            table="[jobwatch.relay]",
            names="stream",
        )
        try:
            await self._check_credentials()
            if self.role == "publish":
                await self._publisher(host, task_status)
            else:
                task_status.started()
                await self._consumer(host)
        finally:
            self._client.close()

    async def _check_credentials(self) -> None:
        """A password or database Redis refuses ends the start with a ConfigError that says
        what to fix, rather than a relay that retries in vain; a Redis that is away now is
        retried by the roles themselves."""
        try:
            await self.client.call(lambda r: r.ping())
        except ConfigError:
            raise
        except JobwatchError as exc:
            log.warning("relay: %s", exc)

    # -- publish ---------------------------------------------------------------------------

    async def _publisher(self, host: TransportHost, task_status: TaskStatus[None]) -> None:
        # `subscribe` is the Watcher's public API but not part of TransportHost; a request to
        # make "subscribe to every dispatched event" official is in the plugin's report.
        subscribe = getattr(host, "subscribe", None)
        if subscribe is None:
            raise PluginError("the relay's publish role needs a jobwatch Watcher as its host")
        sub = subscribe(functools.partial(self._publish, host), job_id=None)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            sub.cancel()

    async def _publish(self, host: TransportHost, event: JobEvent) -> None:
        """Append ``event`` to the stream once; retries while Redis is away."""
        if event.source == self.name:
            return  # never echo what the relay itself delivered
        o = self.options
        args = [
            f"{o.stream}:published:{event.key}",
            o.stream,
            str(math.ceil(o.published_ttl)),  # Redis refuses EX 0
            str(o.maxlen),
            event.key,
            event.to_json(),
        ]
        backoff = Backoff()
        while True:
            try:
                entry = await self.client.call(functools.partial(_eval_publish, args))
            except JobwatchError as exc:
                host.count(self.name, "reconnects")
                log.warning("could not publish %s to %s (retrying): %s", event.key, o.stream, exc)
                await anyio.sleep(backoff.next_delay())
                continue
            host.count(self.name, "published" if entry is not None else "republish_skipped")
            return

    # -- consume ---------------------------------------------------------------------------

    async def _consumer(self, host: TransportHost) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.client.call(self._ensure_group)
                # Entries this consumer name holds (a restart, a lost XACK) come first.
                await self._drain_own(host)
                backoff.reset()
                await self._consume(host, backoff)
            except ConfigError:
                raise  # a password changed under a running worker: retrying cannot help
            except JobwatchError as exc:
                host.count(self.name, "reconnects")
                delay = backoff.next_delay()
                log.warning(
                    "relay consumer %s: %s; reconnecting in %.2f s", self.consumer, exc, delay
                )
                await anyio.sleep(delay)

    def _ensure_group(self, r: redis.Redis) -> None:
        try:
            r.xgroup_create(self.options.stream, self.options.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _drain_own(self, host: TransportHost) -> None:
        after = "0"
        while True:
            entries = await self.client.call(functools.partial(self._read, after, None))
            if not entries:
                return
            await self._handle(host, entries)
            after = as_str(entries[-1][0])

    async def _consume(self, host: TransportHost, backoff: Backoff) -> None:
        next_claim = anyio.current_time()
        while True:
            if anyio.current_time() >= next_claim:
                next_claim = anyio.current_time() + self.options.claim_idle / 2
                await self._claim_idle(host)
            read = functools.partial(self._read, ">", int(self.options.block * 1000))
            entries = await self.client.call(read, abandon=True)
            if entries:
                await self._handle(host, entries)
            backoff.reset()

    def _read(self, after: str, block_ms: int | None, r: redis.Redis) -> list[Entry]:
        o = self.options
        reply: Any = r.xreadgroup(
            o.group, self.consumer, {o.stream: after}, count=o.batch, block=block_ms
        )
        return list(reply[0][1]) if reply else []

    async def _claim_idle(self, host: TransportHost) -> None:
        start = "0-0"
        while True:
            start, entries = await self.client.call(functools.partial(self._autoclaim, start))
            if entries:
                host.count(self.name, "claimed", len(entries))
                log.warning(
                    "relay consumer %s claimed %d entries left idle by another worker",
                    self.consumer,
                    len(entries),
                )
                await self._handle(host, entries)
            if start in ("0-0", "0"):
                return

    def _autoclaim(self, start: str, r: redis.Redis) -> tuple[str, list[Entry]]:
        o = self.options
        reply = r.xautoclaim(
            o.stream,
            o.group,
            self.consumer,
            int(o.claim_idle * 1000),
            start_id=start,
            count=o.batch,
        )
        return as_str(reply[0]), list(reply[1])

    async def _handle(self, host: TransportHost, entries: Sequence[Entry]) -> None:
        tracker = InFlight()
        events: list[JobEvent] = []
        bad: list[bytes] = []
        for entry_id, fields in entries:
            try:
                event = decode_entry(fields or {})
            except DecodeError as exc:
                log.error("relay entry %s is not an event, dropped: %s", as_str(entry_id), exc)
                bad.append(entry_id)
                continue
            events.append(attrs.evolve(event, source=self.name))
            tracker.add(as_str(entry_id), event.key)
        if bad:
            host.count(self.name, "malformed", len(bad))
            await self._ack(bad)
        if events:
            host.count(self.name, "events", len(events))
            await host.deliver(events)
            await self._settle(host, tracker)

    async def _settle(self, host: TransportHost, tracker: InFlight) -> None:
        """Acknowledge each entry once its event has left the Watcher's inbox."""
        delay = 0.001
        renew_at = anyio.current_time() + self.options.claim_idle / 3
        while True:
            done = tracker.settled(await _pending_keys(host))
            if done:
                await self._ack(done)
                host.count(self.name, "acked", len(done))
                delay = 0.001
            if not tracker:
                return
            if anyio.current_time() >= renew_at:
                # A slow callback: keep the entries ours, or another worker would claim them.
                renew_at = anyio.current_time() + self.options.claim_idle / 3
                await self.client.call(functools.partial(self._renew, tracker.ids))
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _ack(self, ids: Sequence[bytes | str]) -> None:
        o = self.options
        await self.client.call(lambda r: r.xack(o.stream, o.group, *ids))

    def _renew(self, ids: list[str], r: redis.Redis) -> None:
        o = self.options
        r.xclaim(o.stream, o.group, self.consumer, 0, list[Any](ids), justid=True)


async def _pending_keys(host: TransportHost) -> list[str]:
    store = host.store
    if isinstance(store, RedisStore):
        return await store.pending_keys()
    return [event.key for event in await store.pending()]


def _eval_publish(args: list[str], r: redis.Redis) -> bytes | None:
    publish = _scripts.script(r, _scripts.PUBLISH)
    entry: bytes | None = publish(keys=args[:2], args=args[2:], client=r)
    return entry
