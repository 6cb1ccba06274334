"""End to end: the Reader simulator delivers to a Watcher whose receiver listens on port 0."""

from __future__ import annotations

import functools
import ssl
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _webhook_helpers import PATH, SECRET, delivery, until

import jobwatch
from jobwatch.sim import Faults, Simulator, Step, running
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.transports._asgi import WebhookApp
from jobwatch.transports._serve import serve_app
from jobwatch.transports.webhook import WebhookTransport

pytestmark = pytest.mark.anyio

ALL_EVENTS = ["job.started", "job.page", "job.completed", "job.failed"]


def sim_config(base_url: str, *, safety_poll: float = 0, **webhook: Any) -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": base_url,
                "api_key": "rdr_sim",
                "transport": "webhook",
                "store": "memory",
                "safety_poll": safety_poll,
                "webhook": {"listen": "127.0.0.1:0", "secrets": [SECRET], **webhook},
            }
        }
    )


async def test_simulator_deliveries_with_faults_arrive_exactly_once() -> None:
    faults = Faults(
        webhook_dup_p=0.5, webhook_reorder=True, webhook_delay=0.5, corrupt_signature_p=0.2
    )
    sim = Simulator(
        seed=7,
        time_scale=20,
        page_interval=0.5,
        faults=faults,
        webhook_attempts=6,
        webhook_waits=(1.0,),
    )
    async with running(sim) as base:
        config = sim_config(base)
        transport = WebhookTransport.from_config(config)
        watcher = jobwatch.Watcher(config, transports=[transport], store=MemoryStore())
        events: list[jobwatch.JobEvent] = []
        watcher.subscribe(events.append)
        async with watcher:
            hook = {"url": transport.url, "secret": SECRET, "events": ALL_EVENTS}
            jobs = [
                sim.create_job(
                    urls=[f"https://example.com/{j}/{p}" for p in range(3)], webhook=hook
                )
                for j in range(4)
            ]
            await until(lambda: sum(e.terminal for e in events) == len(jobs), within=20)
            await anyio.sleep(0.5)  # late duplicates and reordered deliveries
            stats = watcher.statistics()
    keys = Counter(e.key for e in events)
    assert all(n == 1 for n in keys.values()), keys
    for job in jobs:
        mine = [e for e in events if e.job_id == job]
        pages = {e.data["url"] for e in mine if e.kind is jobwatch.EventKind.PAGE}
        assert pages == {r["url"] for r in sim.job(job)["results"]}
        assert [e.kind for e in mine if e.terminal] == [jobwatch.EventKind.COMPLETED]
    counts = sim.fault_counts()
    assert counts["webhook_dup_p"] > 0 and counts["corrupt_signature_p"] > 0
    webhook = stats.transports["webhook"]
    assert webhook["rejected"] >= counts["corrupt_signature_p"]
    assert webhook["duplicates"] > 0
    statuses = {a.status_code for a in sim.deliveries()}
    assert statuses <= {200, 401}


async def test_restart_between_the_2xx_and_the_callback_dispatches_after_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "transport": "webhook",
                "safety_poll": 0,
                "webhook": {"secrets": [SECRET]},
            }
        }
    )
    entered = anyio.Event()

    async def stuck(event: jobwatch.JobEvent) -> None:
        entered.set()
        await anyio.sleep_forever()  # the process dies before the callback finishes

    first = jobwatch.Watcher(
        config, transports=[WebhookTransport.from_config(config)], store=SQLiteStore(db)
    )
    first.subscribe(stuck)
    async with first:
        app: Any = first.asgi_app()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hook"
        ) as client:
            headers, body = delivery()
            reply = await client.post(PATH, content=body, headers=headers)
        assert reply.status_code == 200
        await entered.wait()

    seen: list[jobwatch.JobEvent] = []
    second = jobwatch.Watcher(
        config, transports=[WebhookTransport.from_config(config)], store=SQLiteStore(db)
    )
    second.subscribe(seen.append)
    async with second:
        await until(lambda: len(seen) == 1)
    assert seen[0].kind is jobwatch.EventKind.COMPLETED and seen[0].job_id == "job_1"


async def test_a_cancelled_job_is_reported_by_the_safety_net() -> None:
    # Reader sends no webhook for a cancellation: only the safety-net poll can see it.
    sim = Simulator(seed=3, time_scale=1)
    async with running(sim) as base:
        config = sim_config(base, safety_poll=0.3)
        transport = WebhookTransport.from_config(config)
        async with jobwatch.Watcher(config, transports=[transport], store=MemoryStore()) as w:
            hook = {"url": transport.url, "secret": SECRET, "events": ALL_EVENTS}
            job = sim.create_job(
                steps=[Step(kind="page", delay=0.05), Step(kind="pause", delay=60)], webhook=hook
            )
            await anyio.sleep(0.2)
            sim.cancel_job(job)
            final = await w.wait(job, timeout=10)
            stats = w.statistics()
    assert final.kind is jobwatch.EventKind.CANCELLED
    assert stats.safety_polls >= 1
    assert all(a.event != "job.cancelled" for a in sim.deliveries())


async def test_serve_app_binds_port_zero_and_stops_promptly() -> None:
    app = WebhookApp()
    async with anyio.create_task_group() as tg:
        url = await tg.start(serve_app, app, "127.0.0.1", 0)
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        async with httpx.AsyncClient() as client:
            reply = await client.post(url + PATH, content=b"{}")
        assert reply.status_code == 503  # no receiver attached to this app
        tg.cancel_scope.cancel()
        started = anyio.current_time()
    assert anyio.current_time() - started < 3


async def test_listen_on_a_taken_port_is_a_config_error() -> None:
    async with anyio.create_task_group() as tg:
        url = await tg.start(serve_app, WebhookApp(), "127.0.0.1", 0)
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(jobwatch.ConfigError, match="cannot listen"):
            await serve_app(WebhookApp(), "127.0.0.1", port)
        tg.cancel_scope.cancel()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def test_serve_app_speaks_https_with_a_certificate(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    async with anyio.create_task_group() as tg:
        url = await tg.start(
            functools.partial(serve_app, WebhookApp(), "127.0.0.1", 0, certfile=cert, keyfile=key)
        )
        assert url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=cert)) as client:
            reply = await client.post(url + PATH, content=b"{}")
        assert reply.status_code == 503
        tg.cancel_scope.cancel()


async def test_a_bad_certificate_is_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(jobwatch.ConfigError, match="TLS certificate"):
        await serve_app(WebhookApp(), "127.0.0.1", 0, certfile=str(bogus), keyfile=str(bogus))


async def test_the_watchers_own_server_speaks_https(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "transport": "webhook",
                "store": "memory",
                "safety_poll": 0,
                "webhook": {
                    "listen": "127.0.0.1:0",
                    "secrets": [SECRET],
                    "certfile": cert,
                    "keyfile": key,
                },
            }
        }
    )
    transport = WebhookTransport.from_config(config)
    seen: list[jobwatch.JobEvent] = []
    async with jobwatch.Watcher(config, transports=[transport], store=MemoryStore()) as w:
        w.subscribe(seen.append)
        assert transport.url is not None and transport.url.startswith("https://")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=cert)) as client:
            headers, body = delivery()
            reply = await client.post(transport.url, content=body, headers=headers)
        await until(lambda: len(seen) == 1)
    assert reply.status_code == 200
