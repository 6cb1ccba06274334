"""The ``reader_sim`` pytest fixture: a Reader simulator served on a loopback port.

Use it from async tests (``@pytest.mark.anyio``)::

    @pytest.mark.anyio
    async def test_my_code(reader_sim):
        client = MyReaderClient(base_url=reader_sim.url, api_key=reader_sim.api_key)
        ...
        assert reader_sim.simulator.request_counts().total < 10

Configure it by overriding the ``reader_sim_options`` fixture (a dict of `Simulator`
keyword arguments), or per test by indirect parametrization::

    @pytest.mark.parametrize("reader_sim", [{"faults": "drop_sse_after=3"}], indirect=True)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

from jobwatch.sim import Simulator, running

__all__ = ["RunningSimulator", "reader_sim", "reader_sim_options"]


@attrs.frozen(kw_only=True)
class RunningSimulator:
    """A simulator being served: where it is, the key it accepts, and the simulator itself."""

    url: str
    api_key: str
    simulator: Simulator


@pytest.fixture
def reader_sim_options() -> dict[str, Any]:
    """Keyword arguments for the `Simulator` of ``reader_sim``; override to change them.

    The default runs simulated time 100 times faster than real time, so a job of a few dozen
    pages finishes in well under a second.
    """
    return {"time_scale": 100.0}


@pytest.fixture
async def reader_sim(
    request: pytest.FixtureRequest, reader_sim_options: dict[str, Any]
) -> AsyncIterator[RunningSimulator]:
    """A `Simulator` served on 127.0.0.1 at a free port for the duration of one test.

    Options come from ``reader_sim_options``, updated by the test's indirect parameter (a
    dict) if it has one.
    """
    options = {**reader_sim_options, **getattr(request, "param", {})}
    simulator = Simulator(**options)
    async with running(simulator) as url:
        yield RunningSimulator(url=url, api_key=simulator.api_key, simulator=simulator)
