"""What a broken or hostile API may answer to polls: every answer ends in a clear error or a
bounded backoff, and the job's end is still delivered.

The API is the fictional "runs" API of ``_runs_api``; virtual time under trio's MockClock.
"""

from __future__ import annotations

import pytest
import trio.testing
from _runs_api import RunsAPI, watcher

MOCK = [
    pytest.param(
        ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
    )
]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_a_server_error_storm_of_many_hours_backs_off_and_the_end_is_delivered() -> None:
    # Ten hours of 503s with no Retry-After: well over a thousand failed polls in a row, each
    # backing off to max_interval; the run's completion is delivered once the API recovers.
    recovers = 36_000.0
    api = RunsAPI(ends={"r1": recovers})
    api.refuse = lambda n, path: (503, {}) if api.times[-1] < recovers else None
    async with watcher(api, interval=1.0, max_interval=30.0) as w:
        final = await w.wait("r1", timeout=recovers + 3600)
    assert final.kind == "completed"
    failed = api.statuses.count(503)
    assert failed > 1024
    assert api.times[-1] - recovers <= 30.0
    # max_interval bounds the backoff; "equal jitter" keeps each gap at least half of it
    assert failed <= recovers / 15.0 + 10
