"""The shared request budget (sans-I/O, explicit ``now``) and its async shell."""

from __future__ import annotations

import anyio
import pytest
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

import jobwatch
from jobwatch._budget import BudgetOptions, RequestBudget, acquire
from jobwatch.abc import RateLimit
from jobwatch.sim._limits import RateWindow

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


# -- hourly windows, and what the API says -------------------------------------------------------


def test_budget_options_build_a_minute_and_an_hour_window() -> None:
    budget = BudgetOptions(rpm=900, rph=5000).budget()
    assert budget.limits == ((900, 60.0), (5000, 3600.0))
    assert budget.rate == pytest.approx(5000 / 3600)
    assert BudgetOptions().budget().limits == ((60, 60.0),)


@settings(max_examples=60, deadline=None)
@given(
    hourly=st.integers(1, 60),
    rpm=st.integers(1, 30) | st.none(),
    steps=st.lists(
        st.tuples(
            st.just(0.0) | st.floats(0, 600, allow_nan=False),  # load: often no gap at all
            st.none() | st.integers(0, 5),  # remaining
            st.floats(0, 4000, allow_nan=False),  # reset
            st.none() | st.integers(1, 100),  # limit
            st.booleans(),  # a rate-limited answer
        ),
        min_size=1,
        max_size=300,
    ),
)
def test_an_hourly_budget_never_sends_more_than_its_capacity_in_any_hour(
    hourly: int, rpm: int | None, steps: list[tuple[float, int | None, float, int | None, bool]]
) -> None:
    """A greedy client — it sends whenever the budget allows — under whatever the API says
    about remaining requests and resets, and whatever rate limits it announces, never sends
    more than N in any hour (nor more than rpm in any minute)."""
    budget = (
        RequestBudget(hourly, 3600.0)
        if rpm is None
        else BudgetOptions(rpm=rpm, rph=hourly).budget()
    )
    now, sent = 0.0, []
    for gap, remaining, reset, limit, limited in steps:
        now += gap
        now += budget.delay(now)
        ticket = budget.take(now)
        sent.append(now)
        budget.observe(
            now, ticket, RateLimit(limit=limit, remaining=remaining, reset=reset), limited=limited
        )
        if limited:
            budget.rate_limited(now, None)
    for i, t in enumerate(sent):
        assert sum(1 for u in sent[i:] if u < t + 3600.0) <= hourly
        if rpm is not None:
            assert sum(1 for u in sent[i:] if u < t + 60.0) <= rpm


def test_remaining_zero_pauses_until_the_reset() -> None:
    budget = RequestBudget(100)
    ticket = budget.take(0.0)
    budget.observe(1.0, ticket, RateLimit(remaining=0, reset=900.0))
    assert budget.delay(1.0) == 900.0
    assert budget.paused_until == 901.0
    assert budget.available(500.0) == 0
    assert budget.delay(901.0) == 0.0


def test_remaining_allows_that_many_more_counting_those_already_sent() -> None:
    budget = RequestBudget(100)
    first = budget.take(0.0)
    budget.take(0.5)  # sent before the first answer came back: the server counts it too
    budget.observe(1.0, first, RateLimit(remaining=3, reset=100.0))
    assert budget.available(1.0) == 2
    budget.take(1.0)
    budget.take(1.0)
    assert budget.delay(1.0) == 100.0
    assert budget.next_free(1.0, 1) == 101.0


def test_answers_that_overtake_each_other_keep_the_lowest_allowance() -> None:
    budget = RequestBudget(100)
    early, late = budget.take(0.0), budget.take(0.0)
    budget.observe(1.0, late, RateLimit(remaining=1, reset=60.0))
    budget.observe(1.0, early, RateLimit(remaining=5, reset=60.0))  # older news: not looser
    assert budget.available(1.0) == 1
    # A later window replaces what was said about the earlier one.
    budget.observe(70.0, budget.take(61.0), RateLimit(remaining=50, reset=3600.0))
    assert budget.available(70.0) == 50


def test_a_lower_limit_lowers_the_windows_no_longer_than_the_reset() -> None:
    # The API's window lasts at least until its reset: a window of ours that is no longer can
    # never hold more than the limit. A longer one may (a per-minute limit, an hourly window).
    budget = BudgetOptions(rpm=600, rph=5000).budget()
    budget.observe(0.0, None, RateLimit(limit=100, reset=30.0))
    assert budget.limits == ((600, 60.0), (5000, 3600.0))
    budget.observe(0.0, None, RateLimit(limit=400, reset=60.0))
    assert budget.limits == ((400, 60.0), (5000, 3600.0))
    budget.observe(0.0, None, RateLimit(limit=1000, reset=3600.0))
    assert budget.limits == ((400, 60.0), (1000, 3600.0))
    budget.observe(0.0, None, RateLimit(limit=9000, reset=3600.0))  # never raised again
    assert budget.limits == ((400, 60.0), (1000, 3600.0))
    budget.observe(0.0, None, RateLimit(limit=1))  # no reset: no window known to fit
    assert budget.limits == ((400, 60.0), (1000, 3600.0))


def test_rate_limits_without_a_wait_back_off_until_an_answer_is_not_limited() -> None:
    budget = RequestBudget(100)
    ends = []
    for now in (0.0, 10.0, 20.0, 30.0):
        budget.observe(now, None, None, limited=True)
        ends.append(budget.rate_limited(now, None) - now)
    assert ends == [1.0, 2.0, 4.0, 8.0]
    budget.observe(40.0, None, None)
    assert budget.rate_limited(40.0, None) == 41.0
    assert budget.rate_limited(41.0, 30.0) == 71.0  # a named wait is taken as said
    assert budget.rate_limited(80.0, 0.0) == 82.0  # "wait 0" while limited: the backoff


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"rph": 0}, "rph must be a positive number of requests an hour"),
        ({"rph": "5000/h"}, r"expected int, got str .* \[jobwatch.poll\]\.rph"),
        ({"rph": 5000.0}, r"expected int, got float .* \[jobwatch.poll\]\.rph"),
        ({"rph": True}, r"expected int, got bool .* \[jobwatch.poll\]\.rph"),
        ({"rpm": -1}, "rpm must be a positive number of requests a minute"),
    ],
)
def test_budget_keys_are_checked_strictly(table: dict[str, object], message: str) -> None:
    config = jobwatch.Config.from_mapping({"jobwatch": {"poll": table}})
    with pytest.raises(jobwatch.ConfigError, match=message):
        BudgetOptions.from_config(config)
    with pytest.raises(jobwatch.ConfigError, match=message):
        jobwatch.Watcher(config.replace(transport="poll", store="memory"))


def test_the_watcher_budget_reads_rpm_and_rph() -> None:
    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "transport": "poll",
                "store": "memory",
                "base_url": "http://api.test",
                "poll": {"rpm": 900, "rph": 5000, "interval": 5.0},
            }
        }
    )
    assert BudgetOptions.from_config(config) == BudgetOptions(rpm=900, rph=5000)
    assert jobwatch.Watcher(config)._api.budget.limits == ((900, 60.0), (5000, 3600.0))
