"""Events a failed record left recorded reach the callbacks without a restart.

A batch whose third record raises has recorded the first two: the caller sees the error, so
the Watcher asks the store (``Store.stranded``) and dispatches them as it dispatches the
inbox at start — once each.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import jobwatch
from jobwatch.abc import Store
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio

CONFIG = jobwatch.Config.from_mapping(
    {"jobwatch": {"api_key": "rdr_test", "store": "memory", "safety_poll": 0}}
)


class _Breaks(MemoryStore):
    """A store with Store's own record_batch (a plugin's, say) whose record of ``broken``
    jobs raises."""

    record_batch = Store.record_batch

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[str] = set()
        self.asked = anyio.Event()  # set at the Watcher's next look at the store

    async def stranded(self) -> list[jobwatch.JobEvent]:
        asked, self.asked = self.asked, anyio.Event()
        asked.set()
        return await super().stranded()

    async def record(self, job_id: str | None, decide: Any, *, ttl: float) -> Any:
        if job_id in self.broken:
            raise jobwatch.JobwatchError("the store is down")
        return await super().record(job_id, decide, ttl=ttl)


async def test_what_a_failed_batch_recorded_is_dispatched_once_without_a_restart() -> None:
    store = _Breaks()
    store.broken.add("j3")
    transport = ScriptedTransport()
    watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
    got: list[jobwatch.JobEvent] = []
    watcher.subscribe(got.append)
    async with watcher:
        with pytest.raises(jobwatch.JobwatchError):
            await transport.send(*(make_event("started", job) for job in ("j1", "j2", "j3")))
        with anyio.fail_after(5):
            while len(got) < 2:  # noqa: ASYNC110 - the callback sets nothing to wait on
                await anyio.sleep(0.01)
        store.broken.clear()
        await transport.send(*(make_event("started", job) for job in ("j1", "j2", "j3")))
        # The next look at the store finds nothing more: a look that began after the send,
        # and dispatched what it found before the one after it began. (Looks, not a sleep: a
        # loaded machine may not look within any short while, and nothing would be checked.)
        for _ in range(2):
            with anyio.fail_after(10):
                await store.asked.wait()
    assert [e.key for e in got] == ["j1:started#1", "j2:started#1", "j3:started#1"]
    assert await store.pending() == []
