"""The sqlite store's own thread and group commit (its contract is in test_store_machine.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

from jobwatch.abc import JobState
from jobwatch.stores.sqlite import SQLiteStore


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jobwatch-sqlite")]


@pytest.mark.anyio
async def test_calls_that_arrive_together_share_one_commit() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    commits: list[int] = []
    commit = store._commit

    def counting(batch: list, acks: list[str]) -> bool:  # type: ignore[type-arg]
        commits.append(len(batch))
        return commit(batch, acks)

    store._commit = counting  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(store.put_job, JobState(job_id=f"job_{n}", watched=True))
    assert commits == [20]
    assert len(await store.active_jobs()) == 20
    await store.aclose()


@pytest.mark.anyio
async def test_closing_the_store_ends_its_thread() -> None:
    before = len(_store_threads())
    store = SQLiteStore(":memory:")
    await store.open()
    assert len(_store_threads()) == before + 1
    await store.aclose()
    assert len(_store_threads()) == before


@pytest.mark.parametrize("backends", [("trio", "asyncio"), ("asyncio", "trio")])
def test_one_store_serves_event_loops_one_after_another(
    tmp_path: Path, backends: tuple[str, str]
) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    first, second = backends

    async def write() -> None:
        await store.open()
        await store.put_job(JobState(job_id="job_1", watched=True))

    async def read_and_close() -> JobState | None:
        try:
            return await store.get_job("job_1")
        finally:
            await store.aclose()

    anyio.run(write, backend=first)
    state = anyio.run(read_and_close, backend=second)
    assert state is not None and state.watched
