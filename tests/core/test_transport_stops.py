"""A transport that stops for good: the Watcher says so in its statistics, goes on while
another transport can still report, and ends with the transport's error once none can."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskStatus

import jobwatch
from jobwatch.abc import Transport, TransportHost
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio

CONFIG = jobwatch.Config.from_mapping(
    {"jobwatch": {"store": "memory", "safety_poll": 0}}, environ={}
)

REFUSED = "the API refused the key (HTTP 401): check [jobwatch] api_key"


class Stopping(Transport):
    """Runs until ``stop()``; then raises ``error``, or returns when it is None."""

    def __init__(self, error: jobwatch.JobwatchError | None, name: str = "stopping") -> None:
        self.error = error
        self.name = name  # type: ignore[misc]
        self._stop = anyio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(
        self, host: TransportHost, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await self._stop.wait()
        if self.error is not None:
            raise self.error


def refused() -> jobwatch.AuthenticationError:
    return jobwatch.AuthenticationError(REFUSED, status=401)


async def test_a_transport_that_stops_beside_one_that_runs_is_shown_and_the_watcher_goes_on() -> (
    None
):
    scripted, stopping = ScriptedTransport(), Stopping(refused())
    heard: list[jobwatch.JobEvent] = []
    async with jobwatch.Watcher(
        CONFIG, transports=[scripted, stopping], store=MemoryStore()
    ) as watcher:
        watcher.subscribe(heard.append)
        stopping.stop()
        await anyio.wait_all_tasks_blocked()
        assert watcher.statistics().stopped == {"stopping": REFUSED}
        # The other transport still reports: the Watcher is not ended by one that stopped.
        event = make_event("completed", job_id="job_1")
        await scripted.send(event)
        with anyio.fail_after(5):
            while not heard:
                await anyio.wait_all_tasks_blocked()
    assert [(e.kind, e.job_id) for e in heard] == [(event.kind, event.job_id)]


async def test_when_the_last_transport_stops_the_watcher_ends_with_its_error() -> None:
    stopping = Stopping(refused())
    waited: list[BaseException] = []

    async def wait(watcher: jobwatch.Watcher) -> None:
        try:
            await watcher.wait("job_1")
        except jobwatch.JobwatchError as exc:
            waited.append(exc)

    watcher = jobwatch.Watcher(CONFIG, transports=[stopping], store=MemoryStore())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            with pytest.raises(jobwatch.AuthenticationError, match="api_key"):
                async with watcher:
                    watcher.subscribe(lambda e: None)
                    tg.start_soon(wait, watcher)
                    await anyio.wait_all_tasks_blocked()
                    stopping.stop()
                    await anyio.sleep_forever()
    # A watch of a job ends with the error too, not with "the Watcher closed".
    assert [type(e) for e in waited] == [jobwatch.AuthenticationError]
    assert watcher.statistics().stopped == {"stopping": REFUSED}


async def test_a_transport_whose_run_returns_has_stopped() -> None:
    stopping = Stopping(None, name="quiet")
    with anyio.fail_after(5), pytest.raises(jobwatch.TransportError) as caught:
        async with jobwatch.Watcher(CONFIG, transports=[stopping], store=MemoryStore()):
            stopping.stop()
            await anyio.sleep_forever()
    message = str(caught.value)
    assert "the quiet transport stopped" in message and "nothing more can arrive" in message


async def test_a_transport_that_fails_before_it_has_started_still_fails_the_start() -> None:
    class Broken(Transport):
        name = "broken"

        async def run(
            self,
            host: TransportHost,
            *,
            task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
        ) -> None:
            raise jobwatch.ConfigError("[jobwatch.broken] is wrong: fix it")

    with anyio.fail_after(5), pytest.raises(jobwatch.ConfigError, match="fix it"):
        async with jobwatch.Watcher(CONFIG, transports=[Broken()], store=MemoryStore()):
            pass


class ReturnsWhenCancelled(Transport):
    """A transport that ends by returning when the Watcher cancels it, as one wrapping a
    server whose serve() returns on shutdown does."""

    name = "quiet"

    async def run(
        self, host: TransportHost, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return


async def test_a_transport_that_returns_when_aclose_cancels_it_has_not_stopped() -> None:
    # aclose() in another task cancels the transports and the block's body; the transport
    # ended before the body did (here the body is in a shielded step), and was taken for one
    # that stopped for good: the block raised "the quiet transport stopped without saying why".
    watcher = jobwatch.Watcher(CONFIG, transports=[ReturnsWhenCancelled()], store=MemoryStore())
    release = anyio.Event()
    reached: list[str] = []

    async def owner(task_status: TaskStatus[None]) -> None:
        async with watcher:
            task_status.started()
            with anyio.CancelScope(shield=True):
                await release.wait()
        reached.append("after the block")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(owner)
            tg.start_soon(watcher.aclose)
            await anyio.wait_all_tasks_blocked()  # the transport has returned
            release.set()
    assert reached == ["after the block"]
    assert watcher.statistics().stopped == {}
