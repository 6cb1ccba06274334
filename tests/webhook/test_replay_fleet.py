"""A captured delivery replayed later is a duplicate, whoever receives it and whenever.

The receiver claims the identity of each recorded delivery's signed content in the store, so
a replay is answered ``duplicate`` by a restarted receiver, by a serverless invocation of
another instance, and after any number of other deliveries — and dispatches nothing, even
where the job has moved on (a new run would take a replayed page for one of its own).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from _webhook_helpers import PATH, SECRET, delivery, receiving, until

import jobwatch
from jobwatch._guard import decide
from jobwatch.abc import EventSink, JobState, Store
from jobwatch.providers._reader_scheme import ReaderScheme
from jobwatch.providers.reader import ReaderProvider
from jobwatch.serverless import Handler
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import StoreConformance
from jobwatch.transports._receiver import Receiver

pytestmark = pytest.mark.anyio

PAGE = {"jobId": "job_9", "url": "https://example.com/p1", "markdown": "# p1"}
DUPLICATE = {"ok": True, "duplicate": True}


async def _run_again(store: Store, job_id: str) -> None:
    # What a poll leaves when it finds the job running again: its second run.
    await store.put_job(
        JobState(
            job_id=job_id, run=2, status=jobwatch.JobStatus.PROCESSING, started=True, watched=True
        )
    )


async def test_a_replay_to_a_restarted_receiver_is_a_duplicate(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    headers, body = delivery("job.page", PAGE, delivery_id="d-page")
    async with receiving(store=SQLiteStore(db)) as running, running.client() as client:
        first = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
    store = SQLiteStore(db)
    await store.open()
    await _run_again(store, "job_9")
    await store.aclose()
    async with receiving(store=SQLiteStore(db)) as running, running.client() as client:
        replays = [
            await client.post(
                PATH, content=body, headers={**headers, "x-reader-delivery": f"d-{n}"}
            )
            for n in range(3)
        ]
        await anyio.wait_all_tasks_blocked()
        stats = running.watcher.statistics().transports["webhook"]
    assert first.json() == {"ok": True, "duplicate": False}
    assert [r.json() for r in replays] == [DUPLICATE] * 3
    assert running.events == []
    assert stats["duplicates"] == 3 and "deliveries" not in stats


async def test_a_replay_after_ten_thousand_other_deliveries_is_a_duplicate() -> None:
    store = MemoryStore()
    headers, body = delivery("job.page", PAGE, delivery_id="d-page")
    async with receiving(store=store) as running:
        receiver = running.transport.receiver
        assert receiver is not None
        assert json.loads((await receiver.handle("POST", PATH, headers, body)).body) == {
            "ok": True,
            "duplicate": False,
        }
        for n in range(10_001):
            other = {"jobId": f"job_{n}", "url": f"https://example.com/{n}"}
            reply = await receiver.handle(
                "POST", PATH, *delivery("job.page", other, delivery_id=f"d{n}")
            )
            assert reply.status == 200
        await until(lambda: len(running.events) == 10_002)
        await _run_again(store, "job_9")
        before = len(running.events)
        replay = await receiver.handle("POST", PATH, headers, body)
        await anyio.wait_all_tasks_blocked()
    assert json.loads(replay.body) == DUPLICATE
    assert running.events[before:] == []


def test_a_replay_to_another_serverless_instance_is_a_duplicate(tmp_path: Path) -> None:
    # Two instances of a function (or one after a cold start) with one store between them.
    cfg = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "store": "sqlite",
                "sqlite": {"path": str(tmp_path / "s.db")},
                "webhook": {"secrets": [SECRET]},
            }
        }
    )
    received: list[jobwatch.JobEvent] = []
    headers, body = delivery("job.page", PAGE, delivery_id="d-page")
    first = Handler(cfg, on_event=received.append).handle("POST", PATH, headers, body)
    other = Handler(cfg, on_event=received.append)
    anyio.run(_run_again_in, other.store)
    replay = other.handle("POST", PATH, {**headers, "x-reader-delivery": "d-2"}, body)
    assert json.loads(first.body)["duplicate"] is False
    assert json.loads(replay.body) == DUPLICATE
    assert [e.kind for e in received] == [jobwatch.EventKind.PAGE]


async def _run_again_in(store: Store) -> None:
    await store.open()
    try:
        await _run_again(store, "job_9")
    finally:
        await store.aclose()


async def test_a_delivery_answered_503_is_not_a_duplicate_when_retried() -> None:
    # The identity is claimed only once the delivery is recorded: a retry after a 503 is
    # recorded, not dropped.
    store = _Failing()
    headers, body = delivery("job.page", PAGE, delivery_id="d-page")
    async with receiving(store=store) as running, running.client() as client:
        store.failing = True
        refused = await client.post(PATH, content=body, headers=headers)
        store.failing = False
        retried = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
    assert refused.status_code == 503
    assert retried.json() == {"ok": True, "duplicate": False}


async def test_a_store_that_cannot_say_whether_it_saw_a_delivery_answers_503() -> None:
    store = _Failing()
    headers, body = delivery("job.page", PAGE, delivery_id="d-page")
    async with receiving(store=store) as running, running.client() as client:
        store.claims_fail = True
        reply = await client.post(PATH, content=body, headers=headers)
        await anyio.wait_all_tasks_blocked()
    assert reply.status_code == 503 and running.events == []
    assert running.watcher.statistics().transports["webhook"]["unrecorded"] == 1


async def test_a_delivery_s_identity_goes_to_the_store_with_its_events() -> None:
    # One store call records a delivery and claims its identity (in one transaction, where
    # the store has them), instead of a second call once the first returned.
    store = _Noting()
    headers, body = delivery("job.page", PAGE, delivery_id="d-page")
    async with receiving(store=store) as running, running.client() as client:
        first = await client.post(PATH, content=body, headers=headers)
        replay = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
    assert first.json() == {"ok": True, "duplicate": False} and replay.json() == DUPLICATE
    ((key, ttl),) = store.claims
    assert key.startswith("delivery:reader:") and ttl == 2 * 300 + 60  # twice the tolerance
    assert store.calls == ["record_batch"]


async def test_a_store_whose_record_batch_takes_no_claim_still_refuses_a_replay(
    tmp_path: Path,
) -> None:
    # A store plugin written before claims went with the records: claimed after them.
    db = tmp_path / "state.db"
    headers, body = delivery("job.page", PAGE, delivery_id="d-page")
    async with receiving(store=_OlderStore(db)) as running, running.client() as client:
        first = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
    async with receiving(store=_OlderStore(db)) as running, running.client() as client:
        replay = await client.post(
            PATH, content=body, headers={**headers, "x-reader-delivery": "x"}
        )
    assert first.json() == {"ok": True, "duplicate": False} and replay.json() == DUPLICATE


async def test_a_sink_whose_deliver_takes_no_claim_still_gets_deliveries_claimed() -> None:
    # A sink written before deliver took a claim: the receiver claims once deliver returns.
    store = MemoryStore()

    class OlderSink(EventSink):
        provider = ReaderProvider(jobwatch.Config.from_mapping({"jobwatch": {}}))

        async def deliver(  # type: ignore[override]
            self, events: Any, *, authoritative: bool = False, as_of: float | None = None
        ) -> None:
            for event in events:
                await store.record(event.job_id, functools.partial(decide, event=event), ttl=60)

        def count(self, transport: str, name: str, n: int = 1) -> None:
            pass

    sink = OlderSink()
    sink.store = store
    receiver = Receiver(sink, scheme=ReaderScheme([SECRET]), path=PATH)
    headers, body = delivery("job.page", PAGE, delivery_id="d-page")
    first = await receiver.handle("POST", PATH, headers, body)
    replay = await receiver.handle("POST", PATH, headers, body)
    assert json.loads(first.body) == {"ok": True, "duplicate": False}
    assert json.loads(replay.body) == DUPLICATE
    assert [e.key for e in await store.pending()] == ["job_9:page:https://example.com/p1#1"]


class _Noting(MemoryStore):
    """Notes which of its claim-taking methods are called, and the claims handed along."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.claims: list[tuple[str, float]] = []

    async def record_batch(self, records: Any, *, ttl: float, claim: Any = None) -> Any:
        if claim is not None:
            self.calls.append("record_batch")
            self.claims.append(claim)
        return await super().record_batch(records, ttl=ttl, claim=claim)

    async def claim(self, key: str, *, ttl: float) -> bool:
        if not self.calls or self.calls[-1] != "record_batch":
            self.calls.append("claim")
        return await super().claim(key, ttl=ttl)


