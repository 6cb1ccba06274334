"""Webhook deliveries of the fakes: one sender per fake, in order, with the API's retries.

First attempts leave in the order the deliveries were made. A delivery that fails is retried
in a task of its own after its waits (simulated seconds), as far as the API retries at all.
Each attempt is signed anew by the fake (`FakeAPI.sign`) and logged as a `FakeDelivery`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    from ._fake_api import FakeAPI

__all__ = ["FakeDelivery", "Outgoing", "Sender", "whsec"]


@attrs.frozen(kw_only=True)
class FakeDelivery:
    """One webhook POST a fake made (or failed to make).

    Attributes:
        id: the delivery id (``webhook-id``, ``X-GitHub-Delivery``); the same on retries.
        event: what it reports (``batch.completed``, ``workflow_run.completed``, ``ping``,
            Replicate's ``start``/``output``/``logs``/``completed``).
        job_id: the job it is about, or None (``ping``).
        url: where it went.
        attempt: 1 for the first attempt, 2 for the first retry...
        at: simulated seconds.
        status_code: the receiver's answer, or None when there was none (then `error` says why).
        error: why there was no answer.
        headers: the headers sent, signature included.
        body: the body sent.
        forged: whether the signature was made with a wrong secret on purpose.
    """

    id: str
    event: str
    job_id: str | None
    url: str
    attempt: int
    at: float
    status_code: int | None
    error: str | None
    headers: Mapping[str, str]
    body: bytes
    forged: bool = False

    @property
    def ok(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300


@attrs.frozen(kw_only=True)
class Outgoing:
    """A delivery to make: `retries` are the simulated seconds to wait before each retry."""

    id: str
    event: str
    job_id: str | None
    url: str
    body: bytes
    retries: tuple[float, ...] = ()


class Sender:
    """Sends one fake's deliveries while `run` runs; keeps a log of every attempt."""

    def __init__(self, fake: FakeAPI, *, timeout: float) -> None:
        self._fake = fake
        self._timeout = timeout
        self.log: list[FakeDelivery] = []
        self._made: dict[str, Outgoing] = {}
        self._held: list[Outgoing] | None = None
        self._backlog: list[Outgoing] = []
        self._queue: MemoryObjectSendStream[Outgoing] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._client: httpx.AsyncClient | None = None
        self._logged: anyio.Event | None = None

    def enqueue(self, delivery: Outgoing) -> None:
        """Queue a delivery; it leaves once `run` runs, unless deliveries are held."""
        self._made[delivery.id] = delivery
        if self._held is not None:
            self._held.append(delivery)
        elif self._queue is None:
            self._backlog.append(delivery)
        else:
            self._queue.send_nowait(delivery)

    def hold(self) -> None:
        """Keep every new delivery back until `release`."""
        if self._held is None:
            self._held = []

    def release(self, *, reverse: bool = False) -> None:
        """Queue the held deliveries, oldest first or (`reverse`) newest first."""
        held, self._held = self._held or [], None
        for delivery in reversed(held) if reverse else held:
            self.enqueue(delivery)

    async def logged(self, count: int) -> None:
        """Wait until the log holds `count` attempts."""
        while len(self.log) < count:
            self._logged = self._logged or anyio.Event()
            await self._logged.wait()

    def _record(self, attempt: FakeDelivery) -> None:
        self.log.append(attempt)
        logged, self._logged = self._logged, None
        if logged is not None:
            logged.set()

    def redeliver(self, delivery_id: str) -> None:
        """Queue a delivery made earlier once more, with no retries."""
        made = self._made.get(delivery_id)
        if made is None:
            raise KeyError(f"no delivery {delivery_id!r} was made")
        self.enqueue(attrs.evolve(made, retries=()))

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver until cancelled."""
        send, receive = anyio.create_memory_object_stream[Outgoing](math.inf)
        async with httpx.AsyncClient(trust_env=False) as client, anyio.create_task_group() as tg:
            self._client, self._tg, self._queue = client, tg, send
            try:
                backlog, self._backlog = self._backlog, []
                for delivery in backlog:
                    send.send_nowait(delivery)
                tg.start_soon(self._worker, receive)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._client = self._tg = self._queue = None
                send.close()

    async def _worker(self, receive: MemoryObjectReceiveStream[Outgoing]) -> None:
        async with receive:
            async for delivery in receive:
                sent = await self._attempt(delivery, 1)
                if sent.ok:
                    await self._maybe_duplicate(sent)
                elif delivery.retries and self._tg is not None:
                    # The wait counts from the failure, not from when the task gets to run.
                    self._tg.start_soon(self._retry, delivery, self._fake.now())

    async def _retry(self, delivery: Outgoing, failed_at: float) -> None:
        for number, wait in enumerate(delivery.retries, 2):
            await self._fake.sleep_until(failed_at + wait)
            sent = await self._attempt(delivery, number)
            if sent.ok:
                await self._maybe_duplicate(sent)
                return
            failed_at = self._fake.now()

    async def _maybe_duplicate(self, sent: FakeDelivery) -> None:
        if self._fake.chance("webhook_duplicate_p", self._fake.faults.webhook_duplicate_p):
            status, error = await self._post(sent.url, sent.headers, sent.body)
            self._record(attrs.evolve(sent, at=self._fake.now(), status_code=status, error=error))

    async def _attempt(self, delivery: Outgoing, number: int) -> FakeDelivery:
        forged = self._fake.chance("webhook_forge_p", self._fake.faults.webhook_forge_p)
        headers = self._fake.sign(delivery, forged)
        at = self._fake.now()
        status, error = await self._post(delivery.url, headers, delivery.body)
        attempt = FakeDelivery(
            id=delivery.id,
            event=delivery.event,
            job_id=delivery.job_id,
            url=delivery.url,
            attempt=number,
            at=at,
            status_code=status,
            error=error,
            headers=headers,
            body=delivery.body,
            forged=forged,
        )
        self._record(attempt)
        return attempt

    async def _post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int | None, str | None]:
        assert self._client is not None, "deliveries are sent only while run() is running"
        try:
            response = await self._client.post(
                url, content=body, headers=dict(headers), timeout=self._timeout
            )
        except httpx.TimeoutException:
            return None, f"timed out after {self._timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None


def whsec(key: bytes) -> str:
    """A Standard Webhooks secret (``whsec_`` and the key in base64), as the APIs that use the
    scheme hand them out."""
    return "whsec_" + base64.b64encode(key).decode("ascii")
