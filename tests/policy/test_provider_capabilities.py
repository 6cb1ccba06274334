"""The provider owns its API's defaults and says what it can serve; the Watcher, the policy and
``jobwatch doctor`` ask it, and agree with each other."""

from __future__ import annotations

import io
import json

import httpx
import pytest

import jobwatch
from jobwatch._doctor import doctor
from jobwatch.abc import Capabilities, Provider
from jobwatch.providers.reader import ReaderProvider
from jobwatch.sim import Simulator, Step, running

pytestmark = pytest.mark.anyio

KUBERNETES = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
JOB_ANSWER = {
    "success": True,
    "data": {"id": "job_1", "status": "completed", "completed": 2, "total": 2},
}


class SelfHosted(ReaderProvider):
    """An API every user hosts at an address of their own: no default base URL."""

    name = "self-hosted"
    default_base_url = None


class PollAndHooks(ReaderProvider):
    """An API that answers polls and sends webhooks, but has no event stream."""

    name = "poll-and-hooks"
    capabilities = Capabilities(webhooks=True, webhook_scheme="reader")


def recorder() -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=JOB_ANSWER)

    return httpx.MockTransport(handle), seen


def config(**core: object) -> jobwatch.Config:
    body = {"api_key": "key_0123", "store": "memory", "poll": {"interval": 0.05}, **core}
    return jobwatch.Config.from_mapping({"jobwatch": body}, environ={})


# -- the base URL is the provider's ----------------------------------------------------------


async def test_no_default_base_url_is_a_config_error_before_any_request() -> None:
    transport, seen = recorder()
    with pytest.raises(jobwatch.ConfigError) as info:
        jobwatch.Watcher(
            config(transport="poll"), provider=SelfHosted(config()), http_transport=transport
        )
    assert "[jobwatch] base_url is not set" in str(info.value)
    assert "self-hosted provider has no default" in str(info.value)
    assert seen == []
    # Named, the address is where the requests go.
    named = config(transport="poll", base_url="https://jobs.internal:8443")
    async with jobwatch.Watcher(
        named, provider=SelfHosted(named), http_transport=transport, environ={}
    ) as watcher:
        final = await watcher.wait("job_1", timeout=10)
    assert final.kind is jobwatch.EventKind.COMPLETED
    assert {(r.url.host, r.url.port) for r in seen} == {("jobs.internal", 8443)}
    assert seen[0].headers["x-api-key"] == "key_0123"


async def test_the_providers_default_base_url_is_what_the_requests_use() -> None:
    transport, seen = recorder()
    async with jobwatch.Watcher(
        config(transport="poll"), http_transport=transport, environ={}
    ) as watcher:
        await watcher.wait("job_1", timeout=10)
    assert {r.url.host for r in seen} == {"api.reader.dev"}
    assert ReaderProvider(None).resolve_base_url(config()) == "https://api.reader.dev"


async def test_doctor_fails_without_a_base_url_and_makes_no_request() -> None:
    out = io.StringIO()
    code = await doctor(
        config(transport="poll"),
        out,
        environ={},
        signals=jobwatch.Signals(),
        provider=SelfHosted(config()),
    )
    last = out.getvalue().splitlines()[-1]
    assert code == 1
    assert last.startswith("doctor: jobwatch watch would fail: [jobwatch] base_url is not set")
    assert "reachability" not in out.getvalue()


# -- doctor agrees with watch -----------------------------------------------------------------


def policy_lines(decision: jobwatch.Decision) -> list[str]:
    scope = f" ({decision.scope} scope)" if decision.scope else ""
    safety = f"{decision.safety_poll:g} s" if decision.safety_poll else "off"
    return [
        f"policy: transports {', '.join(decision.transports)}{scope}; safety net {safety}",
        *(f"  - {reason}" for reason in decision.reasons),
    ]


async def report(
    cfg: jobwatch.Config, environ: dict[str, str], signals: jobwatch.Signals, provider: Provider
) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = await doctor(cfg, out, environ=environ, signals=signals, provider=provider)
    return code, out.getvalue().splitlines()


