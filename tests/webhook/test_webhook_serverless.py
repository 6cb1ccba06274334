"""The serverless handler: AWS Lambda event shapes, dedup across invocations, failing callbacks."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from _cancellation import cancellation_from_elsewhere
from _webhook_helpers import PATH, SECRET, delivery

import jobwatch
import jobwatch.serverless
from jobwatch.serverless import Handler, lambda_handler
from jobwatch.stores.memory import MemoryStore


def config(store: str = "memory", **tables: Any) -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "store": store,
                "webhook": {"secrets": [SECRET]},
                **tables,
            }
        }
    )


def v1_event(
    headers: dict[str, str], body: bytes, *, b64: bool = False, multi: bool = False
) -> dict[str, Any]:
    """An API Gateway REST API (payload format 1.0) proxy event."""
    wire = {k.title(): v for k, v in headers.items()}  # API Gateway v1 keeps the sender's case
    return {
        "resource": PATH,
        "path": PATH,
        "httpMethod": "POST",
        "headers": None if multi else wire,
        "multiValueHeaders": {k: [v] for k, v in wire.items()} if multi else None,
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": PATH,
            "httpMethod": "POST",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        },
        "body": base64.b64encode(body).decode() if b64 else body.decode(),
        "isBase64Encoded": b64,
    }


def v2_event(
    headers: dict[str, str], body: bytes, *, b64: bool = True, path: str = "/prod" + PATH
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event; function URLs send the same shape."""
    return {
        "version": "2.0",
        "routeKey": f"POST {PATH}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "Reader-Webhook/1.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "stage": "prod",
        },
        "body": base64.b64encode(body).decode() if b64 else body.decode(),
        "isBase64Encoded": b64,
    }


@pytest.fixture
def received() -> list[jobwatch.JobEvent]:
    return []


def test_v1_event_is_verified_recorded_and_dispatched_once(
    received: list[jobwatch.JobEvent],
) -> None:
    handler = lambda_handler(config(), on_event=received.append, store=MemoryStore())
    headers, body = delivery()
    first = handler(v1_event(headers, body), None)
    again = handler(v1_event(headers, body, multi=True), None)
    assert first["statusCode"] == 200 and again["statusCode"] == 200
    assert first["headers"]["content-type"] == "application/json"
    assert [e.kind for e in received] == [jobwatch.EventKind.COMPLETED]


def test_v2_event_with_base64_body_and_a_stage_prefix(received: list[jobwatch.JobEvent]) -> None:
    handler = lambda_handler(config(), on_event=received.append, store=MemoryStore())
    headers, body = delivery("job.page", {"jobId": "job_9", "url": "https://example.com/a"})
    reply = handler(v2_event(headers, body), None)
    assert reply["statusCode"] == 200, reply
    assert [(e.kind, e.job_id) for e in received] == [(jobwatch.EventKind.PAGE, "job_9")]


def test_function_url_event(received: list[jobwatch.JobEvent]) -> None:
    handler = lambda_handler(config(), on_event=received.append, store=MemoryStore())
    headers, body = delivery()
    assert handler(v2_event(headers, body, b64=False, path="/"), None)["statusCode"] == 200
    assert len(received) == 1


@pytest.mark.parametrize(
    ("change", "status"),
    [
        (lambda h, b: (h, b + b" "), 401),
        (lambda h, b: ({**h, "x-reader-timestamp": str(int(time.time()) - 3600)}, b), 400),
        (lambda h, b: ({k: v for k, v in h.items() if k != "x-reader-signature"}, b), 401),
        (lambda h, b: ({**h, "content-type": "text/plain"}, b), 415),
    ],
)
def test_bad_deliveries_are_refused(
    change: Any, status: int, received: list[jobwatch.JobEvent]
) -> None:
    handler = lambda_handler(config(), on_event=received.append, store=MemoryStore())
    headers, body = change(*delivery())
    assert handler(v2_event(headers, body), None)["statusCode"] == status
    assert received == []


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"httpMethod": 5},
        {"version": "2.0", "requestContext": "x"},
        {"httpMethod": "POST", "path": PATH, "body": "%%%", "isBase64Encoded": True},
        {"httpMethod": "POST", "path": PATH, "body": 12},
    ],
)
def test_malformed_platform_events_are_400(event: dict[str, Any]) -> None:
    handler = lambda_handler(config(), on_event=lambda e: None, store=MemoryStore())
    reply = handler(event, None)
    assert reply["statusCode"] == 400
    # Said as the receiver says what it refuses: a sender's log shows the same JSON.
    assert reply["headers"]["content-type"] == "application/json"
    answer = json.loads(reply["body"])
    assert answer["ok"] is False and answer["error"]


