"""The receiver behind a real Watcher: exact statuses, dedup, 503 on store failure, fuzzing."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _webhook_helpers import PATH, SECRET, config, delivery, receiving, until
from hypothesis import given, settings
from hypothesis import strategies as st

import jobwatch
from jobwatch.abc import JobState, Verdict
from jobwatch.providers.reader import ReaderProvider
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.transports._asgi import WebhookApp
from jobwatch.transports._receiver import MAX_DEPTH, is_json, nests_deeper
from jobwatch.transports.webhook import WebhookTransport, parse_listen

pytestmark = pytest.mark.anyio


class FlakyStore(MemoryStore):
    """A memory store whose ``record`` fails while ``broken`` is set."""

    broken = False

    async def record(
        self, job_id: str | None, decide: Callable[[JobState | None], Verdict], *, ttl: float
    ) -> Verdict:
        if self.broken:
            raise jobwatch.JobwatchError("the store is down")
        return await super().record(job_id, decide, ttl=ttl)


async def test_a_signed_delivery_is_recorded_then_dispatched_once() -> None:
    async with receiving() as running, running.client() as client:
        headers, body = delivery()
        first = await client.post(PATH, content=body, headers=headers)
        again = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
        await anyio.sleep(0.05)
    assert (first.status_code, first.json()) == (200, {"ok": True, "duplicate": False})
    assert (again.status_code, again.json()) == (200, {"ok": True, "duplicate": True})
    assert [e.kind for e in running.events] == [jobwatch.EventKind.COMPLETED]
    assert running.events[0].source == "webhook"
    stats = running.watcher.statistics().transports["webhook"]
    assert stats["deliveries"] == 1 and stats["duplicates"] == 1


async def test_same_fact_under_another_delivery_id_is_deduplicated() -> None:
    async with receiving() as running, running.client() as client:
        for ident, credits in (("d-1", 3), ("d-2", 4)):
            # Another body too (not merely the same signed content sent again): the fact
            # itself, job_1 completed, is what repeats.
            payload = {"jobId": "job_1", "status": "completed", "creditsUsed": credits}
            headers, body = delivery(payload=payload, delivery_id=ident)
            assert (await client.post(PATH, content=body, headers=headers)).status_code == 200
        await until(lambda: len(running.events) == 1)
        await anyio.sleep(0.05)
    assert len(running.events) == 1
    assert running.watcher.statistics().duplicates == 1


def _signed(**kw: Any) -> tuple[dict[str, str], bytes]:
    return delivery(**kw)


CASES: list[tuple[str, str, str, Callable[[], tuple[dict[str, str], bytes]], int]] = [
    ("wrong path", "POST", "/hooks/other", _signed, 404),
    ("GET", "GET", PATH, _signed, 405),
    ("PUT", "PUT", PATH, _signed, 405),
    ("too large", "POST", PATH, lambda: _signed(body=b"{" + b" " * 2000 + b"}"), 413),
    (
        "text/plain",
        "POST",
        PATH,
        lambda: ({**_signed()[0], "content-type": "text/plain"}, _signed()[1]),
        415,
    ),
    (
        "form",
        "POST",
        PATH,
        lambda: (
            {**_signed()[0], "content-type": "application/x-www-form-urlencoded"},
            _signed()[1],
        ),
        415,
    ),
    (
        "no signature",
        "POST",
        PATH,
        lambda: (
            {"content-type": "application/json", "x-reader-event": "job.completed"},
            _signed()[1],
        ),
        401,
    ),
    ("wrong secret", "POST", PATH, lambda: _signed(secret="not-the-secret-0123456"), 401),
    ("tampered", "POST", PATH, lambda: (_signed()[0], _signed()[1] + b" "), 401),
    ("stale", "POST", PATH, lambda: _signed(now=time.time() - 3600), 400),
    ("future", "POST", PATH, lambda: _signed(now=time.time() + 3600), 400),
    ("bad json", "POST", PATH, lambda: _signed(body=b"{not json"), 400),
    ("json array", "POST", PATH, lambda: _signed(body=b"[1, 2]"), 400),
    ("no job id", "POST", PATH, lambda: _signed(payload={"status": "completed"}), 400),
    (
        "empty job id",
        "POST",
        PATH,
        lambda: _signed(payload={"jobId": "", "status": "completed"}),
        400,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "make", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_exact_statuses(
    method: str, path: str, make: Callable[[], tuple[dict[str, str], bytes]], status: int
) -> None:
    async with receiving(config(max_body=1024)) as running, running.client() as client:
        headers, body = make()
        via_app = await client.request(method, path, content=body, headers=headers)
        receiver = running.transport.receiver
        assert receiver is not None
        via_handler = await receiver.handle(method, path, headers, body)
        await anyio.sleep(0.05)
    assert via_app.status_code == status, via_app.text
    assert via_handler.status == status
    assert via_app.json()["ok"] is False
    assert SECRET not in via_app.text
    assert running.events == []
    if status == 405:
        assert via_app.headers["allow"] == "POST"


async def test_a_lower_case_method_is_not_post() -> None:
    # Methods are case-sensitive (RFC 9110); an ASGI server hands them over upper-cased.
    async with receiving() as running:
        receiver = running.transport.receiver
        assert receiver is not None
        headers, body = delivery()
        reply = await receiver.handle("post", PATH, headers, body)
        await anyio.sleep(0.05)
    assert reply.status == 405 and running.events == []


PAGE = {"jobId": "job_9", "url": "https://example.com/p1", "markdown": "# p1"}
CREDIT = {
    "balance": 5,
    "limit": 1000,
    "used": 995,
    "tier": "free",
    "resetAt": "2026-05-01T00:00:00Z",
}


async def test_signed_content_again_under_other_unsigned_headers_is_refused_or_a_duplicate() -> (
    None
):
    # Reader signs the timestamp and the body, not X-Reader-Event nor X-Reader-Delivery: a
    # captured delivery sent again relabelled must not become another event.
    async with receiving() as running, running.client() as client:
        headers, body = delivery("job.page", PAGE, delivery_id="d-page")
        first = await client.post(PATH, content=body, headers=headers)
        forged = {**headers, "x-reader-event": "job.failed", "x-reader-delivery": "d-forged"}
        relabelled = await client.post(PATH, content=body, headers=forged)
        again = await client.post(
            PATH, content=body, headers={**headers, "x-reader-delivery": "d-fresh"}
        )
        headers, body = delivery("credit.low", CREDIT, delivery_id="d-credit-0")
        replies = []
        for n in range(3):
            replay = {**headers, "x-reader-delivery": f"d-credit-{n}"}
            replies.append((await client.post(PATH, content=body, headers=replay)).json())
        await until(lambda: len(running.events) >= 2)
        await anyio.sleep(0.05)
    assert first.json() == {"ok": True, "duplicate": False}
    assert relabelled.status_code == 400
    assert "X-Reader-Event header says 'job.failed'" in relabelled.json()["error"]
    assert again.json() == {"ok": True, "duplicate": True}
    assert [r.get("duplicate") for r in replies] == [False, True, True]
    kinds = [e.kind for e in running.events]
    assert jobwatch.EventKind.FAILED not in kinds
    assert kinds.count(jobwatch.EventKind.PAGE) == 1
    assert kinds.count(jobwatch.EventKind.CREDIT_LOW) == 1


async def test_relabelled_replays_to_a_receiver_that_never_saw_the_original(
    tmp_path: Path,
) -> None:
    # Each replay goes to a receiver with no memory of the original (restarted, or another
    # of a fleet) but the same store: only the signed body may decide what it is.
    db = str(tmp_path / "state.db")
    page_headers, page = delivery("job.page", PAGE, delivery_id="d-page")
    credit_headers, credit = delivery("credit.low", CREDIT, delivery_id="d-credit")
    async with receiving(store=SQLiteStore(db)) as running, running.client() as client:
        for headers, body in ((page_headers, page), (credit_headers, credit)):
            assert (await client.post(PATH, content=body, headers=headers)).status_code == 200
        await until(lambda: len(running.events) == 2)
    later: list[jobwatch.JobEvent] = []
    statuses: list[int] = []
    for n in range(3):
        async with receiving(store=SQLiteStore(db)) as running, running.client() as client:
            for event, headers, body in (
                ("job.failed", page_headers, page),
                ("credit.low", page_headers, page),
                ("credit.low", credit_headers, credit),
            ):
                fresh = {**headers, "x-reader-event": event, "x-reader-delivery": f"d-{n}"}
                reply = await client.post(PATH, content=body, headers=fresh)
                statuses.append(reply.status_code)
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(0.05)
            later.extend(running.events)
    assert statuses == [400, 400, 200] * 3
    assert later == []


async def test_a_body_nested_deeper_than_the_bound_is_400_every_time(tmp_path: Path) -> None:
    # Deep enough to decode, too deep to store: it was answered 503 on every retry. Now it is
    # refused for good, whatever the depth, and a body at the bound is recorded.
    def nested(job: str, depth: int) -> bytes:
        return (
            b'{"jobId":"%s","status":"completed","data":' % job.encode()
            + b"[" * depth
            + b"]" * depth
            + b"}"
        )

    cfg = config(listen="127.0.0.1:0")
    store = SQLiteStore(str(tmp_path / "state.db"))
    async with (
        receiving(cfg, store=store) as running,
        httpx.AsyncClient(base_url=running.watcher.bound_url("webhook")) as client,
    ):
        replies = {}
        for depth in (*range(900, 1000, 10), 975, 975, 5000):
            headers, body = delivery(body=nested(f"job_{depth}", depth), delivery_id="d-deep")
            replies[depth] = await client.post(PATH, content=body, headers=headers)
        headers, body = delivery(body=nested("job_ok", MAX_DEPTH - 1), delivery_id="d-ok")
        at_bound = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
    assert {depth: r.status_code for depth, r in replies.items()} == dict.fromkeys(replies, 400)
    assert f"deeper than {MAX_DEPTH} levels" in replies[975].json()["error"]
    assert at_bound.status_code == 200
    assert [e.job_id for e in running.events] == ["job_ok"]


@pytest.mark.parametrize(
    ("body", "deeper"),
    [
        (b"[]", False),
        (b"[" * 101 + b"]" * 101, True),
        (b"[" * 100 + b"]" * 100, False),
        (b'{"a":"' + b"[" * 300 + b'"}', False),  # brackets in a string are text
        (b'{"a":"\\"' + b"[" * 300 + b'"}', False),  # so are they after escaped quotes
        (b'["' + b"[" * 300, False),  # an unterminated string: not JSON, left to the decoder
        (b"[" + b"[]," * 5000 + b"[]]", False),
    ],
)
def test_nesting_is_measured_outside_strings(body: bytes, deeper: bool) -> None:
    assert nests_deeper(body) is deeper


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_JSON = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, limit=st.integers(min_value=0, max_value=6))
def test_nesting_agrees_with_the_decoded_value(value: Any, limit: int) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    assert nests_deeper(body, limit) is (_depth(value) > limit)


@pytest.mark.parametrize("event", ["session.created", "job.exploded"])
async def test_a_verified_event_without_a_job_event_is_acknowledged_not_dispatched(
    event: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Refused, it would be retried by the sender and count as a failed delivery there.
    caplog.set_level(logging.INFO, logger="jobwatch.webhook")
    async with receiving(config()) as running, running.client() as client:
        headers, body = _signed(event=event, payload={"sessionId": "s_1"})
        answer = await client.post(PATH, content=body, headers=headers)
        forged = await client.post(PATH, content=body + b" ", headers=headers)
        await anyio.sleep(0.05)
        counts = running.watcher.statistics().transports["webhook"]
    assert answer.status_code == 200 and answer.json() == {"ok": True, "ignored": True}
    assert forged.status_code == 401  # verified first, like every delivery
    assert running.events == []
    assert counts["ignored"] == 1 and counts.get("deliveries", 0) == 0
    ignored = [r for r in caplog.records if f"webhook event {event!r} ignored" in r.message]
    assert [r.levelno for r in ignored] == [logging.INFO]  # routine (GitHub's ping), no alarm


async def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    received: list[dict[str, Any]] = []
    async with receiving(config(max_body=1024)) as running:
        app: Any = running.watcher.asgi_app()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            received.append({})
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": PATH,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"999999")],
        }
        await app(scope, receive, send)
    assert sent[0]["status"] == 413 and received == []


async def test_a_body_streamed_past_the_limit_is_413() -> None:
    async with receiving(config(max_body=100)) as running:
        app: Any = running.watcher.asgi_app()
        sent: list[dict[str, Any]] = []
        chunks = iter([b"{" + b" " * 60, b" " * 60 + b"}"])

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": next(chunks), "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": PATH,
            "headers": [(b"content-type", b"application/json")],
        }
        await app(scope, receive, send)
    assert sent[0]["status"] == 413


async def test_a_store_failure_answers_503_and_the_retry_is_dispatched() -> None:
    store = FlakyStore()
    async with receiving(store=store) as running, running.client() as client:
        headers, body = delivery()
        store.broken = True
        failed = await client.post(PATH, content=body, headers=headers)
        await anyio.sleep(0.05)
        assert running.events == []
        store.broken = False
        retried = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
    assert failed.status_code == 503 and retried.status_code == 200
    assert retried.json() == {"ok": True, "duplicate": False}


async def test_the_app_answers_503_until_the_watcher_runs() -> None:
    transport = WebhookTransport.from_config(config())
    app: Any = transport.asgi_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hook"
    ) as client:
        headers, body = delivery()
        reply = await client.post(PATH, content=body, headers=headers)
    assert reply.status_code == 503


async def test_mounted_under_a_prefix() -> None:
    async with receiving() as running:
        app: Any = running.watcher.asgi_app()
        sent: list[dict[str, Any]] = []
        headers, body = delivery()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api" + PATH,
            "root_path": "/api",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
        await app(scope, receive, send)
        await until(lambda: len(running.events) == 1)
    assert sent[0]["status"] == 200


async def test_lifespan_and_websocket_scopes() -> None:
    app = WebhookApp()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    await app({"type": "websocket", "path": PATH}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


# -- unsigned receivers ------------------------------------------------------------------


async def test_unsigned_receiver_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="jobwatch.webhook")
    cfg = config(secrets=[], allow_unsigned=True)
    async with receiving(cfg) as running, running.client() as client:
        headers, body = delivery()
        headers.pop("x-reader-signature")
        reply = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
    assert reply.status_code == 200
    assert any("UNSIGNED" in r.message for r in caplog.records)


async def test_allow_unsigned_with_secrets_still_rejects_a_wrong_signature() -> None:
    cfg = config(allow_unsigned=True)
    async with receiving(cfg) as running, running.client() as client:
        headers, body = delivery(secret="wrong-secret-0123456789")
        wrong = await client.post(PATH, content=body, headers=headers)
        del headers["x-reader-signature"], headers["x-reader-timestamp"]
        unsigned = await client.post(PATH, content=body, headers=headers)
    assert (wrong.status_code, unsigned.status_code) == (401, 200)


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"secrets": []}, "secrets is empty"),
        (
            {"scheme": "svix"},
            "installed schemes are github, hmac-sha256, reader, standard-webhooks",
        ),
        (
            {"scheme": {"name": "hmac-sha256", "header": "X-S", "color": "red"}},
            r"unknown key\(s\) color.*\[jobwatch.webhook\] scheme",
        ),
        ({"scheme": ["github"]}, "must be a scheme name"),
        ({"listen": "localhost"}, "HOST:PORT"),
        ({"listen": "127.0.0.1:99999"}, "HOST:PORT"),
        ({"path": "hooks"}, "path must begin"),
        ({"tolerance": 0}, "tolerance"),
        ({"max_body": 0}, "max_body"),
        ({"secrets": "one"}, r"\[jobwatch.webhook\]"),
        ({"secret": "x"}, "secret"),
        ({"certfile": "cert.pem"}, "certfile and keyfile go together"),
        ({"certfile": "/nonexistent.pem", "keyfile": "/nonexistent.pem"}, "cannot use the TLS"),
    ],
)
def test_configuration_errors(table: dict[str, Any], match: str) -> None:
    with pytest.raises(jobwatch.ConfigError, match=match):
        WebhookTransport.from_config(config(**table))


def test_scheme_and_path_default_to_the_providers() -> None:
    transport = WebhookTransport.from_config(config())
    reader = ReaderProvider()
    scheme = transport.scheme_for(reader)
    assert scheme is not None and scheme.name == "reader"
    assert transport.path_for(reader) == "/hooks/reader"
    assert SECRET not in repr(transport.describe())


def test_the_missing_secret_message_names_no_apis_variable() -> None:
    with pytest.raises(jobwatch.ConfigError) as info:
        WebhookTransport.from_config(config(secrets=[]))
    assert "READER" not in str(info.value) and "allow_unsigned" in str(info.value)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8787") == ("::1", 8787)
    assert parse_listen("localhost:80") == ("localhost", 80)


def test_json_content_types() -> None:
    assert is_json("application/json; charset=utf-8")
    assert is_json("Application/JSON")
    assert is_json("application/cloudevents+json")
    assert not is_json("text/json-ish") and not is_json(None) and not is_json("")


# -- arbitrary input ---------------------------------------------------------------------

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
_NAMES = st.one_of(
    _TOKEN,
    st.sampled_from(
        [
            "content-type",
            "content-length",
            "x-reader-signature",
            "x-reader-timestamp",
            "x-reader-event",
            "x-reader-delivery",
        ]
    ),
)
_HEADERS = st.dictionaries(_NAMES, _VALUE, max_size=8).map(
    lambda h: {k: v for k, v in h.items() if k != "content-length"}
)
_REQUEST = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
        "path": st.one_of(
            st.just(PATH),
            st.just("/"),
            # httpx refuses a relative URL that begins with "//"
            st.text(alphabet="abcxyz/-_.~%09", max_size=30).map(lambda p: "/" + p.lstrip("/")),
        ),
        "headers": st.one_of(
            _HEADERS,
            _HEADERS.map(lambda h: {**h, "content-type": "application/json"}),
            _HEADERS.map(lambda h: {**h, **delivery()[0]}),
        ),
        # Signed headers above sign another body than any of these, so nothing here is valid.
        "body": st.one_of(
            st.binary(max_size=300),
            st.recursive(
                st.none() | st.integers() | st.text(max_size=10),
                lambda c: (
                    st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3)
                ),
                max_leaves=8,
            ).map(lambda v: json.dumps(v).encode()),
        ),
    }
)

# Hypothesis runs in a worker thread and calls into the event loop for each request, so that
# one Watcher serves every example.
_FUZZ = settings(max_examples=150, deadline=None)


async def test_arbitrary_requests_through_the_handler() -> None:
    async with receiving() as running:
        receiver = running.transport.receiver
        assert receiver is not None

        @_FUZZ
        @given(requests=st.lists(_REQUEST, min_size=1, max_size=6))
        def check(requests: list[dict[str, Any]]) -> None:
            for request in requests:
                reply = anyio.from_thread.run(
                    receiver.handle,
                    request["method"],
                    request["path"],
                    request["headers"],
                    request["body"],
                )
                assert reply.status in (400, 401, 404, 405, 413, 415), reply

        await anyio.to_thread.run_sync(check)
        await anyio.sleep(0.05)
    assert running.events == []


_UNSIGNED_NAMES = st.sampled_from(
    [
        "content-type",
        "x-reader-signature",
        "x-reader-timestamp",
        "x-reader-event",
        "x-reader-delivery",
        "stripe-signature",
        "webhook-signature",
        "webhook-id",
        "webhook-timestamp",
        "x-hub-signature-256",
    ]
)
_ANY_TEXT = st.one_of(_VALUE, st.text(max_size=20))  # latin-1 and beyond, as ASGI may hand over


@pytest.mark.parametrize("scheme", ["reader", "standard-webhooks", "github", "stripe"])
async def test_arbitrary_requests_to_an_unsigned_receiver_never_5xx(scheme: str) -> None:
    # allow_unsigned lets a delivery without any signature header through to decoding: any
    # headers, any body, and still never a 5xx.
    secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=" if scheme == "standard-webhooks" else SECRET
    cfg = config(scheme=scheme, secrets=[secret], allow_unsigned=True)
    async with receiving(cfg) as running:
        receiver = running.transport.receiver
        assert receiver is not None

        @settings(max_examples=80, deadline=None)
        @given(
            headers=st.dictionaries(_UNSIGNED_NAMES, _ANY_TEXT, max_size=6),
            body=st.one_of(
                _REQUEST.map(lambda r: r["body"]),
                st.sampled_from(
                    [
                        b'{"jobId": "job_1", "status": "completed"}',
                        b'{"balance": 3}',
                        b'{"jobId": "job_2", "url": "https://example.com/a"}',
                    ]
                ),
            ),
            event=st.sampled_from(["job.completed", "job.page", "credit.low", "job.x"]),
        )
        def check(headers: dict[str, str], body: bytes, event: str) -> None:
            headers = {"content-type": "application/json", "x-reader-event": event, **headers}
            reply = anyio.from_thread.run(receiver.handle, "POST", PATH, headers, body)
            assert reply.status < 500, reply

        await anyio.to_thread.run_sync(check)


async def test_arbitrary_requests_through_the_asgi_app() -> None:
    async with receiving() as running, running.client() as client:

        @_FUZZ
        @given(requests=st.lists(_REQUEST, min_size=1, max_size=6))
        def check(requests: list[dict[str, Any]]) -> None:
            for request in requests:
                reply = anyio.from_thread.run(
                    functools.partial(
                        client.request,
                        request["method"],
                        request["path"],
                        headers=request["headers"],
                        content=request["body"],
                    )
                )
                assert reply.status_code in (400, 401, 404, 405, 413, 415), reply.text

        await anyio.to_thread.run_sync(check)
        await anyio.sleep(0.05)
    assert running.events == []


_PAYLOAD = st.fixed_dictionaries(
    {},
    optional={
        "jobId": st.one_of(st.text(max_size=8), st.integers(), st.none()),
        "status": st.one_of(
            st.sampled_from(
                ["queued", "processing", "completed", "failed", "cancelled", "aborted"]
            ),
            st.integers(),
        ),
        "completed": st.one_of(st.integers(min_value=-3, max_value=5), st.text(max_size=3)),
        "total": st.one_of(st.integers(min_value=-3, max_value=5), st.none()),
        "url": st.one_of(st.text(max_size=10), st.integers()),
        "error": st.one_of(st.none(), st.text(max_size=5)),
    },
)


async def test_signed_arbitrary_payloads_never_5xx_and_400s_never_dispatch() -> None:
    async with receiving() as running:
        receiver = running.transport.receiver
        assert receiver is not None

        @_FUZZ
        @given(
            event=st.one_of(
                st.sampled_from(
                    ["job.started", "job.page", "job.completed", "job.failed", "credit.low"]
                ),
                st.text(max_size=12),
            ),
            payload=_PAYLOAD,
            ident=st.uuids(),
        )
        def check(event: str, payload: dict[str, Any], ident: Any) -> None:
            headers, body = delivery(event, payload, delivery_id=str(ident))
            before = running.watcher.statistics().events_in
            reply = anyio.from_thread.run(receiver.handle, "POST", PATH, headers, body)
            assert reply.status in (200, 400), reply
            if reply.status == 400:
                assert running.watcher.statistics().events_in == before

        await anyio.to_thread.run_sync(check)


@pytest.mark.parametrize("scheme", ["reader", "standard-webhooks", "github", "stripe"])
async def test_allow_unsigned_takes_an_unsigned_delivery_under_every_scheme(scheme: str) -> None:
    secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ=" if scheme == "standard-webhooks" else SECRET
    cfg = config(scheme=scheme, secrets=[secret], allow_unsigned=True)
    async with receiving(cfg) as running, running.client() as client:
        headers, body = delivery()
        for name in ("x-reader-signature", "x-reader-timestamp"):
            del headers[name]
        reply = await client.post(PATH, content=body, headers=headers)
        again = await client.post(PATH, content=body, headers=headers)
        await until(lambda: len(running.events) == 1)
    assert (reply.status_code, again.status_code) == (200, 200), reply.text
    assert [e.kind for e in running.events] == [jobwatch.EventKind.COMPLETED]


async def test_an_unsigned_delivery_with_an_odd_timestamp_header_is_not_a_5xx() -> None:
    async with receiving(config(allow_unsigned=True)) as running, running.client() as client:
        headers, body = delivery()
        del headers["x-reader-signature"]
        del headers["x-reader-timestamp"]
        wire = [(k.encode(), v.encode()) for k, v in headers.items()]
        wire.append((b"x-reader-timestamp", "١٧١٢٢٧٥٢٠٠".encode()))  # not ASCII digits
        reply = await client.post(PATH, content=body, headers=wire)
    assert reply.status_code == 200, reply.text
