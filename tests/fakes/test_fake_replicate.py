"""The Replicate fake: statuses (``aborted`` too), the prediction's SSE stream with ids and
``Last-Event-ID`` resume, cut streams, webhooks whose body is the prediction."""

from __future__ import annotations

import json
from contextlib import aclosing

import anyio
import httpx
import pytest
from _fake_support import Receiver, client, verify
from httpx_sse import ServerSentEvent, aconnect_sse

from jobwatch import WebhookVerificationError
from jobwatch.sim import ManualClock
from jobwatch.testing import FakeFaults, FakeStep, ReplicateFake, running_fake

pytestmark = pytest.mark.anyio


async def read_stream(
    url: str, last_event_id: str | None = None
) -> tuple[list[ServerSentEvent], bool]:
    """The events of one connection, and whether it ended cleanly."""
    headers = {} if last_event_id is None else {"last-event-id": last_event_id}
    events: list[ServerSentEvent] = []
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            async with (
                aconnect_sse(http, "GET", url, headers=headers) as source,
                aclosing(source.aiter_sse()) as stream,
            ):
                async for event in stream:
                    events.append(event)
        except httpx.RemoteProtocolError:  # the connection was cut mid-body
            return events, False
    return events, True


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "canceled", "aborted"])
def test_every_outcome_of_the_default_timeline(clock: ManualClock, outcome: str) -> None:
    fake = ReplicateFake(clock=clock)
    prediction_id = fake.create_prediction(outcome=outcome)
    assert fake.job(prediction_id)["status"] == "starting"
    clock.advance(0.5)
    assert fake.job(prediction_id)["status"] == "processing"
    clock.advance(60)
    prediction = fake.job(prediction_id)
    assert prediction["status"] == outcome and prediction["completed_at"]
    assert prediction["output"] == ["Hello", ", ", "world"]
    assert (prediction["error"] is not None) == (outcome == "failed")
    assert prediction["logs"] == "Loading the model\n"


async def test_the_prediction_names_its_stream_and_needs_the_token(clock: ManualClock) -> None:
    async with running_fake(ReplicateFake(clock=clock)) as fake:
        streamed = fake.create_prediction()
        quiet = fake.create_prediction(stream=False)
        async with client(fake.base_url, fake.api_key) as http:
            first = (await http.get(f"/predictions/{streamed}")).json()
            second = (await http.get(f"/predictions/{quiet}")).json()
            token = await http.get(
                f"/predictions/{quiet}", headers={"authorization": f"Token {fake.api_key}"}
            )
            wrong = await http.get(f"/predictions/{quiet}", headers={"authorization": "Bearer x"})
            missing = await http.get("/predictions/nope")
        base_url = fake.base_url
    assert first["urls"]["stream"] == f"{base_url}/streams/{streamed}"
    assert first["urls"]["get"] == f"{base_url}/predictions/{streamed}"
    assert "stream" not in second["urls"]
    assert token.status_code == 200
    assert wrong.status_code == 401 and wrong.json()["title"] == "Unauthenticated"
    assert missing.status_code == 404 and missing.json()["status"] == 404


@pytest.mark.parametrize(
    ("outcome", "last"),
    [
        ("succeeded", [("done", "{}")]),
        ("canceled", [("done", '{"reason": "canceled"}')]),
        (
            "failed",
            [("error", '{"detail": "CUDA out of memory"}'), ("done", '{"reason": "error"}')],
        ),
        ("aborted", [("done", '{"reason": "error"}')]),
    ],
)
async def test_the_stream_from_start_to_done(
    clock: ManualClock, outcome: str, last: list[tuple[str, str]]
) -> None:
    async with running_fake(ReplicateFake(clock=clock)) as fake:
        prediction_id = fake.create_prediction(outcome=outcome)
        url = f"{fake.base_url}/streams/{prediction_id}"
        clock.advance(60)
        events, clean = await read_stream(url)
    assert clean
    assert [(e.event, e.data) for e in events] == [
        ("logs", "Loading the model"),
        ("output", "Hello"),
        ("output", ", "),
        ("output", "world"),
        *last,
    ]
    assert len({e.id for e in events}) == len(events)
    assert all(e.id.split(":")[0].isdigit() for e in events)