@pytest.mark.parametrize("shape", ["headers", "multiValueHeaders", "a null in the list", "v2"])
def test_a_header_whose_value_is_null_was_not_sent(shape: str) -> None:
    # Unsigned deliveries are told apart by their delivery id: a null one read as the text
    # "None" made every such delivery after the first a duplicate, its events never recorded.
    cfg = config(webhook={"secrets": [], "allow_unsigned": True})
    seen: list[jobwatch.JobEvent] = []
    handler = lambda_handler(cfg, on_event=seen.append, store=MemoryStore())
    for job in ("job_1", "job_2"):
        fields: dict[str, Any] = {
            "Content-Type": "application/json",
            "X-Reader-Event": "job.completed",
            "X-Reader-Delivery": None,
        }
        body = json.dumps({"jobId": job, "status": "completed"}).encode()
        event = v2_event({}, body) if shape == "v2" else v1_event({}, body)
        if shape == "headers":
            event["headers"] = fields
        elif shape == "v2":
            event["headers"] = {k.lower(): v for k, v in fields.items()}
        else:
            nulls = [None] if shape == "a null in the list" else None
            event["multiValueHeaders"] = {k: nulls if v is None else [v] for k, v in fields.items()}
        reply = handler(event, None)
        assert (reply["statusCode"], json.loads(reply["body"])["duplicate"]) == (200, False)
    assert [e.job_id for e in seen] == ["job_1", "job_2"]


def test_a_signed_deliverys_null_header_is_named_as_missing() -> None:
    handler = lambda_handler(config(), on_event=lambda e: None, store=MemoryStore())
    headers, body = delivery()
    unsigned: dict[str, Any] = {**headers, "x-reader-signature": None}
    reply = handler(v1_event(unsigned, body), None)
    assert reply["statusCode"] == 401
    assert "no X-Reader-Signature header" in reply["body"]


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Reader-Event": ["job.completed"]}, "'X-Reader-Event'"),
        ({"X-Reader-Event": {"a": 1}}, "'X-Reader-Event'"),
        ([["content-type", "application/json"]], "headers are not an object"),
    ],
)
def test_header_values_that_are_not_text_are_400(headers: Any, named: str) -> None:
    handler = lambda_handler(config(), on_event=lambda e: None, store=MemoryStore())
    event = v2_event({}, b"{}")
    event["headers"] = headers
    reply = handler(event, None)
    assert reply["statusCode"] == 400 and named in reply["body"]


def test_a_failing_callback_is_retried_on_the_next_invocation_then_dead_lettered() -> None:
    calls: list[str] = []

    def flaky(event: jobwatch.JobEvent) -> None:
        calls.append(event.key)
        raise RuntimeError("downstream is down")

    store = MemoryStore()
    handler = Handler(config(), on_event=flaky, store=store, attempts=2)
    headers, body = delivery()
    assert handler.handle("POST", PATH, headers, body).status == 200  # recorded durably
    other_headers, other_body = delivery("job.started", {"jobId": "job_2"}, delivery_id="d-2")
    handler.handle("POST", PATH, other_headers, other_body)
    assert calls.count("job_1:terminal#1") == 2
    assert [e.key for e, _, _ in trio.run(store.dead_letters)] == ["job_1:terminal#1"]


def test_async_callbacks_and_the_platform_neutral_handle() -> None:
    seen: list[str] = []

    async def on_event(event: jobwatch.JobEvent) -> None:
        seen.append(event.kind)

    handler = jobwatch.serverless.Handler(
        config(), on_event=on_event, store=MemoryStore(), backend="trio"
    )
    headers, body = delivery()
    status, reply_headers, reply_body = handler.handle("POST", "/anything", headers, body)
    assert status == 200 and reply_body == b'{"ok":true,"duplicate":false}'
    assert seen == ["completed"]


def test_check_path_turns_path_matching_on() -> None:
    handler = Handler(config(), on_event=lambda e: None, store=MemoryStore(), check_path=True)
    headers, body = delivery()
    assert handler.handle("POST", "/elsewhere", headers, body).status == 404
    assert handler.handle("POST", PATH, headers, body).status == 200