class _OlderStore(SQLiteStore):
    async def record_batch(self, records: Any, *, ttl: float) -> Any:  # type: ignore[override]
        return await super().record_batch(records, ttl=ttl)


class _Failing(MemoryStore):
    failing = False
    claims_fail = False

    async def record_batch(self, records: Any, *, ttl: float, claim: Any = None) -> Any:
        if self.failing:
            raise jobwatch.JobwatchError("the store is down")
        return await super().record_batch(records, ttl=ttl, claim=claim)

    async def claimed(self, key: str) -> bool:
        if self.claims_fail:
            raise jobwatch.JobwatchError("the store is down")
        return await super().claimed(key)


class _ClaimFailsOnce(MemoryStore):
    """Its first claim raises, as a store whose claims live apart and blink."""

    failed = False

    async def claim(self, key: str, *, ttl: float) -> bool:
        if not self.failed:
            self.failed = True
            raise jobwatch.JobwatchError("the claims are unavailable")
        return await super().claim(key, ttl=ttl)


class _DefaultBatchClaimFailsOnce(_ClaimFailsOnce):
    record_batch = Store.record_batch


@pytest.mark.parametrize(
    "kind", [_ClaimFailsOnce, _DefaultBatchClaimFailsOnce], ids=["memory", "default"]
)
async def test_a_claim_that_raises_strands_the_events_recorded_with_it(
    kind: type[_ClaimFailsOnce],
) -> None:
    # The receiver answers 503 and the sender retries, but the retry's events are duplicates
    # of the recorded ones: only the stranded events reach the callbacks.
    from jobwatch.testing import make_event

    store = kind()
    event = make_event("completed", "job_1")
    records = [("job_1", functools.partial(decide, event=event))]
    with pytest.raises(jobwatch.JobwatchError):
        await store.record_batch(records, ttl=60, claim=("delivery:d-1", 60))
    assert not await store.claimed("delivery:d-1")
    assert [e.key for e in await store.stranded()] == ["job_1:terminal#1"]
    assert await store.stranded() == []  # each handed over once
    retried = await store.record_batch(records, ttl=60, claim=("delivery:d-1", 60))
    assert [(v.event, v.dropped) for v in retried] == [(None, "duplicate")]
    assert await store.claimed("delivery:d-1") and await store.stranded() == []
    assert [e.key for e in await store.pending()] == ["job_1:terminal#1"]


