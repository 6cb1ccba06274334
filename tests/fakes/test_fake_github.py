"""The GitHub Actions fake: status + conclusion, attempts, jobs with Link paging, primary and
secondary rate limits, ``workflow_run`` webhooks signed as GitHub signs them, no retries."""

from __future__ import annotations

import email.utils
import json
import re
from urllib.parse import parse_qsl

import httpx
import pytest
from _fake_support import Receiver, client, verify
from hypothesis import given
from hypothesis import strategies as st

from jobwatch import WebhookVerificationError
from jobwatch._fakes._http import Reply, Request
from jobwatch.sim import ManualClock
from jobwatch.testing import FakeFaults, FakeStep, GitHubActionsFake, running_fake

pytestmark = pytest.mark.anyio

RUNS = "/repos/octo-org/octo-repo/actions/runs"
VERSION = {"x-github-api-version": "2022-11-28", "accept": "application/vnd.github+json"}
CONCLUSIONS = [
    "success",
    "failure",
    "neutral",
    "cancelled",
    "skipped",
    "timed_out",
    "action_required",
    "stale",
    "startup_failure",
]


def gh(fake: GitHubActionsFake, token: str | None = None) -> httpx.AsyncClient:
    return client(fake.base_url, token or fake.api_key, **VERSION)


async def test_status_then_conclusion(clock: ManualClock) -> None:
    async with running_fake(GitHubActionsFake(clock=clock)) as fake, gh(fake) as http:
        run_id = fake.create_run(
            outcome="failure",
            steps=[
                FakeStep(status="pending"),
                FakeStep(status="in_progress"),
                FakeStep(status="completed"),  # the conclusion is written a moment later
                FakeStep(fields={"conclusion": "failure"}),
            ],
        )
        seen = []
        for _ in range(5):
            run = (await http.get(f"{RUNS}/{run_id}")).json()
            seen.append((run["status"], run["conclusion"]))
            clock.advance(1)
    assert seen == [
        ("queued", None),
        ("pending", None),
        ("in_progress", None),
        ("completed", None),
        ("completed", "failure"),
    ]
    assert run["id"] == int(run_id) and run["run_attempt"] == 1
    assert run["url"].endswith(f"{RUNS}/{run_id}") and run["repository"]["full_name"]


@pytest.mark.parametrize("conclusion", CONCLUSIONS)
def test_every_conclusion_of_the_default_timeline(clock: ManualClock, conclusion: str) -> None:
    fake = GitHubActionsFake(clock=clock)
    run_id = fake.create_run(outcome=conclusion)
    clock.advance(60)
    run = fake.job(run_id)
    assert (run["status"], run["conclusion"]) == ("completed", conclusion)


async def test_jobs_are_paged_with_link_headers(clock: ManualClock) -> None:
    async with running_fake(GitHubActionsFake(clock=clock)) as fake, gh(fake) as http:
        run_id = fake.create_run(jobs=["lint", "build", "test", "deploy", "docs"])
        clock.advance(60)
        names, url, pages = [], f"{RUNS}/{run_id}/jobs?per_page=2", 0
        while url:
            answer = await http.get(url)
            names += [job["name"] for job in answer.json()["jobs"]]
            assert answer.json()["total_count"] == 5
            found = re.search(r'<([^>]+)>; rel="next"', answer.headers.get("link", ""))
            url, pages = (found[1] if found else ""), pages + 1
    assert (names, pages) == (["lint", "build", "test", "deploy", "docs"], 3)


def test_steps_move_one_job_and_the_rest_follow_the_run(clock: ManualClock) -> None:
    fake = GitHubActionsFake(clock=clock)
    run_id = fake.create_run(
        jobs=["build", "test"],
        steps=[
            FakeStep(status="in_progress"),
            FakeStep(job="build", status="completed", fields={"conclusion": "failure"}),
            FakeStep(status="completed", fields={"conclusion": "failure"}),
        ],
    )
    clock.advance(2)
    jobs = {job["name"]: job for job in fake._jobs[run_id][-1]}
    assert (jobs["build"]["status"], jobs["test"]["status"]) == ("completed", "in_progress")
    clock.advance(1)
    assert jobs["test"]["conclusion"] == "failure" and jobs["test"]["completed_at"]