def test_sqlite_dedup_survives_a_cold_start(tmp_path: Path) -> None:
    cfg = config("sqlite", sqlite={"path": str(tmp_path / "state.db")})
    seen: list[jobwatch.JobEvent] = []
    headers, body = delivery()
    for _ in range(2):  # a new handler: what a new function instance builds
        reply = lambda_handler(cfg, on_event=seen.append)(v1_event(headers, body), None)
        assert reply["statusCode"] == 200
    assert len(seen) == 1


def test_configuration_errors_surface_when_the_handler_is_built() -> None:
    bad = jobwatch.Config.from_mapping({"jobwatch": {"webhook": {"scheme": "reader"}}})
    with pytest.raises(jobwatch.ConfigError, match="secrets is empty"):
        lambda_handler(bad, on_event=lambda e: None)


class _Unreachable(MemoryStore):
    """A store whose server is down: opening it (or reading its inbox) fails."""

    def __init__(self, *, fail: str) -> None:
        super().__init__()
        self.fail = fail
        self.opened = 0

    async def open(self) -> None:
        self.opened += 1
        if self.fail == "open":
            raise jobwatch.JobwatchError("store unreachable")

    async def pending(self) -> list[jobwatch.JobEvent]:
        if self.fail == "pending":
            raise jobwatch.JobwatchError("store unreachable")
        return await super().pending()


@pytest.mark.parametrize("fail", ["open", "pending"])
def test_a_store_that_is_down_answers_503_and_bad_input_never_reaches_it(fail: str) -> None:
    store = _Unreachable(fail=fail)
    seen: list[jobwatch.JobEvent] = []
    handler = Handler(config(), on_event=seen.append, store=store)
    headers, body = delivery()
    reply = handler.handle("POST", PATH, headers, body)
    assert reply.status == 503 and b"retry later" in reply.body  # the sender retries
    opened = store.opened
    assert handler.handle("GET", PATH, headers, body).status == 405
    assert (
        handler.handle(
            "POST", PATH, {**headers, "x-reader-signature": "sha256=" + "0" * 64}, body
        ).status
        == 401
    )
    assert store.opened == opened and seen == []


@pytest.mark.anyio
async def test_overlapping_invocations_share_the_store_and_dispatch_each_event_once(
    tmp_path: Path,
) -> None:
    # An async runtime (Cloud Run, an ASGI function) runs invocations at once: the first to
    # finish must not close the store under the others, nor offer their events again.
    seen: list[str | None] = []

    async def on_event(event: jobwatch.JobEvent) -> None:
        await anyio.sleep(0.01 * (hash(event.job_id) % 3))
        seen.append(event.job_id)

    handler = Handler(
        config("sqlite", sqlite={"path": str(tmp_path / "state.db")}), on_event=on_event
    )
    statuses: list[int] = []

    async def invoke(n: int) -> None:
        await anyio.sleep(0.002 * (n % 5))
        headers, body = delivery(
            payload={"jobId": f"job_{n}", "status": "completed"}, delivery_id=f"d-{n}"
        )
        statuses.append((await handler.handle_async("POST", PATH, headers, body)).status)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(invoke, n)
    assert statuses == [200] * 20
    assert sorted(seen, key=str) == sorted((f"job_{n}" for n in range(20)), key=str)
    # The last invocation closed the store: a later one opens it again.
    headers, body = delivery(
        payload={"jobId": "job_late", "status": "completed"}, delivery_id="d-late"
    )
    assert (await handler.handle_async("POST", PATH, headers, body)).status == 200
    assert seen[-1] == "job_late"


@pytest.mark.anyio
async def test_an_invocation_that_comes_while_the_store_closes_waits_for_it() -> None:
    class SlowToClose(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        async def open(self) -> None:
            self.calls.append("open")

        async def aclose(self) -> None:
            self.calls.append("closing")
            await anyio.sleep(0.05)
            self.calls.append("closed")

    store = SlowToClose()
    seen: list[str | None] = []
    handler = Handler(config(), on_event=lambda e: seen.append(e.job_id), store=store)

    async def invoke(n: int, delay: float) -> None:
        await anyio.sleep(delay)
        headers, body = delivery(
            payload={"jobId": f"job_{n}", "status": "completed"}, delivery_id=f"d-{n}"
        )
        assert (await handler.handle_async("POST", PATH, headers, body)).status == 200

    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke, 1, 0)
        tg.start_soon(invoke, 2, 0.02)  # while the first one's close is under way
    assert store.calls == ["open", "closing", "closed", "open", "closing", "closed"]
    assert sorted(seen, key=str) == ["job_1", "job_2"]


