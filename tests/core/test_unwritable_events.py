"""Events a (plugin) provider decoded with values no durable store can keep."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

import jobwatch
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import ScriptedTransport, make_event

pytestmark = pytest.mark.anyio

CONFIG = jobwatch.Config.from_mapping({"jobwatch": {"safety_poll": 0}}, environ={})


async def test_an_event_no_store_can_keep_is_dropped_and_said_and_the_rest_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = ScriptedTransport()
    watcher = jobwatch.Watcher(
        CONFIG, transports=[transport], store=SQLiteStore(tmp_path / "jobs.db")
    )
    seen: list[str] = []
    watcher.subscribe(lambda event: seen.append(event.key))
    with caplog.at_level(logging.ERROR, logger="jobwatch"):
        async with watcher:
            await transport.send(
                make_event("progress", "job_1", completed=2**70, total=2**71),
                make_event("completed", "job_\ud800"),
                make_event("page", "job_3", data={"handle": object()}),
                make_event("completed", "job_4"),
            )
            await anyio.wait_all_tasks_blocked()
            dropped = watcher.statistics().dropped
    # Data is always kept: what JSON has no form for is written as its text.
    assert seen == ["job_3:page:None#1", "job_4:terminal#1"]
    assert dropped["unwritable"] == 2
    messages = [r.getMessage() for r in caplog.records if "no durable store" in r.getMessage()]
    assert len(messages) == 2
    assert "completed (1180591620717411303424) does not fit in 64 bits" in messages[0]
    assert "job_id holds a character" in messages[1]
