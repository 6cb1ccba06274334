"""The OpenAI Batch fake: lifecycle, auth, errors, rate limits, signed account webhooks."""

from __future__ import annotations

import json

import pytest
from _fake_support import Receiver, client, verify

from jobwatch import WebhookVerificationError
from jobwatch.sim import ManualClock
from jobwatch.testing import FakeFaults, FakeStep, OpenAIBatchFake, running_fake

pytestmark = pytest.mark.anyio


async def test_a_batch_moves_through_its_statuses_with_counts(clock: ManualClock) -> None:
    async with running_fake(OpenAIBatchFake(clock=clock)) as fake:
        batch_id = fake.create_batch(total=4, failed=1)
        seen = []
        async with client(fake.base_url, fake.api_key) as http:
            for _ in range(7):
                batch = (await http.get(f"/batches/{batch_id}")).json()
                seen.append((batch["status"], batch["request_counts"]))
                clock.advance(1)
    assert seen == [
        ("validating", {"total": 0, "completed": 0, "failed": 0}),
        ("in_progress", {"total": 4, "completed": 0, "failed": 0}),
        ("in_progress", {"total": 4, "completed": 1, "failed": 1}),
        ("in_progress", {"total": 4, "completed": 3, "failed": 1}),
        ("finalizing", {"total": 4, "completed": 3, "failed": 1}),
        ("completed", {"total": 4, "completed": 3, "failed": 1}),
        ("completed", {"total": 4, "completed": 3, "failed": 1}),
    ]
    batch = fake.job(batch_id)
    assert batch["output_file_id"] and batch["error_file_id"]
    assert batch["in_progress_at"] < batch["completed_at"]


@pytest.mark.parametrize("outcome", ["completed", "failed", "expired", "cancelled"])
def test_every_outcome_of_the_default_timeline(clock: ManualClock, outcome: str) -> None:
    fake = OpenAIBatchFake(clock=clock)
    batch_id = fake.create_batch(outcome=outcome)
    clock.advance(60)
    batch = fake.job(batch_id)
    assert batch["status"] == outcome
    assert batch[f"{outcome}_at"] is not None
    if outcome == "failed":
        assert batch["errors"]["data"][0]["code"] == "invalid_json_line"


def test_a_scripted_timeline_and_a_cancel(clock: ManualClock) -> None:
    fake = OpenAIBatchFake(clock=clock)
    batch_id = fake.create_batch(
        steps=[
            FakeStep(delay=5, status="in_progress", fields={"request_counts": {"total": 3}}),
            FakeStep(delay=3600, status="finalizing"),
        ]
    )
    clock.advance(10)
    assert fake.job(batch_id)["status"] == "in_progress"
    fake.cancel(batch_id)
    assert fake.job(batch_id)["status"] == "cancelling"
    clock.advance(2)
    assert fake.job(batch_id)["status"] == "cancelled"
    assert fake.steps_left(batch_id) == 0


async def test_a_wrong_or_missing_key_is_401_in_openais_envelope(clock: ManualClock) -> None:
    async with running_fake(OpenAIBatchFake(clock=clock)) as fake:
        batch_id = fake.create_batch()
        async with client(fake.base_url, "sk-someone-elses-key") as http:
            wrong = await http.get(f"/batches/{batch_id}")
            missing = await http.get(f"/batches/{batch_id}", headers={"authorization": ""})
    assert wrong.status_code == missing.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "someone" not in wrong.text  # the key is masked, as OpenAI does
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert fake.request_counts().by_api_key["sk-someone-elses-key"] == 1


async def test_an_unknown_batch_and_an_id_with_a_slash_are_404(clock: ManualClock) -> None:
    async with (
        running_fake(OpenAIBatchFake(clock=clock)) as fake,
        client(fake.base_url, fake.api_key) as http,
    ):
        unknown = await http.get("/batches/batch_nope")
        slashed = await http.get("/batches/a%2F..%2Fb")
    assert unknown.status_code == slashed.status_code == 404
    assert slashed.json()["error"]["message"] == "No batch found with id 'a/../b'."
    assert fake.request_counts().by_endpoint == {"GET /v1/batches/{batch_id}": 2}


async def test_past_the_rpm_a_429_says_when_to_retry(clock: ManualClock) -> None:
    async with (
        running_fake(OpenAIBatchFake(clock=clock, rpm=2)) as fake,
        client(fake.base_url, fake.api_key) as http,
    ):
        batch_id = fake.create_batch()
        answers = [await http.get(f"/batches/{batch_id}") for _ in range(3)]
        clock.advance(60)
        again = await http.get(f"/batches/{batch_id}")
    assert [a.status_code for a in answers] == [200, 200, 429]
    limited = answers[2]
    assert limited.headers["retry-after"] == "60"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-ratelimit-limit-requests"] == "2"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "1"
    assert again.status_code == 200