@pytest.mark.anyio
async def test_an_invocation_cancelled_while_it_opens_the_store_fails_no_other() -> None:
    # Its sender gave up while it waited for the store; those waiting behind it open it.
    class SlowToClose(MemoryStore):
        async def aclose(self) -> None:
            await anyio.sleep(0.05)
            await super().aclose()

    handler = Handler(config("memory"), on_event=lambda event: None)
    handler.store = SlowToClose()
    outcomes: dict[str, object] = {}

    async def invoke(name: str, after: float, patience: float = 10) -> None:
        await anyio.sleep(after)
        headers, body = delivery(payload={"jobId": name, "status": "completed"}, delivery_id=name)
        with anyio.move_on_after(patience) as scope:
            outcomes[name] = (await handler.handle_async("POST", PATH, headers, body)).status
        if scope.cancelled_caught:
            outcomes[name] = "cancelled"

    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke, "first", 0)
        tg.start_soon(invoke, "impatient", 0.01, 0.02)  # comes while "first" closes the store
        tg.start_soon(invoke, "patient", 0.015)  # comes just after it, and waits
    assert outcomes == {"first": 200, "impatient": "cancelled", "patient": 200}


class _FailsAfterRecording(MemoryStore):
    """A store that records, then fails at ``fail``: removing a handled event from the inbox,
    keeping a dead letter, or closing (where a store writes what it deferred)."""

    def __init__(self, *, fail: str) -> None:
        super().__init__()
        self.fail = fail

    async def ack(self, key: str) -> None:
        if self.fail == "ack":
            raise jobwatch.JobwatchError("the store went away")
        await super().ack(key)

    async def dead_letter(self, event: jobwatch.JobEvent, subscriber: str, error: str) -> None:
        if self.fail == "dead_letter":
            raise jobwatch.JobwatchError("the store went away")
        await super().dead_letter(event, subscriber, error)

    async def aclose(self) -> None:
        if self.fail == "aclose":
            raise jobwatch.JobwatchError("the store went away")
        await super().aclose()


@pytest.mark.parametrize("fail", ["ack", "dead_letter", "aclose"])
def test_a_store_failing_after_the_delivery_is_recorded_still_answers_200(fail: str) -> None:
    # The delivery is recorded and its callback ran (or gave up): an error now would only
    # make the sender retry into the dedup. The event stays in the inbox, not offered again by
    # this process, and the next delivery is recorded as usual.
    store = _FailsAfterRecording(fail=fail)
    seen: list[str] = []

    def on_event(event: jobwatch.JobEvent) -> None:
        seen.append(event.key)
        if fail == "dead_letter":
            raise RuntimeError("downstream is down")

    handler = Handler(config(), on_event=on_event, store=store, attempts=1)
    replies = [
        handler.handle("POST", PATH, *delivery()),
        handler.handle(
            "POST",
            PATH,
            *delivery("job.started", {"jobId": "job_2", "status": "processing"}, delivery_id="d-2"),
        ),
    ]
    assert [reply.status for reply in replies] == [200, 200], replies
    assert seen == ["job_1:terminal#1", "job_2:started#1"]


@pytest.mark.anyio
async def test_a_callback_raising_a_cancellation_not_its_own_is_a_failing_callback() -> None:
    # on_event awaited work that someone else cancelled: the invocation itself was not
    # cancelled. It raised out of the handler (the platform answers 5xx for a delivery that
    # was recorded) instead of counting as a failure, retried and then kept as a dead letter.
    calls: list[str] = []

    async def on_event(event: jobwatch.JobEvent) -> None:
        calls.append(event.key)
        if event.job_id == "job_1":
            raise await cancellation_from_elsewhere()

    store = MemoryStore()
    handler = Handler(config(), on_event=on_event, store=store, attempts=2)
    first = await handler.handle_async("POST", PATH, *delivery())
    other = delivery("job.started", {"jobId": "job_2"}, delivery_id="d-2")
    second = await handler.handle_async("POST", PATH, *other)
    assert (first.status, second.status) == (200, 200)
    assert calls == ["job_1:terminal#1", "job_1:terminal#1", "job_2:started#1"]
    assert [event.key for event, _, _ in await store.dead_letters()] == ["job_1:terminal#1"]
    assert await store.pending() == []


