"""What every fake shares: seeds, the clock, validation, config(), the router under arbitrary
job ids, and the pytest fixtures."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from _fake_support import Receiver, client
from hypothesis import given
from hypothesis import strategies as st

import jobwatch
from jobwatch._fakes._fake_api import FakeAPI
from jobwatch._fakes._http import Reply, Request
from jobwatch._registry import installed
from jobwatch.sim import ManualClock
from jobwatch.testing import (
    FakeFaults,
    FakeStep,
    GitHubActionsFake,
    OpenAIBatchFake,
    ReplicateFake,
    running_fake,
)

#: Each fake class; they take the same keyword arguments, all with defaults (FakeAPI's have none).
Fake = OpenAIBatchFake | GitHubActionsFake | ReplicateFake
FAKES: list[type[Fake]] = [OpenAIBatchFake, GitHubActionsFake, ReplicateFake]
#: The status route of each fake, with {} where the job id goes.
ROUTES = {
    OpenAIBatchFake: ("/v1/batches/{}", "GET /v1/batches/{batch_id}"),
    GitHubActionsFake: (
        "/repos/octo-org/octo-repo/actions/runs/{}",
        "GET /repos/{owner}/{repo}/actions/runs/{run_id}",
    ),
    ReplicateFake: ("/v1/predictions/{}", "GET /v1/predictions/{prediction_id}"),
}


def create(fake: FakeAPI, **options: Any) -> str:
    if isinstance(fake, OpenAIBatchFake):
        return fake.create_batch(**options)
    if isinstance(fake, GitHubActionsFake):
        return fake.create_run(**options)
    assert isinstance(fake, ReplicateFake)
    return fake.create_prediction(**options)


@pytest.mark.parametrize("kind", FAKES)
def test_the_seed_decides_ids_and_secrets(kind: type[Fake]) -> None:
    one, same, other = kind(seed=1), kind(seed=1), kind(seed=2)
    assert create(one) == create(same) != create(other)
    assert one.webhook_secret == same.webhook_secret != other.webhook_secret


@pytest.mark.parametrize("kind", FAKES)
def test_misuse_is_a_clear_error(kind: type[Fake]) -> None:
    fake = kind()
    with pytest.raises(RuntimeError, match="running_fake"):
        fake.base_url  # noqa: B018
    with pytest.raises(RuntimeError, match="ManualClock"):
        fake.advance(1)
    with pytest.raises(ValueError, match="time_scale"):
        kind(time_scale=0)
    with pytest.raises(ValueError, match="outcome must be one of"):
        create(fake, outcome="done")
    with pytest.raises(KeyError, match="no job 'nope'"):
        fake.job("nope")


def test_steps_and_faults_are_checked() -> None:
    with pytest.raises(ValueError, match="delay"):
        FakeStep(delay=-1)
    with pytest.raises(ValueError, match="webhook_forge_p"):
        FakeFaults(webhook_forge_p=1.5)
    with pytest.raises(ValueError, match="stream_cut_after"):
        FakeFaults(stream_cut_after=-1)


def test_a_step_the_api_cannot_take_is_refused_before_anything_runs() -> None:
    openai, github, replicate = OpenAIBatchFake(), GitHubActionsFake(), ReplicateFake()
    with pytest.raises(
        ValueError,
        match=r"steps\[1\]: 'done' is no openai-batch status; "
        "the statuses are validating, in_progress",
    ):
        openai.create_batch(steps=[FakeStep(status="in_progress"), FakeStep(status="done")])
    with pytest.raises(ValueError, match="the replicate fake takes no job= in a step"):
        replicate.create_prediction(steps=[FakeStep(job="build")])
    with pytest.raises(ValueError, match="the github-actions fake takes no output="):
        github.create_run(steps=[FakeStep(output="x")])
    with pytest.raises(ValueError, match="the run has no job 'deploy'; its jobs are build"):
        github.create_run(jobs=["build"], steps=[FakeStep(job="deploy")])
    assert not openai._timelines and not github._timelines and not github._jobs
    assert openai.create_batch() == OpenAIBatchFake().create_batch()  # no id was spent
    clock = ManualClock()
    github = GitHubActionsFake(clock=clock)
    run_id = github.create_run()
    clock.advance(60)
    with pytest.raises(ValueError, match="no github-actions status"):
        github.rerun(run_id, steps=[FakeStep(status="restarted")])
    assert github.job(run_id)["run_attempt"] == 1  # nothing changed


def test_steps_of_several_jobs_run_in_time_order() -> None:
    clock = ManualClock()
    fake = GitHubActionsFake(clock=clock)
    slow = fake.create_run(steps=[FakeStep(delay=10, status="in_progress")])
    clock.advance(4)
    quick = fake.create_run(
        steps=[
            FakeStep(delay=1, status="in_progress"),
            FakeStep(delay=10, status="completed", fields={"conclusion": "success"}),
        ]
    )
    clock.advance(30)  # one advance: slow at 10, quick at 5 and 15
    assert fake.job(slow)["updated_at"] < fake.job(quick)["updated_at"]
    assert fake.job(quick)["status"] == "completed"
    assert fake.steps_left(slow) == fake.steps_left(quick) == 0


@pytest.mark.anyio
async def test_config_watches_the_fake_with_its_provider() -> None:
    async with running_fake(GitHubActionsFake(repository="me/mine")) as fake:
        document = fake.config(transport="poll", webhook={"path": "/hooks/gh"})
        base_url = fake.base_url
    assert document == {
        "jobwatch": {
            "provider": "github-actions",
            "base_url": base_url,
            "api_key": "ghp_fake",
            "store": "memory",
            "transport": "poll",
            "github-actions": {"repository": "me/mine"},
            "webhook": {"secrets": [fake.webhook_secret], "path": "/hooks/gh"},
        }
    }


@pytest.mark.anyio
@pytest.mark.parametrize("kind", [OpenAIBatchFake, ReplicateFake])
async def test_the_base_url_carries_the_api_prefix(kind: type[Fake]) -> None:
    async with running_fake(kind(clock=ManualClock())) as fake:
        assert fake.base_url == f"{fake.url}/v1"
        job_id = create(fake)
        path = ROUTES[kind][0].format(job_id).removeprefix("/v1")
        async with client(fake.base_url, fake.api_key) as http:
            assert (await http.get(path)).status_code == 200


@given(job_id=st.text(max_size=30))
@pytest.mark.parametrize("kind", FAKES)
def test_no_job_id_changes_the_route(kind: type[Fake], job_id: str) -> None:
    fake = kind(clock=ManualClock())
    template, endpoint = ROUTES[kind]
    reply = fake.handle(
        Request(
            method="GET",
            path=template.format(quote(job_id, safe="")),
            query={},
            headers={"authorization": f"Bearer {fake.api_key}"},
            base_url="http://fake",
        )
    )
    assert isinstance(reply, Reply) and reply.status == 404
    json.dumps(reply.body)  # the API's envelope, serialisable
    expected = endpoint if job_id else "GET ?"
    assert fake.request_counts().by_endpoint == {expected: 1}


# -- the pytest fixtures, as a user's tests get them -------------------------------------


@pytest.mark.anyio
async def test_the_openai_fixture(openai_fake: OpenAIBatchFake, receiver: Receiver) -> None:
    openai_fake.webhook_url = receiver.url
    batch_id = openai_fake.create_batch(outcome="expired")  # 3 simulated s: 30 ms
    (delivery,) = await receiver.wait(1)
    assert json.loads(delivery.body) | {"id": "", "created_at": 0} == {
        "object": "event",
        "id": "",
        "type": "batch.expired",
        "created_at": 0,
        "data": {"id": batch_id},
    }


@pytest.mark.anyio
@pytest.mark.parametrize("github_fake", [{"repository": "acme/rockets"}], indirect=True)
async def test_the_github_fixture_takes_options(github_fake: GitHubActionsFake) -> None:
    run_id = github_fake.create_run()
    async with client(github_fake.base_url, github_fake.api_key) as http:
        answer = await http.get(f"/repos/acme/rockets/actions/runs/{run_id}")
    assert answer.status_code == 200


@pytest.fixture
def replicate_fake_options() -> dict[str, Any]:
    return {"time_scale": 1000.0, "seed": 3}


@pytest.mark.anyio
async def test_the_replicate_fixture_runs_in_scaled_time(
    replicate_fake: ReplicateFake, receiver: Receiver
) -> None:
    prediction_id = replicate_fake.create_prediction(
        webhook=receiver.url, webhook_events_filter=["completed"]
    )
    with anyio.fail_after(5):
        (delivery,) = await receiver.wait(1)
    assert json.loads(delivery.body)["id"] == prediction_id
    assert replicate_fake.time_scale == 1000.0


@pytest.mark.anyio
@pytest.mark.skipif(
    "github-actions" not in installed("provider"),
    reason="the github-actions provider is not installed yet",
)
async def test_the_fixture_example_of_the_docs(github_fake: GitHubActionsFake) -> None:
    # docs/fakes.md, "In pytest", as written there
    run_id = github_fake.create_run(outcome="timed_out")
    config = jobwatch.Config.from_mapping(github_fake.config(transport="poll"))
    async with jobwatch.Watcher(config) as watcher:
        final = await watcher.wait(run_id, timeout=30)
    assert (final.kind, final.error) == ("failed", "timed_out")
