"""Schemes as a seam, end to end: the scheme and path of the provider a Watcher runs with, a
scheme installed by another distribution, ignored deliveries and failed verifications in the
log — through a real receiver on a loopback port.

The plugin is real: a tiny distribution (a ``.dist-info`` folder with an ``entry_points.txt``)
is written to a temporary folder put on ``sys.path``; its module imports only public names.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from _webhook_helpers import SECRET, delivery, until

import jobwatch
from jobwatch._registry import installed
from jobwatch.abc import (
    Capabilities,
    Provider,
    Request,
    Response,
    ResultsPage,
    Scheme,
    Snapshot,
    WebhookDelivery,
)
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import SchemeConformance
from jobwatch.transports._signatures import build_scheme, scheme_class
from jobwatch.transports.webhook import WebhookOptions, WebhookTransport

ENTRY_POINTS = """
[jobwatch.schemes]
acme-sig = fake_jw_acme_scheme:AcmeScheme
"""

# A third party's scheme: HMAC-SHA512 of "{X-Acme-Id}:{body}", hex, in X-Acme-Signature.
PLUGIN = """
import hashlib
import hmac

from jobwatch import WebhookVerificationError
from jobwatch.abc import Scheme


class AcmeScheme(Scheme):
    name = "acme-sig"
    signature_headers = ("x-acme-signature",)

    def _mac(self, secret, ident, body):
        return hmac.new(secret.encode(), ident.encode() + b":" + body, hashlib.sha512).digest()

    def verify(self, headers, body, *, now):
        ident = headers.get("x-acme-id", "")
        try:
            given = bytes.fromhex(headers.get("x-acme-signature", ""))
        except ValueError:
            given = b""
        found = False
        for secret in self.secrets:
            found |= hmac.compare_digest(self._mac(secret, ident, body), given)
        if not found:
            raise WebhookVerificationError("the acme-sig signature does not match", status=401)

    def identity(self, headers, body):
        return headers["x-acme-id"]

    def sign(self, body, *, now, delivery_id=""):
        ident = delivery_id or "acme-1"
        mac = self._mac(self.secrets[0], ident, body).hex()
        return {"x-acme-id": ident, "x-acme-signature": mac}
