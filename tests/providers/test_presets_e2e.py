"""Each preset end to end: a real Watcher watches a fake of its API (``jobwatch.testing``)
on a loopback port, by poll, by webhook and (Replicate) by stream — every outcome of the
status table, duplicated, reordered and forged deliveries, rate limits, re-runs, cut streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

import jobwatch
from jobwatch import EventKind, JobEvent
from jobwatch._fakes import (
    FakeFaults,
    FakeStep,
    GitHubActionsFake,
    OpenAIBatchFake,
    ReplicateFake,
    running_fake,
)
from jobwatch._fakes._fake_api import FakeAPI
from jobwatch.transports._signatures import GitHubScheme

pytestmark = pytest.mark.anyio

FAST_POLL = {"interval": 0.05, "max_interval": 0.2, "rpm": 6000}
HOOK = "/hooks/e2e"


@asynccontextmanager
async def watching(
    fake: FakeAPI, transport: str, **more: Any
) -> AsyncIterator[tuple[jobwatch.Watcher, list[JobEvent]]]:
    """A Watcher of ``fake`` by ``transport``, its webhook receiver (if any) registered
    with the fake; yields it and every event it dispatches, for any job."""
    webhook = {"listen": "127.0.0.1:0", "path": HOOK}
    more.setdefault("safety_poll", 0 if transport == "webhook" else 600)
    config = jobwatch.Config.from_mapping(
        fake.config(transport=transport, poll=FAST_POLL, webhook=webhook, **more), environ={}
    )
    seen: list[JobEvent] = []
    async with jobwatch.Watcher(config) as watcher:
        watcher.subscribe(seen.append)
        if transport == "webhook" and isinstance(fake, OpenAIBatchFake | GitHubActionsFake):
            fake.webhook_url = hook_url(watcher)  # the account's hook; Replicate's is per job
        yield watcher, seen


def hook_url(watcher: jobwatch.Watcher) -> str:
    return watcher.bound_url("webhook") + HOOK


async def until(check: Callable[[], bool], seconds: float = 20.0) -> None:
    with anyio.fail_after(seconds):
        while not check():  # noqa: ASYNC110 - the fake and the Watcher signal no event
            await anyio.sleep(0.01)


async def settled(fake: FakeAPI, quiet: float = 0.3) -> None:
    """Wait until the fake has made no webhook delivery for ``quiet`` seconds (none is left
    in flight when the test ends)."""
    with anyio.fail_after(20):
        while True:
            count = len(fake.deliveries())
            await anyio.sleep(quiet)
            if len(fake.deliveries()) == count:
                return


def counter(watcher: jobwatch.Watcher, transport: str, name: str) -> int:
    return watcher.statistics().transports.get(transport, {}).get(name, 0)


def finals(events: list[JobEvent], job_id: str) -> list[JobEvent]:
    return [e for e in events if e.job_id == job_id and e.terminal]


# -- OpenAI batches ------------------------------------------------------------------------

BATCH_OUTCOMES = [
    ("completed", EventKind.COMPLETED, None),
    ("failed", EventKind.FAILED, "This line is not parseable as valid JSON."),
    ("expired", EventKind.FAILED, "expired"),
    ("cancelled", EventKind.CANCELLED, None),
]


@pytest.mark.parametrize("transport", ["poll", "webhook"])
@pytest.mark.parametrize(("outcome", "kind", "error"), BATCH_OUTCOMES)
async def test_openai_batch_outcomes(
    transport: str, outcome: str, kind: EventKind, error: str | None
) -> None:
    async with (
        running_fake(OpenAIBatchFake(time_scale=100)) as fake,
        watching(fake, transport) as (watcher, seen),
    ):
        batch_id = fake.create_batch(outcome=outcome, total=10, failed=2)
        final = await watcher.wait(batch_id, timeout=20)
    assert (final.kind, final.error) == (kind, error)
    assert len(finals(seen, batch_id)) == 1
    if outcome == "completed":
        assert (final.completed, final.total) == (10, 10), "counts, also after a thin webhook"
    if transport == "webhook":
        assert final.source == "poll", "the thin delivery was answered by one status request"
        assert watcher.statistics().transports["webhook"]["deliveries"] == 1


@pytest.mark.parametrize(("total", "failed"), [(10, 3), (4, 4), (5, 0)])
async def test_openai_batch_results_are_its_output_file_then_its_error_file(
    total: int, failed: int
) -> None:
    async with (
        running_fake(OpenAIBatchFake(time_scale=100)) as fake,
        watching(fake, "poll") as (watcher, _),
    ):
        batch_id = fake.create_batch(total=total, failed=failed)
        await watcher.wait(batch_id, timeout=20)
        lines = [line async for line in watcher.results(batch_id)]
    done = total - failed
    assert [line["custom_id"] for line in lines] == [f"request-{n}" for n in range(1, total + 1)]
    assert all(line["error"] is None for line in lines[:done])
    assert all(line["response"] is None and line["error"] for line in lines[done:])


async def test_openai_duplicated_and_reordered_deliveries() -> None:
    faults = FakeFaults(webhook_duplicate_p=1.0)
    async with (
        running_fake(OpenAIBatchFake(time_scale=100, faults=faults)) as fake,
        watching(fake, "webhook") as (watcher, seen),
    ):
        fake.hold_webhooks()
        batches = {
            fake.create_batch(outcome=outcome): outcome
            for outcome in ("completed", "expired", "cancelled")
        }
        await until(lambda: all(fake.job(b)["status"] == o for b, o in batches.items()))
        fake.release_webhooks(reverse=True)
        await until(lambda: all(finals(seen, b) for b in batches))
        await until(lambda: len(fake.deliveries()) >= 6)
        await anyio.sleep(0.2)
        stats = watcher.statistics().transports["webhook"]
    assert {b: [e.kind.value for e in finals(seen, b)] for b in batches} == {
        b: [{"expired": "failed"}.get(o, o)] for b, o in batches.items()
    }
    assert stats["duplicates"] >= 3


async def test_openai_forged_deliveries_are_refused_until_signed() -> None:
    async with (
        running_fake(
            OpenAIBatchFake(time_scale=100, faults=FakeFaults(webhook_forge_p=1.0))
        ) as fake,
        watching(fake, "webhook") as (watcher, seen),
    ):
        batch_id = fake.create_batch()
        await until(lambda: counter(watcher, "webhook", "rejected") >= 1)
        assert seen == []
        fake.set_faults(FakeFaults())  # the sender's next retry is signed with the secret
        final = await watcher.wait(batch_id, timeout=20)
    assert final.kind is EventKind.COMPLETED


# -- GitHub Actions ------------------------------------------------------------------------

RUN_OUTCOMES = [
    ("success", EventKind.COMPLETED, None),
    ("skipped", EventKind.COMPLETED, None),
    ("failure", EventKind.FAILED, "failure"),
    ("timed_out", EventKind.FAILED, "timed_out"),
    ("cancelled", EventKind.CANCELLED, None),
]


@pytest.mark.parametrize("transport", ["poll", "webhook"])
@pytest.mark.parametrize(("conclusion", "kind", "error"), RUN_OUTCOMES)
async def test_github_run_outcomes(
    transport: str, conclusion: str, kind: EventKind, error: str | None
) -> None:
    async with (
        running_fake(GitHubActionsFake(time_scale=100)) as fake,
        watching(fake, transport) as (watcher, seen),
    ):
        run_id = fake.create_run(outcome=conclusion)
        final = await watcher.wait(run_id, timeout=20)
        results = [job async for job in watcher.results(run_id)]
    assert (final.kind, final.error, final.attempt) == (kind, error, 1)
    assert len(finals(seen, run_id)) == 1
    assert sorted(job["name"] for job in results) == ["build", "test"]


@pytest.mark.parametrize("status", [403, 429])
async def test_github_secondary_limits_pause_and_never_end_a_watch(status: int) -> None:
    fake = GitHubActionsFake(
        time_scale=100, secondary_status=status, faults=FakeFaults(rate_limit_burst=1)
    )
    async with running_fake(fake), watching(fake, "poll") as (watcher, _):
        run_id = fake.create_run()
        final = await watcher.wait(run_id, timeout=30)
        stats = watcher.statistics()
    assert final.kind is EventKind.COMPLETED
    assert stats.rate_limited >= 1 and fake.fault_counts()["rate_limit_burst"] == 1


async def test_github_primary_limit_waits_for_the_reset() -> None:
    # Another client spent the hour's budget; an hour of the fake's time is two real seconds.
    fake = GitHubActionsFake(time_scale=1800, rate_limit=2)
    steps = [
        FakeStep(status="in_progress"),
        FakeStep(delay=3600, status="completed", fields={"conclusion": "success"}),
    ]
    async with running_fake(fake):
        run_id = fake.create_run(steps=steps)
        async with httpx.AsyncClient(
            base_url=fake.base_url, headers={"authorization": f"Bearer {fake.api_key}"}
        ) as other:
            spent = [
                (await other.get(f"/repos/{fake.repository}/actions/runs/{run_id}")).status_code
                for _ in range(3)
            ]
        async with watching(fake, "poll") as (watcher, _):
            final = await watcher.wait(run_id, timeout=30)
            limited = watcher.statistics().rate_limited
    assert spent[-1] == 403
    assert final.kind is EventKind.COMPLETED and limited >= 1


async def test_github_a_late_attempt_one_completion_never_ends_attempt_two() -> None:
    async with (
        running_fake(GitHubActionsFake(time_scale=100)) as fake,
        watching(fake, "webhook") as (watcher, seen),
    ):
        fake.hold_webhooks()
        run_id = fake.create_run(outcome="failure")
        await until(lambda: fake.job(run_id)["status"] == "completed")
        fake.rerun(run_id)  # attempt 2, whose requested delivery now comes first
        fake.release_webhooks(reverse=True)
        final = await watcher.wait(run_id, timeout=20)
        await anyio.sleep(0.1)
    assert (final.kind, final.attempt) == (EventKind.COMPLETED, 2)
    assert [(e.kind.value, e.attempt) for e in finals(seen, run_id)] == [("completed", 2)]
    assert all(e.attempt == 2 for e in seen if e.job_id == run_id)
    assert watcher.statistics().dropped.get("old-attempt", 0) >= 1


async def test_github_ping_and_other_repositories_are_answered_and_ignored() -> None:
    async with (
        running_fake(GitHubActionsFake(time_scale=100)) as fake,
        watching(fake, "webhook") as (watcher, seen),
    ):
        fake.ping()
        await until(lambda: counter(watcher, "webhook", "ignored") == 1)
        other = json.dumps(
            {
                "action": "completed",
                "repository": {"full_name": "else/where"},
                "workflow_run": {
                    "id": 1,
                    "status": "completed",
                    "conclusion": "success",
                    "run_attempt": 1,
                },
            }
        )
        headers = GitHubScheme([fake.webhook_secret]).sign(other.encode(), now=0)
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                watcher.bound_url("webhook") + HOOK,
                content=other,
                headers={
                    **headers,
                    "x-github-event": "workflow_run",
                    "x-github-delivery": "d-1",
                    "content-type": "application/json",
                },
            )
        run_id = fake.create_run()
        final = await watcher.wait(run_id, timeout=20)
    assert answer.status_code == 200 and answer.json()["ignored"] is True
    assert final.kind is EventKind.COMPLETED
    assert {e.job_id for e in seen} == {run_id}


async def test_github_forged_and_duplicated_deliveries() -> None:
    faults = FakeFaults(webhook_duplicate_p=1.0, webhook_forge_p=0.5)
    async with (
        running_fake(GitHubActionsFake(time_scale=100, faults=faults)) as fake,
        watching(fake, "webhook", safety_poll=1) as (watcher, seen),
    ):
        run_id = fake.create_run()
        final = await watcher.wait(run_id, timeout=20)
        await settled(fake)
        stats = watcher.statistics().transports["webhook"]
    assert final.kind is EventKind.COMPLETED and len(finals(seen, run_id)) == 1
    assert stats.get("rejected", 0) + stats.get("duplicates", 0) >= 1


# -- Replicate predictions -----------------------------------------------------------------

PREDICTION_OUTCOMES = [
    ("succeeded", EventKind.COMPLETED),
    ("failed", EventKind.FAILED),
    ("canceled", EventKind.CANCELLED),
    ("aborted", EventKind.FAILED),
]


@pytest.mark.parametrize("transport", ["poll", "webhook", "sse"])
@pytest.mark.parametrize(("outcome", "kind"), PREDICTION_OUTCOMES)
async def test_replicate_outcomes(transport: str, outcome: str, kind: EventKind) -> None:
    # Slower for the stream: it is open before the prediction ends, and reports the end.
    scale = 10 if transport == "sse" else 100
    async with (
        running_fake(ReplicateFake(time_scale=scale)) as fake,
        watching(fake, transport) as (watcher, seen),
    ):
        hook = hook_url(watcher) if transport == "webhook" else None
        prediction_id = fake.create_prediction(outcome=outcome, webhook=hook)
        final = await watcher.wait(prediction_id, timeout=20)
        output = [item async for item in watcher.results(prediction_id)]
    assert final.kind is kind and len(finals(seen, prediction_id)) == 1
    if kind is EventKind.FAILED:
        assert final.error
    if transport == "sse":
        assert final.source == "sse"
    if outcome == "succeeded":
        assert "".join(item["value"] for item in output) == "Hello, world"


async def test_replicate_aborted_ends_as_failed_by_poll() -> None:
    async with (
        running_fake(ReplicateFake(time_scale=100)) as fake,
        watching(fake, "poll") as (watcher, _),
    ):
        prediction_id = fake.create_prediction(outcome="aborted")
        final = await watcher.wait(prediction_id, timeout=20)
    assert (final.kind, final.status, final.error) == (
        EventKind.FAILED,
        jobwatch.JobStatus.FAILED,
        "aborted",
    )


async def test_replicate_a_cut_stream_is_reconnected() -> None:
    fake = ReplicateFake(time_scale=20, faults=FakeFaults(stream_cut_after=2))
    async with running_fake(fake), watching(fake, "sse") as (watcher, seen):
        prediction_id = fake.create_prediction(output=[str(n) for n in range(8)])
        final = await watcher.wait(prediction_id, timeout=20)
        stats = watcher.statistics().transports["sse"]
    assert final.kind is EventKind.COMPLETED and len(finals(seen, prediction_id)) == 1
    assert stats["reconnects"] >= 1 and fake.fault_counts()["stream_cut_after"] >= 1


async def test_replicate_without_a_stream_falls_back_to_polling() -> None:
    async with (
        running_fake(ReplicateFake(time_scale=100)) as fake,
        watching(fake, "sse", sse={"fallback_interval": 0.1}) as (watcher, _),
    ):
        prediction_id = fake.create_prediction(stream=False)
        final = await watcher.wait(prediction_id, timeout=20)
    assert final.kind is EventKind.COMPLETED and final.source == "poll"


async def test_replicate_forged_and_duplicated_deliveries() -> None:
    faults = FakeFaults(webhook_duplicate_p=1.0, webhook_forge_p=0.3)
    async with (
        running_fake(ReplicateFake(time_scale=100, faults=faults)) as fake,
        watching(fake, "webhook") as (watcher, seen),
    ):
        prediction_id = fake.create_prediction(webhook=hook_url(watcher))
        final = await watcher.wait(prediction_id, timeout=20)
        await settled(fake)
        stats = watcher.statistics().transports["webhook"]
    assert final.kind is EventKind.COMPLETED and len(finals(seen, prediction_id)) == 1
    assert stats.get("duplicates", 0) >= 1


async def test_results_a_job_names_twice_are_read_once() -> None:
    # One file named as a batch's output and as its errors: its lines once, and no "repeats a
    # page already read" error (which is for an API that ignores its own cursor).
    asked: list[str] = []

    async def api(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/v1/batches/batch_1":
            data = {
                "id": "batch_1",
                "status": "completed",
                "output_file_id": "file-1",
                "error_file_id": "file-1",
                "request_counts": {"total": 1, "completed": 1, "failed": 0},
            }
            return httpx.Response(200, json=data)
        return httpx.Response(200, content=b'{"custom_id": "request-1"}\n')

    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"provider": "openai-batch", "api_key": "sk-test", "transport": "poll"}},
        environ={},
    )
    async with jobwatch.Watcher(config, http_transport=httpx.MockTransport(api)) as watcher:
        lines = [line async for line in watcher.results("batch_1")]
    assert lines == [{"custom_id": "request-1"}]
    assert asked == ["/v1/batches/batch_1", "/v1/files/file-1/content"]