def test_invocations_in_several_threads_at_once_are_each_answered(tmp_path: Path) -> None:
    # A threaded runtime (Google's functions framework, Azure's Python worker) calls the sync
    # handle() from several threads at once. Each ran its own event loop over one shared
    # opening of the store: they answered 503 ("bound to a different event loop") and hung.
    import threading

    seen: list[str | None] = []

    def on_event(event: jobwatch.JobEvent) -> None:
        time.sleep(0.01)  # keeps the invocations overlapping; the outcome does not depend on it
        seen.append(event.job_id)

    handler = Handler(
        config("sqlite", sqlite={"path": str(tmp_path / "state.db")}), on_event=on_event
    )
    statuses: dict[int, object] = {}
    together = threading.Barrier(8)

    def invoke(n: int) -> None:
        headers, body = delivery(
            payload={"jobId": f"job_{n}", "status": "completed"}, delivery_id=f"d-{n}"
        )
        together.wait()
        try:
            statuses[n] = handler.handle("POST", PATH, headers, body).status
        except BaseException as exc:
            statuses[n] = repr(exc)

    threads = [threading.Thread(target=invoke, args=(n,), daemon=True) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "an invocation hung"
    assert statuses == dict.fromkeys(range(8), 200)
    assert sorted(seen, key=str) == [f"job_{n}" for n in range(8)]


@pytest.mark.anyio
async def test_instances_sharing_a_store_hand_an_event_to_on_event_once() -> None:
    # One instance records a delivery and is calling on_event; another, sharing the store,
    # starts an invocation and finds the event in the inbox (not acknowledged yet): it called
    # on_event for it too.
    shared = MemoryStore()
    calls: list[tuple[str, str]] = []
    release = anyio.Event()

    def on_event_of(instance: str) -> Any:
        async def on_event(event: jobwatch.JobEvent) -> None:
            calls.append((instance, event.key))
            if event.job_id == "job_1":
                await release.wait()

        return on_event

    first = Handler(config(), on_event=on_event_of("first"), store=shared)
    second = Handler(config(), on_event=on_event_of("second"), store=shared)
    replies = []

    async def invoke(handler: Handler, headers: dict[str, str], body: bytes) -> None:
        replies.append((await handler.handle_async("POST", PATH, headers, body)).status)

    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke, first, *delivery())
        await anyio.wait_all_tasks_blocked()  # the first is in on_event for job_1
        other = delivery("job.started", {"jobId": "job_2"}, delivery_id="d-2")
        with anyio.fail_after(5):
            await invoke(second, *other)
        release.set()
    assert replies == [200, 200]
    assert calls == [("first", "job_1:terminal#1"), ("second", "job_2:started#1")]
    assert await shared.pending() == []


def test_a_jobs_later_events_wait_behind_one_whose_callback_failed() -> None:
    # As a Watcher's callbacks do: on_event sees each job's events in order. The job's final
    # event was handed over while its page waited to be offered again, and the page came
    # after the job had ended.
    handed: list[str] = []
    failures = 0

    def on_event(event: jobwatch.JobEvent) -> None:
        nonlocal failures
        if event.kind == "page" and failures < 2:
            failures += 1
            raise RuntimeError("downstream is down")
        handed.append(event.key)

    store = MemoryStore()
    handler = Handler(config(), on_event=on_event, store=store, attempts=3)
    page = {"jobId": "job_1", "url": "https://example.com/a"}
    deliveries = [
        delivery("job.page", page, delivery_id="d-1"),
        delivery("job.completed", {"jobId": "job_1", "status": "completed"}, delivery_id="d-2"),
        delivery("job.started", {"jobId": "job_2"}, delivery_id="d-3"),
    ]
    for headers, body in deliveries:
        assert handler.handle("POST", PATH, headers, body).status == 200
    job_1 = [key for key in handed if key.startswith("job_1")]
    assert len(job_1) == 2 and "page" in job_1[0] and job_1[1] == "job_1:terminal#1", handed
    assert trio.run(store.pending) == [] and trio.run(store.dead_letters) == []


@pytest.mark.anyio
async def test_overlapping_invocations_hand_over_a_jobs_events_one_at_a_time() -> None:
    entered: list[str] = []
    finished: list[str] = []
    release = anyio.Event()

    async def on_event(event: jobwatch.JobEvent) -> None:
        entered.append(event.kind)
        if event.kind == "page":
            await release.wait()
        finished.append(event.kind)

    handler = Handler(config(), on_event=on_event, store=MemoryStore())
    page = delivery("job.page", {"jobId": "job_1", "url": "https://example.com/a"})
    done = delivery("job.completed", {"jobId": "job_1", "status": "completed"}, delivery_id="d-2")
    statuses: list[int] = []

    async def invoke(headers: dict[str, str], body: bytes) -> None:
        statuses.append((await handler.handle_async("POST", PATH, headers, body)).status)

    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke, *page)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(invoke, *done)
        await anyio.wait_all_tasks_blocked()
        assert entered == ["page"]  # the job's final event waits for its page's callback
        release.set()
    assert statuses == [200, 200]
    assert entered == finished == ["page", "completed"]