async def test_a_stream_waits_for_events_as_they_happen(clock: ManualClock) -> None:
    async with running_fake(ReplicateFake(clock=clock)) as fake:
        prediction_id = fake.create_prediction(
            steps=[
                FakeStep(status="processing", output="a"),
                FakeStep(output="b\nc"),
                FakeStep(status="succeeded"),
            ]
        )
        url = f"{fake.base_url}/streams/{prediction_id}"
        async with (
            httpx.AsyncClient(timeout=10) as http,
            aconnect_sse(http, "GET", url) as source,
            aclosing(source.aiter_sse()) as events,
        ):
            clock.advance(1)
            assert (await anext(events)).data == "a"
            clock.advance(1)
            assert (await anext(events)).data == "b\nc"
            clock.advance(1)
            assert (await anext(events)).event == "done"
            assert [event async for event in events] == []  # and the stream ends


async def test_a_cut_stream_resumes_after_the_last_event_id(clock: ManualClock) -> None:
    faults = FakeFaults(stream_cut_after=2)
    async with running_fake(ReplicateFake(clock=clock, faults=faults)) as fake:
        prediction_id = fake.create_prediction(output=["1", "2", "3", "4"])
        url = f"{fake.base_url}/streams/{prediction_id}"
        clock.advance(60)
        whole: list[ServerSentEvent] = []
        connections = []
        clean = False
        while not clean:
            events, clean = await read_stream(url, whole[-1].id if whole else None)
            whole += events
            connections.append(len(events))
    assert connections == [2, 2, 2]
    assert [e.data for e in whole] == ["Loading the model", "1", "2", "3", "4", "{}"]
    assert len({e.id for e in whole}) == 6
    assert fake.fault_counts()["stream_cut_after"] == 2


async def test_webhooks_carry_the_prediction_and_only_the_last_is_retried(
    clock: ManualClock, receiver: Receiver
) -> None:
    receiver.answers = [500, 500, 500, 500]  # start and the three outputs fail
    fake = ReplicateFake(clock=clock, webhook_retries=(2,))
    async with running_fake(fake):
        prediction_id = fake.create_prediction(
            webhook=receiver.url, webhook_events_filter=["start", "output", "completed"]
        )
        clock.advance(60)
        await fake.delivered(5)
        clock.advance(60)  # time enough for any retry
        received = await receiver.wait(5)
        made = fake.deliveries()
    assert [d.event for d in made] == ["start", "output", "output", "output", "completed"]
    assert [d.status_code for d in made] == [500, 500, 500, 500, 204]
    for delivery in received:
        verify("standard-webhooks", fake.webhook_secret, delivery)
        assert json.loads(delivery.body)["id"] == prediction_id
    assert json.loads(received[0].body)["status"] == "starting"
    final = json.loads(received[-1].body)
    assert final["status"] == "succeeded" and final["output"] == ["Hello", ", ", "world"]
    assert final["urls"]["stream"].endswith(prediction_id)


async def test_output_and_logs_deliveries_leave_at_most_once_every_500_ms(
    clock: ManualClock, receiver: Receiver
) -> None:
    # Ten chunks of output and a line of logs 0.1 s apart: Replicate throttles these
    # deliveries, and each one that leaves carries the prediction as it is then.
    steps = [FakeStep(delay=0.5, status="processing")]
    steps += [FakeStep(delay=0.1, output=str(n)) for n in range(10)]
    steps += [FakeStep(delay=0.1, logs="done"), FakeStep(delay=0.4, status="succeeded")]
    fake = ReplicateFake(clock=clock)
    async with running_fake(fake):
        fake.create_prediction(webhook=receiver.url, steps=steps)
        for _ in range(60):
            clock.advance(0.05)
        made = await fake.delivered(1)
        while made[-1].event != "completed":
            made = await fake.delivered(len(made) + 1)
    throttled = [d for d in made if d.event in ("output", "logs")]
    assert [d.event for d in made][0] == "start" and len(throttled) == 3
    # They left at 0.6 s (the first chunk), 1.1 s (the sixth) and 1.6 s (the tenth).
    outputs = [json.loads(d.body)["output"] for d in throttled]
    assert outputs == [[str(n) for n in range(count)] for count in (1, 6, 10)]
    final = json.loads(made[-1].body)
    assert final["output"] == [str(n) for n in range(10)] and final["logs"] == "done\n"


