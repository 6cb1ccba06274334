"""watch() and wait() against the Watcher's lifetime: a Watcher that closes under them, and a
watch that ends in an error while its reader is behind."""

from __future__ import annotations

import anyio
import httpx
import pytest

import jobwatch
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio

CONFIG = jobwatch.Config.from_mapping(
    {"jobwatch": {"store": "memory", "safety_poll": 0}}, environ={}
)


def watcher(**options: object) -> jobwatch.Watcher:
    return jobwatch.Watcher(
        CONFIG,
        transports=[ScriptedTransport()],
        store=MemoryStore(),
        **options,  # type: ignore[arg-type]
    )


async def test_a_watch_that_ends_in_an_error_behind_a_full_queue_still_raises_it() -> None:
    # The job's watch ends (404) while its reader has 1000 events unread: the error must come
    # after them, not be lost to a full queue (the reader then waited for its timeout).
    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404, json={"success": False, "error": {"code": "not_found", "message": "no job"}}
        )

    transport = ScriptedTransport()
    w = jobwatch.Watcher(
        CONFIG,
        transports=[transport],
        store=MemoryStore(),
        http_transport=httpx.MockTransport(api),
    )
    go = anyio.Event()
    seen: list[int | None] = []
    ended: list[BaseException] = []

    async def read() -> None:
        try:
            async for event in w.watch("job_1"):
                seen.append(event.completed)
                await go.wait()  # behind from the first event on
        except jobwatch.JobwatchError as exc:
            ended.append(exc)

    with anyio.fail_after(10):
        async with w, anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            await transport.send(make_event("progress", "job_1", completed=1))
            await anyio.wait_all_tasks_blocked()
            await transport.send(
                *(make_event("progress", "job_1", completed=n) for n in range(2, 1002))
            )
            await anyio.wait_all_tasks_blocked()
            await transport.reconcile("job_1")  # the API says the job is gone
            go.set()
    assert seen == list(range(1, 1002))
    assert len(ended) == 1 and isinstance(ended[0], jobwatch.JobNotFound)