class _ClaimFailsFor(MemoryStore):
    """A store whose claim of one event for on_event fails ``times`` times (a dropped
    connection), as any call of a remote store may."""

    def __init__(self, key: str, times: int) -> None:
        super().__init__()
        self.key, self.times = key, times

    async def claim(self, key: str, *, ttl: float) -> bool:
        if key == f"on_event:{self.key}" and self.times > 0:
            self.times -= 1
            raise jobwatch.JobwatchError("the store went away")
        return await super().claim(key, ttl=ttl)


def _page_then_completed() -> list[tuple[dict[str, str], bytes]]:
    page = {"jobId": "job_1", "url": "https://example.com/a"}
    done = {"jobId": "job_1", "status": "completed"}
    return [
        delivery("job.page", page, delivery_id="d-1"),
        delivery("job.completed", done, delivery_id="d-2"),
    ]


def test_a_jobs_later_events_wait_behind_one_that_could_not_be_claimed() -> None:
    # The claim of the page failed: it stayed in the inbox, and the job's final event, claimed
    # and handed over by the next invocation, came before the page.
    handed: list[str] = []
    store = _ClaimFailsFor("job_1:page:https://example.com/a#1", times=2)
    handler = Handler(config(), on_event=lambda e: handed.append(e.kind), store=store)
    other = delivery("job.started", {"jobId": "job_2"}, delivery_id="d-3")
    for headers, body in [*_page_then_completed(), other]:
        assert handler.handle("POST", PATH, headers, body).status == 200
    assert [kind for kind in handed if kind != "started"] == ["page", "completed"], handed
    assert trio.run(store.pending) == []


def test_an_instance_leaves_a_jobs_events_behind_one_another_instance_holds() -> None:
    # The first instance's on_event failed on the page, which it holds to offer again; the
    # second, sharing the store, handed the job's final event over before the page.
    shared = MemoryStore()
    handed: list[tuple[str, str]] = []
    failed: list[str] = []

    def on_event_of(instance: str) -> Any:
        def on_event(event: jobwatch.JobEvent) -> None:
            if event.kind == "page" and not failed:
                failed.append(event.key)
                raise RuntimeError("downstream is down")
            handed.append((instance, event.kind))

        return on_event

    first = Handler(config(), on_event=on_event_of("first"), store=shared)
    second = Handler(config(), on_event=on_event_of("second"), store=shared)
    page, done = _page_then_completed()
    assert first.handle("POST", PATH, *page).status == 200  # its on_event failed
    assert second.handle("POST", PATH, *done).status == 200  # the page is the first's
    other = delivery("job.started", {"jobId": "job_2"}, delivery_id="d-3")
    assert first.handle("POST", PATH, *other).status == 200
    assert [h for h in handed if h[1] != "started"] == [("first", "page"), ("first", "completed")]
    assert trio.run(shared.pending) == []


def test_a_warm_handler_forgets_the_failures_of_events_it_is_done_with() -> None:
    # A warm function serves invocations for hours: how often on_event had failed on each
    # event it then gave up on (a dead letter), or that left the inbox by other hands (acked
    # by another instance, dropped with `jobwatch inbox drop`), was kept for good.
    def on_event(event: jobwatch.JobEvent) -> None:
        raise RuntimeError("downstream is down")

    store = MemoryStore()
    handler = Handler(config(), on_event=on_event, store=store, attempts=2)
    for n in range(300):
        job = ("down", "gone", "down")[n % 3] + f"_{n}"
        payload = {"jobId": job, "status": "completed"}
        assert handler.handle("POST", PATH, *delivery(payload=payload, delivery_id=f"d-{n}"))[0]
        if job.startswith("gone"):  # failed once here, then handed over elsewhere
            trio.run(store.ack, f"{job}:terminal#1")
    assert len(trio.run(store.dead_letters)) >= 190
    assert len(handler._failures) <= 2, len(handler._failures)


def _page_of_job_1(n: int) -> tuple[dict[str, str], bytes]:
    page = {"jobId": "job_1", "url": f"https://example.com/{n}"}
    return delivery("job.page", page, delivery_id=f"d-{n}")


