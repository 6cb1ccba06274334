"""Webhooks of the simulated Reader: the registry, signing, and delivery with retries.

The registry is plain state. `WebhookSender` is the async part: one worker per receiver makes
first attempts in the order deliveries were queued; a delivery that fails is retried in a task of
its own after the configured waits (simulated seconds), so one slow receiver does not hold up
the rest of its queue.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._faults import Faults

__all__ = [
    "Delivery",
    "DeliveryAttempt",
    "Target",
    "WebhookRegistry",
    "WebhookSender",
    "sign",
]

MAX_WEBHOOKS = 10
USER_AGENT = "Reader-Webhook/1.0"
_RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "x-reader-event",
        "x-reader-delivery",
        "x-reader-signature",
        "x-reader-timestamp",
    }
)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Reader's signature header value: ``sha256=`` + hex HMAC-SHA256 of ``"{ts}.{body}"``."""
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@attrs.frozen(kw_only=True)
class Target:
    """Where a delivery goes: a workspace webhook (with an id) or a job's inline webhook."""

    webhook_id: str | None
    url: str
    secret: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Delivery:
    """One event for one target; its id stays the same across retries."""

    id: str
    event: str
    body: bytes
    target: Target
    queued_at: float


@attrs.frozen(kw_only=True)
class DeliveryAttempt:
    """One POST the simulator made (or failed to make) to a receiver.

    `at` is simulated seconds; `status_code` is None when the attempt never got an HTTP answer
    (connection error, timeout, or the ``receiver_down`` fault), and then `error` says why.
    """

    delivery_id: str
    webhook_id: str | None
    event: str
    url: str
    attempt: int
    at: float
    status_code: int | None
    error: str | None
    body: bytes
    signature: str | None

    @property
    def ok(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300


@attrs.define(kw_only=True)
class _Webhook:
    id: str
    url: str
    name: str
    events: list[str]
    secret: str | None
    headers: dict[str, str]
    created_at: str
    updated_at: str
    active: bool = True
    total_attempts: int = 0
    failed_deliveries: int = 0
    last_delivery_at: str | None = None
    last_delivery_status: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "name": self.name,
            "events": list(self.events),
            "headers": dict(self.headers),
            "active": self.active,
            "deliveryStats": {
                "totalAttempts": self.total_attempts,
                "failedDeliveries": self.failed_deliveries,
                "lastDeliveryAt": self.last_delivery_at,
                "lastDeliveryStatus": self.last_delivery_status,
            },
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


class WebhookRegistry:
    """The workspace's webhooks (at most ten) and their delivery statistics."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._hooks: dict[str, _Webhook] = {}

    def is_full(self) -> bool:
        """Whether the workspace already has the maximum number of webhooks."""
        return len(self._hooks) >= MAX_WEBHOOKS

    def create(self, body: Mapping[str, Any], now_iso: str) -> dict[str, Any]:
        """Add a webhook from a validated create body; the result echoes the secret."""
        hook = _Webhook(
            id=f"wh_{self._rng.getrandbits(40):010x}",
            url=body["url"],
            name=body["name"],
            events=list(body["events"]),
            secret=body.get("secret"),
            headers=dict(body.get("headers", {})),
            created_at=now_iso,
            updated_at=now_iso,
        )
        self._hooks[hook.id] = hook
        created = hook.public()
        if hook.secret is not None:
            created["secret"] = hook.secret
        return created

    def page(self, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of webhooks (secrets stripped) and the total count."""
        hooks = list(self._hooks.values())
        return [hook.public() for hook in hooks[skip : skip + limit]], len(hooks)

    def get(self, webhook_id: str) -> dict[str, Any] | None:
        """One webhook (secret stripped), or None."""
        hook = self._hooks.get(webhook_id)
        return None if hook is None else hook.public()

    def update(
        self, webhook_id: str, body: Mapping[str, Any], now_iso: str
    ) -> dict[str, Any] | None:
        """Apply a validated PATCH body; None when there is no such webhook."""
        hook = self._hooks.get(webhook_id)
        if hook is None:
            return None
        for wire, field in (("url", "url"), ("name", "name"), ("active", "active")):
            if wire in body:
                setattr(hook, field, body[wire])
        if "events" in body:
            hook.events = list(body["events"])
        if "headers" in body:
            hook.headers = dict(body["headers"])
        hook.updated_at = now_iso
        return hook.public()

    def delete(self, webhook_id: str) -> bool:
        """Remove a webhook; False when there is no such webhook."""
        return self._hooks.pop(webhook_id, None) is not None

    def is_live(self, webhook_id: str | None) -> bool:
        """Whether deliveries to this webhook may still leave: it exists and is active (a
        job's inline webhook, with no id, always is)."""
        if webhook_id is None:
            return True
        hook = self._hooks.get(webhook_id)
        return hook is not None and hook.active

    def targets(self, event: str) -> list[Target]:
        """The active webhooks subscribed to `event`."""
        return [
            Target(webhook_id=hook.id, url=hook.url, secret=hook.secret, headers=dict(hook.headers))
            for hook in self._hooks.values()
            if hook.active and event in hook.events
        ]

    def record_attempt(self, attempt: DeliveryAttempt, at_iso: str) -> None:
        """Count an attempt in the webhook's ``deliveryStats``."""
        hook = self._hooks.get(attempt.webhook_id or "")
        if hook is not None:
            hook.total_attempts += 1
            hook.last_delivery_at = at_iso
            hook.last_delivery_status = attempt.status_code

    def record_failure(self, webhook_id: str | None) -> None:
        """Count a delivery that exhausted its attempts."""
        hook = self._hooks.get(webhook_id or "")
        if hook is not None:
            hook.failed_deliveries += 1


def new_delivery(
    rng: random.Random, event: str, payload: Mapping[str, Any], target: Target, now: float
) -> Delivery:
    """A delivery with a fresh (seeded) UUID and the compact JSON body of `payload`."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    delivery_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return Delivery(id=delivery_id, event=event, body=body, target=target, queued_at=now)


@attrs.frozen(kw_only=True)
class SenderHooks:
    """What `WebhookSender` needs from the simulator that owns it."""

    now: Callable[[], float]
    sleep_until: Callable[[float], Awaitable[None]]
    faults: Callable[[], Faults]
    receiver_down: Callable[[], bool]
    timestamp: Callable[[], int]
    iso: Callable[[float], str]


class WebhookSender:
    """Delivers webhooks over HTTP with retries, faults and a log of every attempt."""

    def __init__(
        self,
        *,
        hooks: SenderHooks,
        registry: WebhookRegistry,
        rng: random.Random,
        counters: Counter[str],
        attempts: int = 3,
        waits: Sequence[float] = (1.0, 4.0),
        timeout: float = 10.0,
    ) -> None:
        self._hooks = hooks
        self._registry = registry
        self._rng = rng
        self._counters = counters
        self._attempts = attempts
        self._waits = tuple(waits)
        self._timeout = timeout
        self.log: list[DeliveryAttempt] = []
        self._queues: dict[tuple[str | None, str], MemoryObjectSendStream[Delivery]] = {}
        self._backlog: list[Delivery] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._client: httpx.AsyncClient | None = None

    def enqueue(self, delivery: Delivery) -> None:
        """Queue a delivery; it leaves once `run` is running."""
        if self._tg is None:
            self._backlog.append(delivery)
            return
        key = (delivery.target.webhook_id, delivery.target.url)
        queue = self._queues.get(key)
        if queue is None:
            queue, receive = anyio.create_memory_object_stream[Delivery](math.inf)
            self._queues[key] = queue
            self._tg.start_soon(self._worker, receive)
        queue.send_nowait(delivery)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver until cancelled."""
        async with httpx.AsyncClient(trust_env=False) as client, anyio.create_task_group() as tg:
            self._client, self._tg = client, tg
            try:
                backlog, self._backlog = self._backlog, []
                for delivery in backlog:
                    self.enqueue(delivery)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = self._client = None
                for queue in self._queues.values():
                    queue.close()
                self._queues.clear()

    async def _worker(self, receive: MemoryObjectReceiveStream[Delivery]) -> None:
        async with receive:
            async for delivery in receive:
                for item in await self._maybe_reorder(delivery, receive):
                    await self._first_attempt(item)

    async def _maybe_reorder(
        self, delivery: Delivery, receive: MemoryObjectReceiveStream[Delivery]
    ) -> list[Delivery]:
        if not self._hooks.faults().webhook_reorder:
            return [delivery]
        await anyio.lowlevel.checkpoint()
        try:
            following = receive.receive_nowait()
        except anyio.WouldBlock:
            return [delivery]
        self._counters["webhook_reorder"] += 1
        return [following, delivery]

    async def _first_attempt(self, delivery: Delivery) -> None:
        delay = self._hooks.faults().webhook_delay
        if delay:
            self._counters["webhook_delay"] += 1
            await self._hooks.sleep_until(delivery.queued_at + delay)
        if not self._registry.is_live(delivery.target.webhook_id):
            return  # disabled or deleted meanwhile: Reader stops its deliveries at once
        if await self._attempt(delivery, 1):
            await self._maybe_duplicate(delivery)
        elif self._tg is not None:
            # The wait counts from now, not from when the retry task gets to run.
            self._tg.start_soon(self._retry, delivery, self._hooks.now())

    async def _retry(self, delivery: Delivery, failed_at: float) -> None:
        for number in range(2, self._attempts + 1):
            wait = self._waits[min(number - 2, len(self._waits) - 1)] if self._waits else 0.0
            await self._hooks.sleep_until(failed_at + wait)
            if not self._registry.is_live(delivery.target.webhook_id):
                return  # disabled or deleted meanwhile: no more attempts, none counted failed
            if await self._attempt(delivery, number):
                await self._maybe_duplicate(delivery)
                return
            failed_at = self._hooks.now()
        self._registry.record_failure(delivery.target.webhook_id)

    async def _maybe_duplicate(self, delivery: Delivery) -> None:
        probability = self._hooks.faults().webhook_dup_p
        if probability and self._rng.random() < probability:
            self._counters["webhook_dup_p"] += 1
            await self._attempt(delivery, 1)

    async def _attempt(self, delivery: Delivery, number: int) -> bool:
        now = self._hooks.now()
        headers, signature = self._headers(delivery)
        status, error = await self._post(delivery, headers)
        attempt = DeliveryAttempt(
            delivery_id=delivery.id,
            webhook_id=delivery.target.webhook_id,
            event=delivery.event,
            url=delivery.target.url,
            attempt=number,
            at=now,
            status_code=status,
            error=error,
            body=delivery.body,
            signature=signature,
        )
        self.log.append(attempt)
        self._registry.record_attempt(attempt, self._hooks.iso(now))
        return attempt.ok

    async def _post(
        self, delivery: Delivery, headers: dict[str, str]
    ) -> tuple[int | None, str | None]:
        if self._hooks.receiver_down():
            self._counters["receiver_down"] += 1
            return None, "connection refused (receiver_down fault)"
        assert self._client is not None, "deliveries are sent only while run() is running"
        try:
            response = await self._client.post(
                delivery.target.url, content=delivery.body, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException:
            return None, f"timed out after {self._timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None

    def _headers(self, delivery: Delivery) -> tuple[dict[str, str], str | None]:
        target = delivery.target
        headers = {k: v for k, v in target.headers.items() if k.lower() not in _RESERVED}
        headers.update(
            {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Reader-Event": delivery.event,
                "X-Reader-Delivery": delivery.id,
            }
        )
        if target.secret is None:
            return headers, None
        timestamp = self._hooks.timestamp()
        signature = sign(target.secret, timestamp, delivery.body)
        probability = self._hooks.faults().corrupt_signature_p
        if probability and self._rng.random() < probability:
            self._counters["corrupt_signature_p"] += 1
            signature = sign(target.secret + "-corrupted", timestamp, delivery.body)
        headers["X-Reader-Signature"] = signature
        headers["X-Reader-Timestamp"] = str(timestamp)
        return headers, signature