async def test_a_rerun_is_a_new_attempt_of_the_same_run(clock: ManualClock) -> None:
    async with running_fake(GitHubActionsFake(clock=clock)) as fake, gh(fake) as http:
        run_id = fake.create_run(outcome="failure")
        with pytest.raises(ValueError, match="only a completed run"):
            fake.rerun(run_id)
        clock.advance(60)
        assert fake.rerun(run_id) == 2
        again = (await http.get(f"{RUNS}/{run_id}")).json()
        clock.advance(60)
        done = (await http.get(f"{RUNS}/{run_id}")).json()
        latest = (await http.get(f"{RUNS}/{run_id}/jobs")).json()
        every = (await http.get(f"{RUNS}/{run_id}/jobs?filter=all")).json()
    assert (again["status"], again["conclusion"], again["run_attempt"]) == ("queued", None, 2)
    assert (done["conclusion"], done["run_attempt"]) == ("success", 2)
    assert {job["run_attempt"] for job in latest["jobs"]} == {2}
    assert sorted(job["run_attempt"] for job in every["jobs"]) == [1, 1, 2, 2]


async def test_credentials_version_and_repository(clock: ManualClock) -> None:
    async with running_fake(GitHubActionsFake(clock=clock)) as fake, gh(fake) as http:
        run_id = fake.create_run()
        wrong = await http.get(f"{RUNS}/{run_id}", headers={"authorization": "Bearer nope"})
        token = await http.get(f"{RUNS}/{run_id}", headers={"authorization": "token ghp_fake"})
        version = await http.get(f"{RUNS}/{run_id}", headers={"x-github-api-version": "1999"})
        elsewhere = await http.get(f"/repos/octo-org/other/actions/runs/{run_id}")
        escaped = await http.get(f"{RUNS}/{run_id}%2Fjobs")
    assert (wrong.status_code, wrong.json()["message"]) == (401, "Bad credentials")
    assert token.status_code == 200
    assert version.status_code == 400 and "2022-11-28" in version.json()["message"]
    assert elsewhere.status_code == escaped.status_code == 404
    assert set(elsewhere.json()) == {"message", "documentation_url", "status"}


async def test_the_primary_limit_is_a_403_until_the_reset(clock: ManualClock) -> None:
    async with running_fake(GitHubActionsFake(clock=clock, rate_limit=2)) as fake, gh(fake) as http:
        run_id = fake.create_run()
        answers = [await http.get(f"{RUNS}/{run_id}") for _ in range(3)]
        clock.advance(3600)
        again = await http.get(f"{RUNS}/{run_id}")
    assert [a.status_code for a in answers] == [200, 200, 403]
    limited = answers[2]
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert "rate limit exceeded" in limited.json()["message"]
    date = email.utils.parsedate_to_datetime(limited.headers["date"]).timestamp()
    assert 3590 <= int(limited.headers["x-ratelimit-reset"]) - date <= 3610
    assert [a.headers["x-ratelimit-remaining"] for a in answers[:2]] == ["1", "0"]
    assert again.status_code == 200 and again.headers["x-ratelimit-used"] == "1"


@pytest.mark.parametrize("status", [403, 429])
async def test_the_secondary_limit_says_retry_after(clock: ManualClock, status: int) -> None:
    fake = GitHubActionsFake(clock=clock, secondary_rpm=1, secondary_status=status)
    async with running_fake(fake), gh(fake) as http:
        run_id = fake.create_run()
        first, second = [await http.get(f"{RUNS}/{run_id}") for _ in range(2)]
    assert (first.status_code, second.status_code) == (200, status)
    assert second.headers["retry-after"] == "60"
    assert "secondary rate limit" in second.json()["message"]
    assert second.headers["x-ratelimit-remaining"] != "0"  # not the primary limit


async def test_workflow_run_webhooks_are_signed_as_github_signs_them(
    clock: ManualClock, receiver: Receiver
) -> None:
    fake = GitHubActionsFake(clock=clock, webhook_url=receiver.url)
    async with running_fake(fake):
        fake.ping()
        run_id = fake.create_run(outcome="timed_out")
        clock.advance(60)
        received = await receiver.wait(4)
    for delivery in received:
        verify("github", fake.webhook_secret, delivery)
        assert re.fullmatch(r"[0-9a-f-]{36}", delivery.headers["x-github-delivery"])
    events = [(r.headers["x-github-event"], json.loads(r.body).get("action")) for r in received]
    assert events == [
        ("ping", None),
        ("workflow_run", "requested"),
        ("workflow_run", "in_progress"),
        ("workflow_run", "completed"),
    ]
    last = json.loads(received[-1].body)
    assert last["workflow_run"]["id"] == int(run_id)
    assert last["workflow_run"]["conclusion"] == "timed_out"
    assert last["repository"]["full_name"] == "octo-org/octo-repo"