async def test_injected_bursts(clock: ManualClock) -> None:
    faults = FakeFaults(error_burst=1, rate_limit_burst=1)
    async with (
        running_fake(OpenAIBatchFake(clock=clock, faults=faults)) as fake,
        client(fake.base_url, fake.api_key) as http,
    ):
        batch_id = fake.create_batch()
        codes = [(await http.get(f"/batches/{batch_id}")).status_code for _ in range(3)]
    assert codes == [500, 429, 200]
    assert fake.fault_counts()["error_burst"] == fake.fault_counts()["rate_limit_burst"] == 1


async def test_terminal_batches_send_thin_signed_webhooks(
    clock: ManualClock, receiver: Receiver
) -> None:
    fake = OpenAIBatchFake(clock=clock, webhook_url=receiver.url)
    async with running_fake(fake):
        ids = {
            outcome: fake.create_batch(outcome=outcome)
            for outcome in ("completed", "failed", "expired", "cancelled")
        }
        clock.advance(60)
        received = await receiver.wait(4)
        made = await fake.delivered(4)
    events = {}
    for delivery in received:
        verify("standard-webhooks", fake.webhook_secret, delivery)
        body = json.loads(delivery.body)
        assert set(body) == {"object", "id", "type", "created_at", "data"}
        assert body["object"] == "event" and body["id"].startswith("evt_")
        events[body["type"]] = body["data"]["id"]
        assert delivery.headers["user-agent"].startswith("OpenAI/")
    assert events == {f"batch.{outcome}": batch_id for outcome, batch_id in ids.items()}
    assert [d.id for d in made] == [r.headers["webhook-id"] for r in received]


async def test_a_failed_delivery_is_retried_with_the_same_id(
    clock: ManualClock, receiver: Receiver
) -> None:
    receiver.answers = [500, 502]
    fake = OpenAIBatchFake(clock=clock, webhook_url=receiver.url, webhook_retries=(5, 30))
    async with running_fake(fake):
        fake.create_batch(outcome="failed")
        clock.advance(1)
        await fake.delivered(1)  # the retry waits from the answer, not from the request
        clock.advance(5)
        await fake.delivered(2)
        clock.advance(30)
        made = await fake.delivered(3)
        received = await receiver.wait(3)
    assert len({r.headers["webhook-id"] for r in received}) == 1
    for delivery in received:
        verify("standard-webhooks", fake.webhook_secret, delivery)
    assert [(d.attempt, d.status_code) for d in made] == [(1, 500), (2, 502), (3, 204)]


async def test_duplicated_and_forged_deliveries(clock: ManualClock, receiver: Receiver) -> None:
    faults = FakeFaults(webhook_duplicate_p=1.0)
    fake = OpenAIBatchFake(clock=clock, webhook_url=receiver.url, faults=faults)
    async with running_fake(fake):
        fake.create_batch(outcome="failed")
        clock.advance(1)
        first, second = await receiver.wait(2)
        fake.set_faults(FakeFaults(webhook_forge_p=1.0))
        fake.create_batch(outcome="failed")
        clock.advance(1)
        forged = (await receiver.wait(3))[2]
        made = await fake.delivered(3)
    assert first == second
    with pytest.raises(WebhookVerificationError) as caught:
        verify("standard-webhooks", fake.webhook_secret, forged)
    assert caught.value.status == 401
    assert [d.forged for d in made] == [False, False, True]
    assert fake.fault_counts()["webhook_forge_p"] == 1


async def test_held_deliveries_are_released_newest_first(
    clock: ManualClock, receiver: Receiver
) -> None:
    fake = OpenAIBatchFake(clock=clock, webhook_url=receiver.url)
    async with running_fake(fake):
        fake.hold_webhooks()
        first = fake.create_batch(outcome="failed")
        clock.advance(1)
        second = fake.create_batch(outcome="failed")
        clock.advance(1)
        fake.release_webhooks(reverse=True)
        received = await receiver.wait(2)
    assert [json.loads(r.body)["data"]["id"] for r in received] == [second, first]


async def test_a_stated_epoch_dates_the_payloads_not_the_signatures(
    clock: ManualClock, receiver: Receiver
) -> None:
    # OpenAI signs each delivery at the moment it sends it: a receiver checks that timestamp
    # against its own clock, whatever times the batch itself holds.
    epoch = 1_600_000_000.0
    fake = OpenAIBatchFake(clock=clock, webhook_url=receiver.url, epoch=epoch)
    async with running_fake(fake):
        batch_id = fake.create_batch()
        clock.advance(60)
        (delivery,) = await receiver.wait(1)
    verify("standard-webhooks", fake.webhook_secret, delivery)
    batch = fake.job(batch_id)
    assert batch["created_at"] == int(epoch)
    assert json.loads(delivery.body)["created_at"] == batch["completed_at"] < epoch + 60
