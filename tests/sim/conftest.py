"""Fixtures and helpers of the simulator's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from jobwatch.sim import ManualClock, Simulator
from jobwatch.testing._sim import reader_sim, reader_sim_options  # noqa: F401 - fixtures


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_client() -> Callable[[Simulator], httpx.AsyncClient]:
    """An httpx client calling a simulator's ASGI app in-process (finite responses only)."""

    def make(simulator: Simulator, api_key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=simulator.app),
            base_url="http://sim.test",
            headers={"x-api-key": api_key or simulator.api_key},
        )

    return make


@pytest.fixture
async def sim_client(
    clock: ManualClock, make_client: Callable[[Simulator], httpx.AsyncClient]
) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    """A pro-tier simulator on a manual clock and an in-process client for it."""
    simulator = Simulator(clock=clock, epoch=1_775_000_000.0)
    async with make_client(simulator) as client:
        yield simulator, client