def _page_number(event: jobwatch.JobEvent) -> int:
    return int(str(event.data["url"]).rsplit("/", 1)[1])


class _Pages:
    """An on_event that notes each page of job_1 it is handed, and holds the ones in
    ``held`` until the test lets them go."""

    def __init__(self, *held: int, fail: int | None = None) -> None:
        self.entered: list[int] = []
        self.held = {n: anyio.Event() for n in held}
        self._holds = set(held)  # each page is held the first time only
        self.fail = fail

    async def __call__(self, event: jobwatch.JobEvent) -> None:
        if event.job_id != "job_1":
            return
        n = _page_number(event)
        self.entered.append(n)
        if n in self._holds:
            self._holds.discard(n)
            await self.held[n].wait()
        if n == self.fail:
            self.fail = None
            raise RuntimeError("downstream is down")


class _Invocations:
    """A handler whose on_event holds page 1 of job_1 until the test lets it go, and the
    statuses its invocations answered, by page."""

    def __init__(self) -> None:
        self.on_event = _Pages(1)
        self.store = MemoryStore()
        self.handler = Handler(config(), on_event=self.on_event, store=self.store)
        self.statuses: dict[int, int] = {}

    async def invoke(self, n: int, scope: anyio.CancelScope | None = None) -> None:
        """Deliver page ``n``, within ``scope`` (a platform's deadline) if given."""
        with scope or anyio.CancelScope():
            reply = await self.handler.handle_async("POST", PATH, *_page_of_job_1(n))
            self.statuses[n] = reply.status


@pytest.fixture(params=["as queued", "reversed"])
def wake_order(request: pytest.FixtureRequest, anyio_backend: str, monkeypatch: Any) -> str:
    """The order in which the event loop runs tasks woken at once. trio picks it at random
    for each batch (so that code cannot depend on it): here it is pinned to each of the two.
    asyncio runs them as queued."""
    order = str(request.param)
    if anyio_backend == "trio":
        import random

        import trio._core._run as run

        class Pinned(random.Random):
            def random(self) -> float:  # trio reverses a batch when this is below 0.5
                return 0.0 if order == "reversed" else 0.99

        monkeypatch.setattr(run, "_r", Pinned())
    elif order == "reversed":
        pytest.skip("asyncio runs the tasks woken at once in the order they were queued")
    return order


@pytest.mark.anyio
@pytest.mark.parametrize("overlapping", [3, 4])
async def test_invocations_waiting_for_one_jobs_turn_hand_its_events_over_in_order(
    overlapping: int, wake_order: str
) -> None:
    # The first invocation is in on_event for page 1; the others, recorded one after the
    # other as the sender sent them, wait for the job's turn. All of them woke when it was
    # over, and whichever the event loop ran first handed its page over next: page 3 before
    # page 2 when the loop ran them in reverse.
    on_event = _Pages(1)
    handler = Handler(config(), on_event=on_event, store=MemoryStore())
    statuses: list[int] = []

    async def invoke(n: int) -> None:
        reply = await handler.handle_async("POST", PATH, *_page_of_job_1(n))
        statuses.append(reply.status)

    async with anyio.create_task_group() as tg:
        for n in range(1, overlapping + 1):
            tg.start_soon(invoke, n)
            await anyio.wait_all_tasks_blocked()
        assert on_event.entered == [1]
        on_event.held[1].set()
    assert statuses == [200] * overlapping
    assert on_event.entered == list(range(1, overlapping + 1))
    assert await handler.store.pending() == []