"""


@pytest.fixture
def acme_scheme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Scheme]]:
    info = tmp_path / "fake_jobwatch_acme-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-jobwatch-acme\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    (tmp_path / "fake_jw_acme_scheme.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield scheme_class("acme-sig")
    sys.modules.pop("fake_jw_acme_scheme", None)


class AcmeProvider(Provider):
    """A job API that is not Reader, passed to the Watcher as an instance (never registered).

    Deliveries are ``{"id": ..., "state": "done"}`` with ``X-Acme-Event``; ``ping`` has no
    job event.
    """

    name = "acme-jobs"
    default_base_url = "https://acme.invalid"

    def __init__(self, scheme: str) -> None:
        self.capabilities = Capabilities(webhooks=True, webhook_scheme=scheme)

    def headers(self) -> Mapping[str, str]:
        return {}

    def status_request(self, job_id: str) -> Request:
        return Request(path=f"/jobs/{job_id}")

    def decode_status(
        self, job_id: str, response: Response, previous: Snapshot | None, *, source: str
    ) -> tuple[Snapshot, list[jobwatch.JobEvent]]:
        raise jobwatch.DecodeError("not polled in these tests")

    def results_request(self, job_id: str) -> Request:
        return Request(path=f"/jobs/{job_id}/results")

    def decode_results(self, job_id: str, response: Response) -> ResultsPage:
        return ResultsPage(items=())

    def error_for(self, response: Response) -> jobwatch.JobwatchError:
        return jobwatch.APIError(f"HTTP {response.status}", status=response.status)

    def decode_webhook(
        self, headers: Mapping[str, str], body: bytes, *, source: str
    ) -> WebhookDelivery:
        name = headers.get("x-acme-event", "")
        if name != "job.done":
            return WebhookDelivery(delivery_id=None, event_name=name, events=())
        job = json.loads(body)["id"]
        event = jobwatch.JobEvent(
            kind=jobwatch.EventKind.COMPLETED,
            job_id=job,
            status=jobwatch.JobStatus.COMPLETED,
            key=f"{job}:terminal",
            source=source,
        )
        return WebhookDelivery(delivery_id=None, event_name=name, events=(event,))


def acme_config(**webhook: Any) -> jobwatch.Config:
    # The configured provider is left at its default: the instance given to the Watcher wins.
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "transport": "webhook",
                "store": "memory",
                "safety_poll": 0,
                "webhook": {"listen": "127.0.0.1:0", "secrets": [SECRET], **webhook},
            }
        }
    )


@asynccontextmanager
async def serving(
    provider: Provider, cfg: jobwatch.Config
) -> AsyncIterator[tuple[jobwatch.Watcher, httpx.AsyncClient, list[jobwatch.JobEvent]]]:
    watcher = jobwatch.Watcher(cfg, provider=provider, store=MemoryStore())
    events: list[jobwatch.JobEvent] = []
    watcher.subscribe(events.append)
    async with watcher, httpx.AsyncClient(base_url=watcher.bound_url("webhook")) as client:
        yield watcher, client, events


def signed(
    scheme: Scheme, event: str, job: str, ident: str = "d-1"
) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"id": job, "state": "done"}).encode()
    headers = scheme.sign(body, now=time.time(), delivery_id=ident)
    return {**headers, "content-type": "application/json", "x-acme-event": event}, body


pytestmark = pytest.mark.anyio


async def test_an_injected_providers_scheme_and_path_verify_end_to_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="jobwatch.webhook")
    github = build_scheme("github", [SECRET], tolerance=300)
    async with serving(AcmeProvider("github"), acme_config()) as (watcher, client, events):
        headers, body = signed(github, "job.done", "run_7")
        done = await client.post("/hooks/acme-jobs", content=body, headers=headers)
        ping = await client.post(
            "/hooks/acme-jobs", content=body, headers={**headers, "x-acme-event": "ping"}
        )
        # Reader's scheme and path are not this provider's.
        reader_headers, _ = delivery(body=body)
        as_reader = await client.post("/hooks/acme-jobs", content=body, headers=reader_headers)
        elsewhere = await client.post("/hooks/reader", content=body, headers=headers)
        await until(lambda: len(events) == 1)
    assert (done.status_code, ping.status_code) == (200, 200), done.text
    assert ping.json() == {"ok": True, "ignored": True}
    assert (as_reader.status_code, elsewhere.status_code) == (401, 404)
    assert [(e.kind, e.job_id) for e in events] == [(jobwatch.EventKind.COMPLETED, "run_7")]
    # A routine ping is no cause for alarm.
    ignored = [r for r in caplog.records if "'ping' ignored" in r.getMessage()]
    assert [r.levelno for r in ignored] == [logging.INFO]


async def test_a_scheme_named_in_the_configuration_beats_the_providers() -> None:
    stripe = build_scheme("stripe", [SECRET], tolerance=300)
    cfg = acme_config(scheme="stripe", path="/in")
    async with serving(AcmeProvider("github"), cfg) as (_, client, events):
        headers, body = signed(stripe, "job.done", "run_8")
        reply = await client.post("/in", content=body, headers=headers)
        await until(lambda: len(events) == 1)
    assert reply.status_code == 200


async def test_a_scheme_installed_by_another_distribution_verifies(
    acme_scheme: type[Scheme],
) -> None:
    assert "acme-sig" in installed("scheme")
    plugin = acme_scheme([SECRET], tolerance=300)
    async with serving(AcmeProvider("acme-sig"), acme_config()) as (watcher, client, events):
        headers, body = signed(plugin, "job.done", "run_9", ident="acme-77")
        first = await client.post("/hooks/acme-jobs", content=body, headers=headers)
        again = await client.post("/hooks/acme-jobs", content=body, headers=headers)
        forged = await client.post("/hooks/acme-jobs", content=body + b" ", headers=headers)
        await until(lambda: len(events) == 1)
        counts = watcher.statistics().transports["webhook"]
    assert [r.status_code for r in (first, again, forged)] == [200, 200, 401]
    assert again.json() == {"ok": True, "duplicate": True}  # the scheme's identity
    assert counts["deliveries"] == 1 and counts["duplicates"] == 1


def test_a_plugin_scheme_by_name_in_the_configuration(acme_scheme: type[Scheme]) -> None:
    transport = WebhookTransport.from_config(acme_config(scheme="acme-sig"))
    assert isinstance(transport.scheme, acme_scheme)
    with pytest.raises(jobwatch.ConfigError, match="the acme-sig scheme takes no options"):
        WebhookTransport.from_config(acme_config(scheme={"name": "acme-sig", "x": 1}))


class TestAcmeSchemeConformance(SchemeConformance):
    timestamped = False

    @pytest.fixture
    def make_scheme(self, acme_scheme: type[Scheme]) -> Any:
        return lambda secrets, tolerance: acme_scheme(secrets, tolerance=tolerance)


async def test_an_unknown_provider_scheme_fails_the_start_and_says_whose() -> None:
    with pytest.raises(jobwatch.ConfigError) as info:
        async with serving(AcmeProvider("svix"), acme_config()):
            pass
    message = str(info.value)
    assert "the acme-jobs provider's webhook_scheme" in message
    assert "unknown scheme 'svix'" in message and "github" in message


def test_the_default_path_and_scheme_are_the_providers() -> None:
    transport = WebhookTransport(WebhookOptions(secrets=(jobwatch.Secret(SECRET),)))
    assert transport.scheme is None and transport.path is None
    assert transport.describe()["scheme"] == "the provider's"
    acme = AcmeProvider("github")
    assert transport.path_for(acme) == "/hooks/acme-jobs"
    scheme = transport.scheme_for(acme)
    assert scheme is not None and scheme.name == "github"


# -- failed verifications in the log ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "failed verification" in r.getMessage()
    ]


async def test_failed_verifications_warn_at_once_then_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    options = WebhookOptions(secrets=(jobwatch.Secret(SECRET),))
    transport = WebhookTransport(options, clock=clock)
    cfg = acme_config()
    watcher = jobwatch.Watcher(
        cfg, provider=AcmeProvider("github"), store=MemoryStore(), transports=[transport]
    )
    wrong = build_scheme("github", ["not-the-secret-0123"], tolerance=300)
    headers, body = signed(wrong, "job.done", "run_1")
    async with watcher:
        receiver = transport.receiver
        assert receiver is not None

        async def post(times: int, step: float) -> None:
            for _ in range(times):
                reply = await receiver.handle("POST", "/hooks/acme-jobs", headers, body)
                assert reply.status == 401
                clock.now += step

        await post(1, 1.0)
        assert len(_warnings(caplog)) == 1
        await post(58, 1.0)  # 59 failures in 59 s: still the one warning
        assert len(_warnings(caplog)) == 1
        clock.now += 1.0
        await post(1, 0.0)
        messages = _warnings(caplog)
    assert len(messages) == 2
    assert messages[0].startswith("1 webhook deliveries failed verification with the github")
    assert messages[1].startswith("59 webhook deliveries failed verification")
    assert "(60 in all)" in messages[1]
    for message in messages:
        assert "[jobwatch.webhook] secrets" in message and "github scheme" in message
        assert SECRET not in message and "not-the-secret" not in message
        assert body.decode() not in message
        assert headers["x-hub-signature-256"] not in message


def test_serverless_invocations_share_the_pace_of_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from jobwatch.serverless import Handler

    cfg = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "transport": "webhook",
                "store": "memory",
                "safety_poll": 0,
                "webhook": {"secrets": [SECRET], "scheme": "github"},
            }
        }
    )
    handler = Handler(
        cfg, on_event=lambda event: None, provider=AcmeProvider("github"), store=MemoryStore()
    )
    wrong = build_scheme("github", ["not-the-secret-0123"], tolerance=300)
    headers, body = signed(wrong, "job.done", "run_1")
    for _ in range(5):
        assert handler.handle("POST", "/x", headers, body).status == 401
    assert len(_warnings(caplog)) == 1
