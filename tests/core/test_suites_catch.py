"""The conformance suites fail for plugins that are plainly wrong.

A suite that passes for a broken store tells its author nothing: each store here breaks one
promise, and the suite must say so.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import attrs
import pytest
from _pytest.outcomes import OutcomeException

from jobwatch.abc import JobState, Store
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import StoreConformance

pytestmark = pytest.mark.anyio


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _store_suite_failures(make: Callable[[_Clock], Store]) -> list[str]:
    """Run every StoreConformance test on a fresh store from ``make``; the names that failed."""
    suite, failed = StoreConformance(), []
    for name in sorted(n for n in dir(suite) if n.startswith("test_")):
        method = getattr(suite, name)
        clock = _Clock()
        store = make(clock)
        await store.open()
        kwargs = {"store": store, "clock": clock}
        wanted = inspect.signature(method).parameters
        try:
            await method(**{k: v for k, v in kwargs.items() if k in wanted})
        except AssertionError:
            failed.append(name)
        except OutcomeException:  # skipped
            pass
        finally:
            await store.aclose()
    return failed


class _LosesEventFields(MemoryStore):
    """Hands back pending events without the fields it did not think it needed."""

    async def pending(self) -> list[object]:  # type: ignore[override]
        return [
            attrs.evolve(e, occurred_at=None, total=None, source="memory", error=None, attempt=None)
            for e in await super().pending()
        ]


class _LosesStateFields(MemoryStore):
    """Saves a job's state without its status and attempt."""

    async def put_job(self, state: JobState) -> None:
        await super().put_job(attrs.evolve(state, status=None, attempt=None))


class _OneCheckpoint(MemoryStore):
    """Keeps one checkpoint, whatever its name."""

    async def get_checkpoint(self, name: str) -> str | None:
        return await super().get_checkpoint("")

    async def put_checkpoint(self, name: str, value: str) -> None:
        await super().put_checkpoint("", value)


async def test_the_store_suite_passes_the_memory_store() -> None:
    assert await _store_suite_failures(lambda clock: MemoryStore(clock=clock)) == []


@pytest.mark.parametrize("broken", [_LosesEventFields, _LosesStateFields, _OneCheckpoint])
async def test_the_store_suite_fails_a_store_that_loses_what_it_keeps(
    broken: type[MemoryStore],
) -> None:
    assert await _store_suite_failures(lambda clock: broken(clock=clock)) != []
