"""Webhook deliveries reach a real receiver, signed as Reader's docs say, with retries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import anyio
import httpx
import pytest
from simcheck import Receiver, engine_running, serving, verify_signature, wait_until

from jobwatch.sim import ManualClock, Simulator, Step
from jobwatch.testing._sim import RunningSimulator

pytestmark = pytest.mark.anyio

SECRET = "whsec_0123456789abcdef"
ALL_EVENTS = ["job.started", "job.page", "job.completed", "job.failed", "credit.low"]


async def test_signed_deliveries(reader_sim: RunningSimulator) -> None:
    receiver = Receiver()
    headers = {"x-api-key": reader_sim.api_key}
    async with (
        serving(receiver) as url,
        httpx.AsyncClient(base_url=reader_sim.url, headers=headers) as client,
    ):
        hook = {
            "url": url,
            "name": "test",
            "events": ALL_EVENTS,
            "secret": SECRET,
            "headers": {"X-Team": "data"},
        }
        webhook_id = (await client.post("/v1/webhooks", json=hook)).json()["data"]["id"]
        urls = ["https://example.com/a", "https://example.com/b"]
        job_id = (await client.post("/v1/read", json={"urls": urls})).json()["data"]["id"]
        await wait_until(lambda: len(receiver.received) == 4)

        assert [r.event for r in receiver.received] == [
            "job.started",
            "job.page",
            "job.page",
            "job.completed",
        ]
        for received in receiver.received:
            assert verify_signature(SECRET, received)
            assert abs(time.time() - int(received.headers["x-reader-timestamp"])) < 300
            assert received.headers["content-type"] == "application/json"
            assert received.headers["user-agent"] == "Reader-Webhook/1.0"
            assert received.headers["x-team"] == "data"
            assert uuid.UUID(received.headers["x-reader-delivery"]).version == 4
        started, page, _, completed = (r.json() for r in receiver.received)
        assert started == {"jobId": job_id, "status": "processing", "completed": 0, "total": 2}
        assert page["jobId"] == job_id and page["url"] == urls[0] and page["markdown"]
        assert completed == {
            "jobId": job_id,
            "status": "completed",
            "completed": 2,
            "total": 2,
            "creditsUsed": 2,
        }

        listed = (await client.get("/v1/webhooks")).json()["data"]
        assert listed[0]["id"] == webhook_id
        stats = listed[0]["deliveryStats"]
        assert (stats["totalAttempts"], stats["failedDeliveries"]) == (4, 0)
        assert stats["lastDeliveryStatus"] == 200 and stats["lastDeliveryAt"]


async def test_retry_schedule_and_stats(
    clock: ManualClock, make_client: Callable[[Simulator], httpx.AsyncClient]
) -> None:
    simulator = Simulator(clock=clock)
    receiver = Receiver(statuses=[500, 503, 200, 500, 500, 500])
    async with (
        serving(receiver) as url,
        engine_running(simulator),
        make_client(simulator) as client,
    ):
        hook = {"url": url, "name": "t", "events": ["job.completed"], "secret": SECRET}
        await client.post("/v1/webhooks", json=hook)
        simulator.create_job(steps=[Step(kind="page", delay=1.0)])
        clock.advance(2.0)
        # Wait for the simulator's log, not the receiver: the log entry means the sender saw
        # the answer and fixed the time of the next attempt.
        await wait_until(lambda: len(simulator.deliveries()) == 1)
        clock.advance(0.5)
        await anyio.sleep(0.02)
        assert len(receiver.received) == 1, "no retry before the 1 s wait is over"
        for count, wait in ((2, 0.5), (3, 4.0)):
            clock.advance(wait)
            await wait_until(lambda: len(simulator.deliveries()) == count)  # noqa: B023

        ids = {r.headers["x-reader-delivery"] for r in receiver.received}
        assert len(ids) == 1, "one delivery id across its retries"
        assert all(verify_signature(SECRET, r) for r in receiver.received)
        attempts = simulator.deliveries()
        assert [a.attempt for a in attempts] == [1, 2, 3]
        assert [a.status_code for a in attempts] == [500, 503, 200]
        assert [a.at - attempts[0].at for a in attempts] == pytest.approx([0.0, 1.0, 5.0])

        simulator.create_job(steps=[Step(kind="page")])
        clock.advance(2.0)
        for count, wait in ((4, 0.0), (5, 1.0), (6, 4.0)):
            clock.advance(wait)
            await wait_until(lambda: len(simulator.deliveries()) == count)  # noqa: B023
        stats = (await client.get("/v1/webhooks")).json()["data"][0]["deliveryStats"]
        assert (stats["totalAttempts"], stats["failedDeliveries"]) == (6, 1)
        assert stats["lastDeliveryStatus"] == 500


async def test_inline_webhook_failed_job_and_retry_run(
    clock: ManualClock, make_client: Callable[[Simulator], httpx.AsyncClient]
) -> None:
    simulator = Simulator(clock=clock)
    receiver = Receiver()
    async with (
        serving(receiver) as url,
        engine_running(simulator),
        make_client(simulator) as client,
    ):
        inline = {"url": url, "secret": SECRET}  # default events: job.completed, job.failed
        failing = simulator.create_job(
            steps=[Step(kind="page"), Step(kind="fail", error="boom")], webhook=inline
        )
        flaky = simulator.create_job(steps=[Step(kind="page_error")], webhook=inline)
        clock.advance(5)
        await wait_until(lambda: len(receiver.received) == 2)
        by_job = {r.json()["jobId"]: r for r in receiver.received}
        assert by_job[failing].event == "job.failed"
        assert by_job[failing].json() == {"jobId": failing, "status": "failed", "error": "boom"}
        assert by_job[flaky].event == "job.completed"

        assert (await client.post(f"/v1/jobs/{flaky}/retry")).json()["data"]["retrying"] == 1
        clock.advance(5)
        await wait_until(lambda: len(receiver.received) == 3)
        second = receiver.received[2]
        assert second.event == "job.completed" and second.json()["jobId"] == flaky
        assert second.headers["x-reader-delivery"] != by_job[flaky].headers["x-reader-delivery"]
        assert all(verify_signature(SECRET, r) for r in receiver.received)


async def test_webhook_faults(
    clock: ManualClock, make_client: Callable[[Simulator], httpx.AsyncClient]
) -> None:
    simulator = Simulator(clock=clock, faults="webhook_dup_p=1,corrupt_signature_p=1")
    receiver = Receiver()
    async with serving(receiver) as url, engine_running(simulator):
        simulator.create_job(steps=[Step(kind="page")], webhook={"url": url, "secret": SECRET})
        clock.advance(5)
        await wait_until(lambda: len(receiver.received) == 2)
        first, again = receiver.received
        assert first.headers["x-reader-delivery"] == again.headers["x-reader-delivery"]
        assert not verify_signature(SECRET, first) and not verify_signature(SECRET, again)
        counts = simulator.fault_counts()
        assert (counts["webhook_dup_p"], counts["corrupt_signature_p"]) == (1, 2)

        simulator.set_faults("receiver_down=3s,webhook_reorder=true")
        job_id = simulator.create_job(
            steps=[Step(kind="page", delay=0.0)], webhook={"url": url, "events": ALL_EVENTS}
        )
        clock.advance(0.5)
        await wait_until(lambda: len(simulator.deliveries()) == 5)
        assert all(a.status_code is None for a in simulator.deliveries()[-3:])
        assert simulator.fault_counts()["webhook_reorder"] >= 1
        assert simulator.fault_counts()["receiver_down"] == 3
        clock.advance(1.0)
        await wait_until(lambda: len(simulator.deliveries()) == 8)
        assert simulator.fault_counts()["receiver_down"] == 6
        clock.advance(4.0)  # the receiver is back: the third attempts get through
        await wait_until(lambda: len(receiver.received) == 5)
        assert sorted(r.event for r in receiver.received[2:]) == [
            "job.completed",
            "job.page",
            "job.started",
        ]
        assert all(r.json()["jobId"] == job_id for r in receiver.received[2:])


async def test_inactive_webhook_gets_nothing(
    clock: ManualClock, make_client: Callable[[Simulator], httpx.AsyncClient]
) -> None:
    simulator = Simulator(clock=clock)
    receiver = Receiver()
    async with (
        serving(receiver) as url,
        engine_running(simulator),
        make_client(simulator) as client,
    ):
        hook = {"url": url, "name": "off", "events": ["job.completed"]}
        webhook_id = (await client.post("/v1/webhooks", json=hook)).json()["data"]["id"]
        await client.patch(f"/v1/webhooks/{webhook_id}", json={"active": False})
        job_id = simulator.create_job(steps=[Step(kind="page")])
        clock.advance(5)
        assert simulator.job(job_id)["status"] == "completed"
        await anyio.sleep(0.05)
        assert receiver.received == [] and simulator.deliveries() == ()


@pytest.mark.parametrize("how", ["deactivate", "delete"])
async def test_disabled_webhook_gets_no_more_retries(
    clock: ManualClock, make_client: Callable[[Simulator], httpx.AsyncClient], how: str
) -> None:
    # Reader: setting active:false stops deliveries immediately; a delete is permanent. A
    # delivery whose first attempt failed is not retried into a webhook that is off or gone.
    simulator = Simulator(clock=clock)
    receiver = Receiver(statuses=[500, 500, 500])
    async with (
        serving(receiver) as url,
        engine_running(simulator),
        make_client(simulator) as client,
    ):
        hook = {"url": url, "name": "t", "events": ["job.completed"], "secret": SECRET}
        webhook_id = (await client.post("/v1/webhooks", json=hook)).json()["data"]["id"]
        simulator.create_job(steps=[Step(kind="page", delay=1.0)])
        clock.advance(2.0)
        await wait_until(lambda: len(simulator.deliveries()) == 1)
        if how == "deactivate":
            patched = await client.patch(f"/v1/webhooks/{webhook_id}", json={"active": False})
            assert patched.status_code == 200
        else:
            assert (await client.delete(f"/v1/webhooks/{webhook_id}")).status_code == 200
        clock.advance(1.0)
        clock.advance(4.0)
        await anyio.wait_all_tasks_blocked()
        await anyio.sleep(0.05)  # a retry, were one sent, reaches the receiver meanwhile
        assert len(receiver.received) == 1 and len(simulator.deliveries()) == 1
