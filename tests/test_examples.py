"""Every program in examples/ runs here, against the Reader simulator (and Redis for the
worker), the way a user runs it: scripts as processes, with their ``jobwatch.toml``.

The web applications (FastAPI, Starlette, Django) run in tests/test_web_apps.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _serving import EXAMPLES, load_example, serving

import jobwatch
from jobwatch.sim import Simulator, Step, running

pytestmark = pytest.mark.anyio

SECRET = "whsec-examples-tests-0123456789"
REDIS_URL = "redis://127.0.0.1:6379/15"
TESTED_HERE = {"wait_for_job", "redis_worker", "lambda_handler"}
TESTED_IN_WEB_APPS = {"fastapi_service", "starlette_app", "django_asgi"}


def test_every_example_is_run_by_a_test() -> None:
    assert {p.stem for p in EXAMPLES.glob("*.py")} == TESTED_HERE | TESTED_IN_WEB_APPS


def _config_file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "jobwatch.toml"
    path.write_text(text, encoding="utf-8")
    return {**os.environ, "JOBWATCH_CONFIG": str(path)}


async def _run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(
        [sys.executable, str(EXAMPLES / "wait_for_job.py"), *args], env=env, check=False
    )


async def test_script_waits_for_a_job(tmp_path: Path) -> None:
    simulator = Simulator(time_scale=100)
    async with running(simulator) as url:
        env = _config_file(
            tmp_path,
            f'[jobwatch]\nbase_url = "{url}"\napi_key = "{simulator.api_key}"\nstore = "memory"\n',
        )
        done = simulator.create_job(urls=[f"https://example.com/{n}" for n in range(3)])
        failed = simulator.create_job(
            steps=[Step(kind="page", delay=0.1), Step(kind="fail", error="the browser crashed")]
        )
        completed = await _run_script(env, done)
        broken = await _run_script(env, failed)
        usage = await _run_script(env)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.decode().splitlines()[-1] == f"{done}: completed"
    assert broken.returncode == 1, broken.stderr
    assert broken.stdout.decode().splitlines()[-1] == f"{failed}: failed: the browser crashed"
    assert usage.returncode == 2 and b"usage:" in usage.stderr


@pytest.fixture
def redis_names() -> Iterator[str]:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the worker example needs Redis on 127.0.0.1:6379 ({exc})")
    name = f"jwexample:{uuid.uuid4().hex[:12]}"
    yield name
    try:
        keys = list(client.scan_iter(match=f"{name}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.redis
async def test_worker_acts_on_what_a_receiver_relays(tmp_path: Path, redis_names: str) -> None:
    relay = (
        f'[jobwatch.relay]\nurl = "{REDIS_URL}"\nstream = "{redis_names}:events"\n'
        "block = 0.1\ntimeout = 2.0\n"
    )
    receiver = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "transport": ["webhook", "relay"],
                "store": "redis",
                "safety_poll": 0,
                "redis": {"url": REDIS_URL, "prefix": redis_names, "owner": "receiver-1"},
                "relay": {
                    "url": REDIS_URL,
                    "stream": f"{redis_names}:events",
                    "block": 0.1,
                    "timeout": 2.0,
                },
                "webhook": {"listen": "127.0.0.1:0", "secrets": [SECRET]},
            }
        }
    )
    env = _config_file(tmp_path, f'[jobwatch]\ntransport = "relay"\nstore = "memory"\n{relay}')
    simulator = Simulator(time_scale=100)
    async with (
        running(simulator),
        jobwatch.Watcher(receiver) as watcher,
        await anyio.open_process(
            [sys.executable, str(EXAMPLES / "redis_worker.py")], env=env
        ) as worker,
    ):
        assert worker.stdout is not None
        job_id = simulator.create_job(
            urls=["https://example.com/a"],
            webhook={"url": watcher.bound_url("webhook") + "/hooks/reader", "secret": SECRET},
        )
        lines = await _read_lines(worker.stdout, until=f"{job_id} completed")
        worker.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            assert await worker.wait() == 0
    assert lines[0] == "worker: waiting for events"


async def _read_lines(stream: Any, *, until: str) -> list[str]:
    buffer = b""
    with anyio.fail_after(20):
        while until.encode() not in buffer:
            buffer += await stream.receive()
    return buffer.decode().splitlines()


def _api_gateway(handler: Any) -> Any:
    """A loopback stand-in for API Gateway (HTTP API, payload 2.0) in front of a function."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        event = {
            "version": "2.0",
            "rawPath": scope["path"],
            "isBase64Encoded": False,
            "requestContext": {"http": {"method": scope["method"], "path": scope["path"]}},
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": body.decode(),
        }
        reply = await anyio.to_thread.run_sync(handler, event, None)
        headers = [(k.encode(), v.encode()) for k, v in reply["headers"].items()]
        await send(
            {"type": "http.response.start", "status": reply["statusCode"], "headers": headers}
        )
        await send({"type": "http.response.body", "body": reply["body"].encode()})

    return app


async def test_lambda_handler_receives_the_simulators_webhooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _config_file(
        tmp_path, '[jobwatch]\nstore = "memory"\n[jobwatch.webhook]\nsecrets = ["${TEST_SECRET}"]\n'
    )
    monkeypatch.setenv("JOBWATCH_CONFIG", env["JOBWATCH_CONFIG"])
    monkeypatch.setenv("TEST_SECRET", SECRET)
    example = load_example("lambda_handler")  # reads the configuration at import
    simulator = Simulator(time_scale=100)
    async with running(simulator), serving(_api_gateway(example.handler)) as url:
        job_id = simulator.create_job(
            urls=["https://example.com/a"],
            webhook={
                "url": url + "/hooks/reader",
                "secret": SECRET,
                "events": ["job.started", "job.completed"],
            },
        )
        with anyio.fail_after(10):
            while len(simulator.deliveries()) < 2:  # noqa: ASYNC110 - the sender's record
                await anyio.sleep(0.01)
        async with httpx.AsyncClient() as client:  # a forged delivery
            forged = await client.post(url + "/hooks/reader", json={"jobId": job_id})
    assert [d.status_code for d in simulator.deliveries()] == [200, 200]
    assert forged.status_code == 401
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"job_id": job_id, "kind": "completed"} in logged
