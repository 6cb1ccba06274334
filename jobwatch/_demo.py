"""``jobwatch demo``: the simulator in-process, one job, watched live. No account, no network."""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack
from typing import Any, TextIO

import anyio
import httpx

from ._api import user_agent
from ._config import Config
from ._events import JobEvent
from ._watcher import Watcher

__all__ = ["demo"]

_HOOK_PATH = "/hooks/reader"


def _config(url: str, api_key: str, transport: str, **tables: Any) -> Config:
    body: dict[str, Any] = {
        "base_url": url,
        "api_key": api_key,
        "store": "memory",
        "transport": transport,
        "poll": {"interval": 1.0},
        **tables,
    }
    return Config.from_mapping({"jobwatch": body}, environ={})


async def _submit(url: str, api_key: str, pages: int, webhook: dict[str, Any] | None) -> str:
    body: dict[str, Any] = {"urls": [f"https://example.com/docs/{n}" for n in range(pages)]}
    if webhook is not None:
        body["webhook"] = webhook
    headers = {"x-api-key": api_key, "user-agent": user_agent()}
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        reply = await client.post("/v1/read", json=body)
    reply.raise_for_status()
    return str(reply.json()["data"]["id"])


async def demo(
    transport: str | None,
    compare: bool,
    pages: int,
    time_scale: float,
    out: TextIO,
    provider: str = "reader",
) -> int:
    """Run the demo; returns the exit code of ``jobwatch watch`` for the job."""
    if provider != "reader":  # another API: its fake, and the provider of its name
        from ._fakes._demo import demo_fake

        return await demo_fake(provider, transport, compare, pages, time_scale, out)
    from . import _cli
    from .sim import Simulator, running

    sim = Simulator(time_scale=time_scale, seed=7, page_failure_p=0.05)
    async with running(sim) as url:
        print(
            f"simulator listening on {url} (time x{time_scale:g}); no account, no network",
            file=out,
            flush=True,
        )
        if compare:
            return await _compare(sim, url, pages, out)
        # A receiver on a free local port with a secret of its own, used if webhooks are
        # among the transports: the job is submitted with a webhook pointing at it.
        secret = "whsec-demo-" + secrets.token_hex(12)
        config = _config(url, sim.api_key, transport or "auto", webhook=_receiver(secret))
        watcher = Watcher(config)
        async with watcher:
            hook = _hook(watcher, secret) if "webhook" in watcher.decision.transports else None
            job_id = await _submit(url, sim.api_key, pages, hook)
            print(
                f"submitted batch job {job_id} ({pages} pages); watching with "
                f"{', '.join(watcher.decision.transports)}: "
                f"{'; '.join(watcher.decision.reasons)}",
                file=out,
                flush=True,
            )
            code = await _cli._watch(config, [job_id], 600.0, _cli._renderer(False, out), watcher)
        stats = watcher.statistics()
        print(f"done: {stats.events_out} events, {stats.requests} requests", file=out)
        return code


def _receiver(secret: str) -> dict[str, Any]:
    """``[jobwatch.webhook]`` of a demo receiver: a free loopback port, a fresh secret."""
    return {"listen": "127.0.0.1:0", "path": _HOOK_PATH, "secrets": [secret]}


def _hook(watcher: Watcher, secret: str) -> dict[str, Any]:
    """The per-request ``webhook`` of a job, pointing at ``watcher``'s running receiver."""
    url = watcher.bound_url("webhook").rstrip("/") + _HOOK_PATH
    return {
        "url": url,
        "secret": secret,
        "events": ["job.started", "job.page", "job.completed", "job.failed"],
    }


async def _compare(sim: Any, url: str, pages: int, out: TextIO) -> int:
    secret = "whsec-demo-" + secrets.token_hex(12)
    configs = {
        "poll": _config(url, sim.api_key, "poll"),
        "sse": _config(url, sim.api_key, "sse", sse={"scope": "job"}),
        "webhook": _config(url, sim.api_key, "webhook", safety_poll=0, webhook=_receiver(secret)),
    }
    finished: dict[str, float] = {}
    async with AsyncExitStack() as stack:
        watchers = {name: Watcher(c) for name, c in configs.items()}
        for watcher in watchers.values():
            await stack.enter_async_context(watcher)
        job_id = await _submit(url, sim.api_key, pages, _hook(watchers["webhook"], secret))
        for name, watcher in watchers.items():
            # This job's subscription: poll and per-job streams report watched jobs only.
            watcher.subscribe(
                _stamp(finished, name), kinds=("completed", "failed", "cancelled"), job_id=job_id
            )
        print(
            f"submitted batch job {job_id} ({pages} pages); watching it with poll, sse and "
            "webhook at once",
            file=out,
            flush=True,
        )
        done_at = await _watch_all(sim, job_id, watchers, finished)
        _table(out, watchers, finished, done_at)
    return 0


def _stamp(finished: dict[str, float], name: str) -> Any:
    def record(event: JobEvent) -> None:
        finished.setdefault(name, anyio.current_time())

    return record


async def _watch_all(
    sim: Any, job_id: str, watchers: dict[str, Watcher], finished: dict[str, float]
) -> float:
    done_at: float | None = None
    with anyio.fail_after(600):
        async with anyio.create_task_group() as tg:
            for watcher in watchers.values():
                tg.start_soon(watcher.wait, job_id)
            # The simulator runs in this process: look at the job directly, every 5 ms, to
            # know the true moment it finished.
            while done_at is None:
                if sim.job(job_id)["status"] in ("completed", "failed", "cancelled"):
                    done_at = anyio.current_time()
                await anyio.sleep(0.005)
    assert done_at is not None
    return done_at


def _table(
    out: TextIO, watchers: dict[str, Watcher], finished: dict[str, float], done_at: float
) -> None:
    connections = {
        "poll": "0 held (one request at a time)",
        "sse": "1 stream held per job",
        "webhook": "0 outgoing; 1 port listening",
    }
    print(f"\n{'transport':<10}{'requests':>10}  {'detection latency':>18}  connections", file=out)
    for name, watcher in watchers.items():
        stats = watcher.statistics()
        latency = finished.get(name)
        shown = "n/a" if latency is None else f"{max(0.0, latency - done_at) * 1000:.0f} ms"
        print(f"{name:<10}{stats.requests:>10}  {shown:>18}  {connections[name]}", file=out)
    print(
        "\nrequests count against Reader's per-minute budget (rpm); webhooks cost none.", file=out
    )
