"""``jobwatch demo --provider NAME``: the fake of that API in-process, one job, watched live
with the provider of that name. No account, no network."""

from __future__ import annotations

import sys
from typing import TextIO

from .._config import Config
from .._errors import ConfigError
from .._policy import check_served
from .._registry import installed
from .._watcher import Watcher
from . import FAKES
from ._fake_api import FakeAPI, FakeStep
from ._serve import running_fake
from .github import GitHubActionsFake
from .openai import OpenAIBatchFake
from .replicate import ReplicateFake

__all__ = ["demo_fake"]

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"jobwatch demo: {message}", file=sys.stderr)
    return EXIT_USAGE


def _unserved(fake: FakeAPI, transport: str) -> str | None:
    """Why ``--transport`` cannot serve the API ``fake`` stands in for, before it starts (the
    Watcher would blame ``[jobwatch] transport`` in a file the demo does not read)."""
    try:
        config = Config.from_mapping(
            {"jobwatch": {"provider": fake.provider, "transport": transport, **fake.tables()}},
            environ={},
        )
        check_served(config, f"--transport {transport!r}")
    except ConfigError as exc:
        return str(exc)
    return None


async def demo_fake(
    provider: str, transport: str | None, compare: bool, size: int, time_scale: float, out: TextIO
) -> int:
    """Run the demo against the fake of `provider`; returns ``jobwatch watch``'s exit code."""
    if provider not in FAKES:
        return _fail(
            f"there is no fake of a {provider!r} API; --provider takes reader, {', '.join(FAKES)}"
        )
    if compare:
        return _fail("--compare runs on the Reader simulator only; leave out --provider")
    if provider not in installed("provider"):
        return _fail(
            f"the {provider} provider is not installed in this jobwatch (installed: "
            f"{', '.join(installed('provider'))}); its fake API is ready, but no "
            "provider can watch it yet"
        )
    fake = FAKES[provider](time_scale=time_scale, seed=7)
    if transport is not None:
        refused = _unserved(fake, transport)
        if refused is not None:
            return _fail(refused)
    from .. import _cli

    async with running_fake(fake):
        print(
            f"fake {provider} API listening on {fake.url} (time x{time_scale:g}); no "
            "account, no network",
            file=out,
            flush=True,
        )
        path = f"/hooks/{provider}"
        config = Config.from_mapping(
            fake.config(
                transport=transport or "auto",
                poll={"interval": 1.0},
                webhook={"listen": "127.0.0.1:0", "path": path},
            ),
            environ={},
        )
        watcher = Watcher(config)
        async with watcher:
            hook = None
            if "webhook" in watcher.decision.transports:
                hook = watcher.bound_url("webhook").rstrip("/") + path
            job_id, what = _start(fake, size, hook)
            print(
                f"started {what} {job_id}; watching with "
                f"{', '.join(watcher.decision.transports)}: "
                f"{'; '.join(watcher.decision.reasons)}",
                file=out,
                flush=True,
            )
            code = await _cli._watch(config, [job_id], 600.0, _cli._renderer(False, out), watcher)
        stats = watcher.statistics()
        counts = fake.request_counts()
        print(
            f"done: {stats.events_out} events, {counts.total} requests to the fake, "
            f"{len(fake.deliveries())} webhook deliveries",
            file=out,
        )
        return code


def _start(fake: FakeAPI, size: int, hook: str | None) -> tuple[str, str]:
    """Start the demo job on `fake` (its webhooks going to `hook`); its id and what it is."""
    if isinstance(fake, OpenAIBatchFake):
        fake.webhook_url = hook
        return fake.create_batch(steps=_batch(size)), f"a batch of {size} requests"
    if isinstance(fake, GitHubActionsFake):
        fake.webhook_url = hook
        if hook is not None:
            fake.ping()
        jobs = [f"job-{n + 1}" for n in range(size)]
        steps = [FakeStep(status="in_progress")]
        steps += [FakeStep(delay=0.5, job=name, status="completed") for name in jobs]
        steps.append(FakeStep(status="completed", fields={"conclusion": "success"}))
        return fake.create_run(jobs=jobs, steps=steps), f"a workflow run of {size} jobs"
    assert isinstance(fake, ReplicateFake)
    words = [f"token{n} " for n in range(size)]
    return fake.create_prediction(output=words, webhook=hook), f"a prediction of {size} tokens"


def _batch(total: int) -> list[FakeStep]:
    steps = [FakeStep(status="in_progress", fields={"request_counts": {"total": total}})]
    done = sorted({total * n // 10 for n in range(1, 11)})
    steps += [FakeStep(fields={"request_counts": {"completed": n}}) for n in done]
    return [*steps, FakeStep(status="finalizing"), FakeStep(status="completed")]