async def test_a_webhook_without_completed_still_gets_the_last_output(
    clock: ManualClock, receiver: Receiver
) -> None:
    steps = [FakeStep(delay=0.5, status="processing")]
    steps += [FakeStep(delay=0.1, output=str(n)) for n in range(3)]
    steps += [FakeStep(delay=0.1, status="succeeded")]
    fake = ReplicateFake(clock=clock)
    async with running_fake(fake):
        fake.create_prediction(webhook=receiver.url, steps=steps, webhook_events_filter=["output"])
        for _ in range(30):
            clock.advance(0.05)
        with anyio.fail_after(10):
            made = await fake.delivered(2)
    assert [json.loads(d.body)["output"] for d in made] == [["0"], ["0", "1", "2"]]


async def test_a_failed_final_delivery_is_retried_with_the_same_webhook_id(
    clock: ManualClock, receiver: Receiver
) -> None:
    fake = ReplicateFake(clock=clock, webhook_retries=(2, 4))
    async with running_fake(fake):
        fake.create_prediction(
            webhook=receiver.url, webhook_events_filter=["completed"], outcome="aborted"
        )
        receiver.answers = [500]
        clock.advance(60)
        await fake.delivered(1)
        clock.advance(2)
        made = await fake.delivered(2)
        received = await receiver.wait(2)
    assert [(d.attempt, d.status_code) for d in made] == [(1, 500), (2, 204)]
    assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"] == made[0].id
    assert json.loads(received[1].body)["status"] == "aborted"


async def test_forged_deliveries_fail_verification(clock: ManualClock, receiver: Receiver) -> None:
    fake = ReplicateFake(clock=clock, faults=FakeFaults(webhook_forge_p=1.0))
    async with running_fake(fake):
        fake.create_prediction(webhook=receiver.url, webhook_events_filter=["start"])
        (forged,) = await receiver.wait(1)
    with pytest.raises(WebhookVerificationError):
        verify("standard-webhooks", fake.webhook_secret, forged)


async def test_past_the_rpm_a_429(clock: ManualClock) -> None:
    async with (
        running_fake(ReplicateFake(clock=clock, rpm=1)) as fake,
        client(fake.base_url, fake.api_key) as http,
    ):
        prediction_id = fake.create_prediction()
        first, second = [await http.get(f"/predictions/{prediction_id}") for _ in range(2)]
    assert (first.status_code, second.status_code) == (200, 429)
    assert second.headers["retry-after"] == "60"
    assert second.json()["title"] == "Too Many Requests"


def test_unknown_webhook_events_and_outcomes_are_refused(clock: ManualClock) -> None:
    fake = ReplicateFake(clock=clock)
    with pytest.raises(ValueError, match="unknown webhook events"):
        fake.create_prediction(webhook="http://x", webhook_events_filter=["done"])
    with pytest.raises(ValueError, match="outcome must be one of"):
        fake.create_prediction(outcome="finished")


async def test_resuming_after_done_ends_at_once(clock: ManualClock) -> None:
    async with running_fake(ReplicateFake(clock=clock)) as fake:
        prediction_id = fake.create_prediction()
        url = f"{fake.base_url}/streams/{prediction_id}"
        clock.advance(60)
        events, _ = await read_stream(url)
        with anyio.fail_after(5):
            after, clean = await read_stream(url, events[-1].id)
    assert (after, clean) == ([], True)