# -- the defaults a third-party store inherits ----------------------------------------------


class _PlainStore(MemoryStore):
    """A store that keeps Store's own claim, claimed and record_batch: a plugin's, say."""

    claim = Store.claim
    claimed = Store.claimed
    record_batch = Store.record_batch


class TestStoreDefaults(StoreConformance):
    @pytest.fixture
    def make_store(self) -> Any:
        return lambda clock: _PlainStore(clock=clock)


async def test_the_default_claims_are_kept_per_store_in_this_process() -> None:
    one, two = _PlainStore(), _PlainStore()
    assert await one.claim("delivery:x", ttl=60)
    assert not await one.claim("delivery:x", ttl=60)
    assert await two.claim("delivery:x", ttl=60)  # another process, as far as claims go


async def test_the_default_batch_strands_what_it_recorded_before_a_record_raised() -> None:
    from jobwatch._guard import decide
    from jobwatch.testing import make_event

    class Breaks(_PlainStore):
        async def record(self, job_id: str | None, decide: Any, *, ttl: float) -> Any:
            if job_id == "j3":
                raise jobwatch.JobwatchError("the store is down")
            return await super().record(job_id, decide, ttl=ttl)

    store = Breaks()
    events = [make_event("started", job) for job in ("j1", "j2", "j3")]
    with pytest.raises(jobwatch.JobwatchError):
        await store.record_batch(
            [(e.job_id, functools.partial(decide, event=e)) for e in events], ttl=60
        )
    assert [e.key for e in await store.stranded()] == ["j1:started#1", "j2:started#1"]
    assert await store.stranded() == []


async def test_the_defaults_work_for_a_store_with_slots() -> None:
    class Slotted(Store):
        __slots__ = ()
        name = "slotted"

        async def record(self, *args: Any, **kwargs: Any) -> Any:  # fits every abstract method
            raise NotImplementedError

        get_job = put_job = active_jobs = pending = ack = record
        get_checkpoint = put_checkpoint = record

    store = Slotted()
    assert await store.claim("delivery:x", ttl=60)
    assert await store.claimed("delivery:x") and await store.stranded() == []
