"""The shared request budget (sans-I/O, explicit ``now``) and its async shell."""

from __future__ import annotations

import anyio
import pytest
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobwatch.sim._limits import RateWindow
from jobwatch._budget import RequestBudget, acquire

MOCK = [
    pytest.param(
        ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
    )
]


def test_fresh_budget_allows_rpm_requests_at_once() -> None:
    budget = RequestBudget(3, margin=0)
    for _ in range(3):
        assert budget.delay(0.0) == 0.0
        budget.take(0.0)
    assert budget.used(0.0) == 3
    assert budget.delay(0.0) == 60.0


def test_window_slides_with_margin() -> None:
    budget = RequestBudget(2, margin=1.0)
    budget.take(0.0)
    budget.take(10.0)
    assert budget.delay(30.0) == pytest.approx(31.0)  # 0 + 60 + 1 margin
    assert budget.delay(61.0) == 0.0
    assert budget.used(61.0) == 1


def test_take_beyond_budget_is_refused() -> None:
    budget = RequestBudget(1)
    budget.take(0.0)
    with pytest.raises(RuntimeError, match="exhausted"):
        budget.take(1.0)


def test_pause_blocks_until_and_never_shortens() -> None:
    budget = RequestBudget(10)
    budget.pause(12.0)
    budget.pause(5.0)
    assert budget.delay(2.0) == 10.0
    assert budget.available(2.0) == 0
    assert budget.delay(12.0) == 0.0
    assert budget.available(12.0) == 10


def test_next_free_projects_future_slots() -> None:
    budget = RequestBudget(2, margin=0)
    budget.take(0.0)
    assert budget.next_free(1.0, 1) == 1.0
    assert budget.next_free(1.0, 2) == 60.0
    assert budget.next_free(1.0, 3) == 61.0  # second slot of the next window
    assert budget.next_free(1.0, 4) == 120.0


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_capacity_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        RequestBudget(bad)  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
# Waiting delay() in float sums landed at 61.00999999999999 for a slot free at 61.01.
@example(rpm=2, gaps=[0.01, 0.0, 2.4462859408856676], lags=[0.0] * 200)
@given(
    rpm=st.integers(1, 30),
    gaps=st.lists(st.floats(0, 20, allow_nan=False), min_size=1, max_size=200),
    lags=st.lists(st.floats(0, 0.99, allow_nan=False), min_size=200, max_size=200),
)
def test_server_never_rejects_a_greedy_client(
    rpm: int, gaps: list[float], lags: list[float]
) -> None:
    """A client that sends whenever the budget allows, with up to 0.99 s of network lag that
    varies per request, never meets a 429 from Reader's own window (the simulator's)."""
    budget = RequestBudget(rpm)
    server = RateWindow(rpm)
    now = 0.0
    arrivals = []
    for gap, lag in zip(gaps, lags, strict=False):
        now += gap
        now += budget.delay(now)
        budget.take(now)
        arrivals.append(now + lag)
    for arrival in sorted(arrivals):
        assert server.hit(arrival) is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_acquire_spaces_requests_on_anyio_time() -> None:
    budget = RequestBudget(2, window=10.0, margin=0.5)
    start = anyio.current_time()
    times = []
    for _ in range(5):
        await acquire(budget)
        times.append(anyio.current_time() - start)
    assert times == pytest.approx([0, 0, 10.5, 10.5, 21.0])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK)
async def test_acquire_honours_a_pause_made_while_waiting() -> None:
    budget = RequestBudget(1, window=10.0, margin=0)
    start = anyio.current_time()
    budget.take(start)
    done: list[float] = []

    async def waiter() -> None:
        await budget.acquire()
        done.append(anyio.current_time() - start)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(5)
        budget.pause(start + 30)
    assert done == [pytest.approx(30.0)]


@pytest.mark.anyio
async def test_concurrent_acquirers_never_overdraw() -> None:
    budget = RequestBudget(5, window=0.2, margin=0)
    stamps: list[float] = []

    async def one() -> None:
        await budget.acquire()
        stamps.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(one)
    stamps.sort()
    for i, t in enumerate(stamps):
        assert sum(1 for u in stamps[i:] if u < t + 0.2) <= 5
