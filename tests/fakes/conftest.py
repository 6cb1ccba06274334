"""Fixtures of the fakes' tests: a manual clock and a webhook receiver on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from _fake_support import Receiver, receiving

from jobwatch.sim import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as served:
        yield served
