"""A thin webhook delivery (an id, no state) is answered by one status request: the receiver
polls the job before recording, so the application sees the counts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import anyio
import httpx
import pytest
import trio
import trio.testing
from _samples import BATCH, answer, batch, openai_event

import jobwatch
from jobwatch.abc import EventSink, WebhookDelivery
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedHost
from jobwatch.transports._receiver import THIN_DELIVERY_DEADLINE, Receiver

pytestmark = pytest.mark.anyio


def _api(requests: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        body = answer(batch("completed", completed=95, failed=5, output_file_id="file-1"))
        return httpx.Response(200, content=body.body)

    return httpx.MockTransport(handle)


async def test_a_thin_delivery_is_answered_after_one_status_request() -> None:
    requests: list[str] = []
    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"provider": "openai-batch", "api_key": "sk-test"}}
    )
    from jobwatch.providers.presets import OpenAIBatchProvider

    provider = OpenAIBatchProvider.from_config(config)
    async with ScriptedHost(config, provider, http_transport=_api(requests)) as host:
        receiver = Receiver(host, scheme=None, path=None, allow_unsigned=True)
        headers, body = openai_event("completed")
        reply = await receiver.handle("POST", "/", headers, body)
    assert reply.status == 200 and json.loads(reply.body) == {"ok": True, "duplicate": False}
    assert requests == [f"/v1/batches/{BATCH}"] and host.reconciled == [BATCH]
    (final,) = [e for e in host.delivered if e.terminal]
    assert (final.kind, final.completed, final.total) == (jobwatch.EventKind.COMPLETED, 100, 100)
    assert final.source == "poll", "the snapshot came first; the thin event was a duplicate"


class _Sink(EventSink):
    """A sink that makes no requests (a serverless handler's, say): reconcile does nothing."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.delivered: list[jobwatch.JobEvent] = []
        self.asked: list[str] = []
        from jobwatch.providers.presets import OpenAIBatchProvider

        self.provider = OpenAIBatchProvider.from_config(
            jobwatch.Config.from_mapping({"jobwatch": {"provider": "openai-batch"}})
        )

    async def deliver(
        self,
        events: Sequence[jobwatch.JobEvent],
        *,
        authoritative: bool = False,
        as_of: float | None = None,
        claim: tuple[str, float] | None = None,
    ) -> None:
        self.delivered += events
        if claim is not None:
            await self.store.claim(claim[0], ttl=claim[1])

    def count(self, transport: str, name: str, n: int = 1) -> None:
        pass

    async def reconcile(self, job_ids: Iterable[str], *, reason: str) -> None:
        self.asked += job_ids


async def test_without_requests_the_thin_event_itself_is_recorded() -> None:
    sink = _Sink()
    receiver = Receiver(sink, scheme=None, path=None, allow_unsigned=True)
    reply = await receiver.handle("POST", "/", *openai_event("expired"))
    assert reply.status == 200 and sink.asked == [BATCH]
    assert [(e.kind, e.error) for e in sink.delivered] == [(jobwatch.EventKind.FAILED, "expired")]


async def test_a_delivery_that_only_asks_for_a_poll_is_not_ignored() -> None:
    sink = _Sink()

    def decode(headers: object, body: bytes, *, source: str) -> WebhookDelivery:
        return WebhookDelivery(
            delivery_id="d1", event_name="job.changed", events=(), reconcile=("job-9",)
        )

    sink.provider.decode_webhook = decode  # type: ignore[method-assign]
    reply = await Receiver(sink, scheme=None, path=None, allow_unsigned=True).handle(
        "POST", "/", {"content-type": "application/json"}, b"{}"
    )
    assert json.loads(reply.body) == {"ok": True, "duplicate": False}
    assert sink.asked == ["job-9"]


class _StuckSink(_Sink):
    """A sink whose status request waits on a rate limit that does not lift."""

    async def reconcile(self, job_ids: Iterable[str], *, reason: str) -> None:
        self.asked += job_ids
        await anyio.sleep_forever()


def test_a_status_request_that_waits_long_does_not_hold_the_sender() -> None:
    # Under a rate limit the thin delivery's poll may wait for an hour: the sender would time
    # out and retry. After THIN_DELIVERY_DEADLINE the delivery's own event is recorded.
    sink = _StuckSink()
    receiver = Receiver(sink, scheme=None, path=None, allow_unsigned=True)

    async def main() -> tuple[int, float]:
        start = trio.current_time()
        reply = await receiver.handle("POST", "/", *openai_event("expired"))
        return reply.status, trio.current_time() - start

    status, waited = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert status == 200 and sink.asked == [BATCH]
    assert waited == pytest.approx(THIN_DELIVERY_DEADLINE)
    assert [e.kind for e in sink.delivered] == [jobwatch.EventKind.FAILED]