@pytest.mark.parametrize(
    ("environ", "signals", "hooked", "expected"),
    [
        ({}, jobwatch.Signals(tty=True), False, ("poll",)),
        (KUBERNETES, jobwatch.Signals(), False, ("poll",)),
        (KUBERNETES, jobwatch.Signals(), True, ("webhook",)),
    ],
)
async def test_a_provider_without_streams_is_never_given_sse(
    environ: dict[str, str], signals: jobwatch.Signals, hooked: bool, expected: tuple[str, ...]
) -> None:
    sim = Simulator(time_scale=50.0)
    async with running(sim) as url:
        hook = {"webhook": {"secrets": ["whsec_0123456789abcdef"]}} if hooked else {}
        cfg = config(base_url=url, api_key=sim.api_key, **hook)
        provider = PollAndHooks(cfg)
        watcher = jobwatch.Watcher(cfg, provider=provider, environ=environ, signals=signals)
        assert watcher.decision.transports == expected
        assert "poll-and-hooks provider has no event stream" in " ".join(
            watcher.decision.reasons
        ) or expected == ("webhook",)
        code, lines = await report(cfg, environ, signals, provider)
        assert code == 0, "\n".join(lines)
        start = lines.index(policy_lines(watcher.decision)[0])
        assert lines[start : start + 1 + len(watcher.decision.reasons)] == policy_lines(
            watcher.decision
        )
        if expected == ("poll",):  # and watching works with what was chosen
            job = sim.create_job(steps=[Step(kind="page")] * 2)
            async with watcher:
                final = await watcher.wait(job, timeout=20)
            assert final.kind is jobwatch.EventKind.COMPLETED and final.source == "poll"


@pytest.mark.parametrize(
    ("core", "environ", "origin"),
    [
        ({"transport": "sse"}, {}, '[jobwatch] transport = "sse"'),
        ({"transport": ["poll", "sse"]}, {}, '[jobwatch] transport = ["poll", "sse"]'),
        ({}, {"JOBWATCH_TRANSPORT": "sse"}, "JOBWATCH_TRANSPORT='sse'"),
    ],
)
async def test_doctor_and_watch_refuse_the_same_unservable_transport(
    core: dict[str, object], environ: dict[str, str], origin: str
) -> None:
    sim = Simulator(time_scale=50.0)
    async with running(sim) as url:
        cfg = config(base_url=url, api_key=sim.api_key, **core)
        provider = PollAndHooks(cfg)
        with pytest.raises(jobwatch.ConfigError) as info:
            jobwatch.Watcher(cfg, provider=provider, environ=environ)
        message = str(info.value)
        assert message.startswith(
            f"{origin} asks for sse, but the poll-and-hooks provider "
            "has no event stream; it offers poll, webhook"
        )
        code, lines = await report(cfg, environ, jobwatch.Signals(), provider)
    assert code == 1
    assert lines[-1] == f"doctor: jobwatch watch would fail: {message}"
    assert f"policy: error: {message}" in lines


async def test_doctor_names_the_file_and_the_providers_offer(tmp_path: object) -> None:
    sim = Simulator(time_scale=50.0)
    async with running(sim) as url:
        path = tmp_path / "jobwatch.toml"  # type: ignore[operator]
        path.write_text(
            f'[jobwatch]\nbase_url = "{url}"\napi_key = "{sim.api_key}"\nstore = "memory"\n'
        )
        cfg = jobwatch.load_config(path, environ={})
        code, lines = await report(cfg, {}, jobwatch.Signals(), ReaderProvider(cfg))
    assert code == 0, "\n".join(lines)
    assert lines[0] == f"configuration file: {path}"
    assert (
        "provider reader: offers poll, sse, webhook (streams: job, workspace; webhook "
        "scheme: reader; push channels report cancellations: no)" in lines
    )
    assert f"base URL: {url} ([jobwatch] base_url)" in lines
    assert lines[-1] == "doctor: ok"


async def test_doctor_uses_the_providers_default_base_url() -> None:
    sim = Simulator(time_scale=50.0)
    async with running(sim) as url:
        local = type("Local", (ReaderProvider,), {"name": "local", "default_base_url": url})
        cfg = config(api_key=sim.api_key)
        code, lines = await report(cfg, {}, jobwatch.Signals(), local(cfg))
    assert code == 0, "\n".join(lines)
    assert lines[0].startswith("configuration file: none found")
    assert f"base URL: {url} (the local provider's default)" in lines
    shown = json.loads("\n".join(lines[2 : lines.index("environment signals:")]))
    assert shown["jobwatch"]["base_url"] is None
    assert any(line.startswith(f"reachability: GET {url}/v1/jobs/") for line in lines)