async def test_a_failed_delivery_is_not_retried_but_can_be_redelivered(
    clock: ManualClock, receiver: Receiver
) -> None:
    receiver.answers = [500]
    fake = GitHubActionsFake(clock=clock, webhook_url=receiver.url)
    async with running_fake(fake):
        fake.create_run(steps=[])  # stays queued: `requested` is the only delivery
        await fake.delivered(1)
        clock.advance(3600)  # nothing is retried, however long one waits
        fake.redeliver(fake.deliveries()[0].id)
        made = await fake.delivered(2)
        received = await receiver.wait(2)
    assert [(d.attempt, d.status_code) for d in made[:2]] == [(1, 500), (1, 204)]
    assert received[0].body == received[1].body
    assert received[0].headers["x-github-delivery"] == received[1].headers["x-github-delivery"]


async def test_a_late_attempt_one_completion_arrives_after_attempt_two_began(
    clock: ManualClock, receiver: Receiver
) -> None:
    fake = GitHubActionsFake(clock=clock, webhook_url=receiver.url)
    async with running_fake(fake):
        run_id = fake.create_run(outcome="failure")
        await receiver.wait(1)
        fake.hold_webhooks()
        clock.advance(60)
        fake.rerun(run_id)
        fake.release_webhooks(reverse=True)
        received = await receiver.wait(4)
    order = [
        (json.loads(r.body)["action"], json.loads(r.body)["workflow_run"]["run_attempt"])
        for r in received
    ]
    assert order == [("requested", 1), ("requested", 2), ("completed", 1), ("in_progress", 1)]


async def test_forged_and_duplicated_deliveries(clock: ManualClock, receiver: Receiver) -> None:
    faults = FakeFaults(webhook_forge_p=1.0, webhook_duplicate_p=1.0)
    fake = GitHubActionsFake(clock=clock, webhook_url=receiver.url, faults=faults)
    async with running_fake(fake):
        fake.create_run()
        first, second = await receiver.wait(2)
    assert first == second
    with pytest.raises(WebhookVerificationError):
        verify("github", fake.webhook_secret, first)


@given(jobs=st.integers(0, 12), per_page=st.integers(1, 5))
def test_following_next_links_yields_every_job_once(jobs: int, per_page: int) -> None:
    fake = GitHubActionsFake(clock=ManualClock())
    run_id = fake.create_run(jobs=[f"job{n}" for n in range(jobs)])
    seen, url = [], f"{RUNS}/{run_id}/jobs?per_page={per_page}"
    while url:
        path, _, query = url.partition("?")
        reply = fake.handle(request(path, query))
        assert isinstance(reply, Reply) and reply.status == 200
        seen += [job["name"] for job in reply.body["jobs"]]
        found = re.search(r'<http://fake([^>]+)>; rel="next"', reply.headers.get("link", ""))
        url = found[1] if found else ""
    assert seen == [f"job{n}" for n in range(jobs)]


def request(path: str, query: str = "") -> Request:
    return Request(
        method="GET",
        path=path,
        query=dict(parse_qsl(query)),
        headers={"authorization": "Bearer ghp_fake"},
        base_url="http://fake",
    )


async def test_the_reset_is_measured_by_the_date_whatever_the_epoch(clock: ManualClock) -> None:
    # x-ratelimit-reset is a Unix time on the server's clock, the clock of its Date header.
    fake = GitHubActionsFake(clock=clock, rate_limit=1, epoch=1_600_000_000.0)
    async with running_fake(fake), gh(fake) as http:
        run_id = fake.create_run()
        answers = [await http.get(f"{RUNS}/{run_id}") for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 403]
    date = email.utils.parsedate_to_datetime(answers[1].headers["date"]).timestamp()
    assert 3590 <= int(answers[1].headers["x-ratelimit-reset"]) - date <= 3610
    assert answers[0].json()["created_at"].startswith("2020-09-13T")
