"""A store that fails for a while costs a retry, never the Watcher nor an event."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

import jobwatch
from jobwatch.abc import JobState, Verdict
from jobwatch.sim import Step
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport
from jobwatch.testing._sim import RunningSimulator

pytestmark = pytest.mark.anyio


class FlakyStore(MemoryStore):
    """Fails its first ``failures`` batches, as a store whose server blinks."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def record_batch(
        self,
        records: Sequence[tuple[str | None, Callable[[JobState | None], Verdict]]],
        *,
        ttl: float,
        claim: tuple[str, float] | None = None,
    ) -> list[Verdict]:
        if self.failures > 0:
            self.failures -= 1
            raise jobwatch.JobwatchError("the store is unavailable")
        return await super().record_batch(records, ttl=ttl, claim=claim)


def _config(sim: RunningSimulator, transport: str, **sse: Any) -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": sim.url,
                "api_key": sim.api_key,
                "transport": transport,
                "safety_poll": 0,
                "poll": {"interval": 0.05, "max_interval": 0.2, "rpm": 6000},
                "sse": sse,
            }
        }
    )


@pytest.mark.parametrize(
    ("transport", "sse"), [("poll", {}), ("sse", {"scope": "workspace"}), ("sse", {"scope": "job"})]
)
async def test_a_store_that_fails_for_a_while_loses_nothing(
    reader_sim: RunningSimulator, transport: str, sse: dict[str, Any]
) -> None:
    store = FlakyStore(failures=3)
    seen: list[str] = []
    async with jobwatch.Watcher(_config(reader_sim, transport, **sse), store=store) as watcher:
        job = reader_sim.simulator.create_job(steps=[Step(kind="page"), Step(kind="page")])
        watcher.subscribe(lambda event: seen.append(event.kind.value), job_id=job)
        final = await watcher.wait(job, timeout=60)
        stats = watcher.statistics()
    assert final.kind == "completed" and store.failures == 0
    assert seen.count("completed") == 1
    assert stats.transports[transport]["store_errors"] >= 1


async def test_a_reconcile_that_cannot_record_ends_nothing(
    reader_sim: RunningSimulator,
) -> None:
    push = ScriptedTransport()
    store = FlakyStore(failures=0)
    config = _config(reader_sim, "poll").replace(safety_poll=0.2)
    async with jobwatch.Watcher(config, transports=[push], store=store) as watcher:
        job = reader_sim.simulator.create_job(steps=[Step(kind="page")])
        store.failures = 1
        await push.reconcile(job)  # the poll's events cannot be recorded: logged, no crash
        # The safety net polls the silent job again, and that poll is recorded.
        final = await watcher.wait(job, timeout=60)
    assert final.job_id == job and store.failures == 0