class _AnswersLate(MemoryStore):
    """A store whose answer to a record arrives late (held on the network until ``late`` is
    set): the record is committed, and others are recorded after it, before its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.late: Any = None

    async def record_batch(self, records: Any, *, ttl: float, claim: Any = None) -> Any:
        verdicts = await super().record_batch(records, ttl=ttl, claim=claim)
        late, self.late = self.late, None
        if late is not None:
            await late.wait()
        return verdicts


@pytest.mark.anyio
async def test_a_jobs_event_whose_record_is_answered_late_is_still_handed_over_first() -> None:
    # Page 2 was recorded before page 3, but the store's answer for it came after page 3's:
    # the invocation of page 3 reached the job's turn first and handed page 3 over first.
    store = _AnswersLate()
    on_event = _Pages(1)
    handler = Handler(config(), on_event=on_event, store=store)
    statuses: list[int] = []

    async def invoke(n: int) -> None:
        statuses.append((await handler.handle_async("POST", PATH, *_page_of_job_1(n))).status)

    answer = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke, 1)
        await anyio.wait_all_tasks_blocked()  # in on_event for page 1
        store.late = answer
        tg.start_soon(invoke, 2)
        await anyio.wait_all_tasks_blocked()  # page 2 recorded, its answer on the way
        tg.start_soon(invoke, 3)
        await anyio.wait_all_tasks_blocked()  # page 3 recorded, waiting for the job's turn
        on_event.held[1].set()
        await anyio.wait_all_tasks_blocked()
        answer.set()
    assert statuses == [200] * 3
    assert on_event.entered == [1, 2, 3]
    assert await store.pending() == []


@pytest.mark.anyio
async def test_an_invocation_cancelled_while_it_waits_for_its_jobs_turn_keeps_the_order() -> None:
    # The platform's deadline cancelled the invocation of page 2 while page 1 was in
    # on_event: page 2 stayed in the inbox, and page 3 was handed over before it.
    pages = _Invocations()
    on_event, store, statuses, invoke = pages.on_event, pages.store, pages.statuses, pages.invoke
    deadline = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke, 1)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(invoke, 2, deadline)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(invoke, 3)
        await anyio.wait_all_tasks_blocked()
        deadline.cancel()
        await anyio.wait_all_tasks_blocked()
        on_event.held[1].set()
    assert statuses == {1: 200, 3: 200}  # the cancelled one never answered
    # The sender retries page 2's delivery: a duplicate, never handed over twice.
    await invoke(2)
    assert statuses[2] == 200
    assert on_event.entered == [1, 2, 3]
    assert await store.pending() == []


@pytest.mark.anyio
async def test_an_invocation_cancelled_in_on_event_keeps_the_jobs_order() -> None:
    # The invocation of page 1 was cancelled in on_event; page 2's invocation, waiting for
    # the job's turn, handed page 2 over, and page 1 was offered again after it.
    pages = _Invocations()
    on_event, store, statuses, invoke = pages.on_event, pages.store, pages.statuses, pages.invoke
    deadline = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke, 1, deadline)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(invoke, 2)
        await anyio.wait_all_tasks_blocked()
        deadline.cancel()
    await invoke(3)
    assert statuses == {2: 200, 3: 200}
    assert on_event.entered[0] == 1 and on_event.entered[1:] == [1, 2, 3], on_event.entered
    assert await store.pending() == []


@pytest.mark.anyio
async def test_a_jobs_events_waiting_behind_a_failing_on_event_are_offered_after_it() -> None:
    # on_event failed on page 1 while the invocations of pages 2 and 3 waited for the job's
    # turn: they are answered, their pages stay in the inbox behind page 1, and the next
    # invocation offers the three in order.
    on_event = _Pages(1, fail=1)
    store = MemoryStore()
    handler = Handler(config(), on_event=on_event, store=store)
    statuses: list[int] = []

    async def invoke(headers: dict[str, str], body: bytes) -> None:
        statuses.append((await handler.handle_async("POST", PATH, headers, body)).status)

    async with anyio.create_task_group() as tg:
        for n in (1, 2, 3):
            tg.start_soon(invoke, *_page_of_job_1(n))
            await anyio.wait_all_tasks_blocked()
        on_event.held[1].set()
    assert statuses == [200] * 3
    assert on_event.entered == [1]
    assert [_page_number(event) for event in await store.pending()] == [1, 2, 3]
    await invoke(*delivery("job.started", {"jobId": "job_2"}, delivery_id="d-other"))
    assert on_event.entered == [1, 1, 2, 3]
    assert await store.pending() == []


class _InboxUnreadableOnce(MemoryStore):
    """A store whose inbox cannot be read once, after the delivery is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def pending(self) -> list[jobwatch.JobEvent]:
        self.reads += 1
        if self.reads == 2:
            raise jobwatch.JobwatchError("the store went away")
        return await super().pending()


@pytest.mark.anyio
async def test_an_inbox_unreadable_after_recording_leaves_the_event_for_the_next_invocation() -> (
    None
):
    # The delivery is recorded (200), but the inbox, which says what of the job comes
    # before it, could not be read: the page stays there and is offered first next time.
    on_event = _Pages()
    store = _InboxUnreadableOnce()
    handler = Handler(config(), on_event=on_event, store=store)
    assert (await handler.handle_async("POST", PATH, *_page_of_job_1(1))).status == 200
    assert on_event.entered == []
    assert (await handler.handle_async("POST", PATH, *_page_of_job_1(2))).status == 200
    assert on_event.entered == [1, 2]
    assert await store.pending() == []
