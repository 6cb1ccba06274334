"""The reconnection state machine, without I/O: explicit ``now`` values, a seeded rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobwatch.transports._reconnect import (
    RETRY_MAX,
    RETRY_MIN,
    Action,
    Backoff,
    Cause,
    Pacer,
    Reconnector,
)

RETRYING = (Cause.CLOSED, Cause.DROPPED, Cause.STALLED, Cause.REFUSED, Cause.RETRYABLE)


def machine(**overrides: object) -> Reconnector:
    options: dict[str, object] = dict(max_failures=5, probe_interval=60.0, rng=random.Random(1))
    options.update(overrides)
    backoff = options.pop("backoff", Backoff(initial=1.0, maximum=30.0, jitter=0.5))
    return Reconnector(backoff, **options)  # type: ignore[arg-type]


def test_first_connection_sends_no_last_event_id_and_asks_to_reconcile() -> None:
    m = machine()
    assert m.request_headers() == {}
    opened = m.opened()
    assert opened.reconcile and not opened.recovered and not opened.reconnected


def test_ids_are_tracked_and_sent_back() -> None:
    m = machine()
    m.opened()
    m.received()
    m.event(event_id="41", retry_ms=None)
    m.event(event_id=None, retry_ms=None)  # a frame without an id keeps the last one
    assert m.request_headers() == {"last-event-id": "41"}
    plan = m.ended(10.0, Cause.DROPPED)
    assert plan.action is Action.RECONNECT
    opened = m.opened()
    assert opened.reconnected and not opened.reconcile  # resumed: no poll needed


def test_an_empty_id_clears_it_and_an_id_with_nul_is_ignored() -> None:
    m = machine(last_event_id="7")
    m.event(event_id="a\0b", retry_ms=None)
    assert m.last_event_id == "7"
    m.event(event_id="", retry_ms=None)
    assert m.request_headers() == {}
    assert m.opened().reconcile


@pytest.mark.parametrize("bad", [" 8", "8 ", "\t8", "8\t", "8\x01", "8\x1b[31m", "8\x7f"])
def test_an_id_no_header_can_carry_is_ignored_and_the_last_one_kept(bad: str) -> None:
    m = machine(last_event_id="7")
    assert m.event(event_id=bad, retry_ms=None) is not None
    assert m.request_headers() == {"last-event-id": "7"}
    assert machine(last_event_id=bad).request_headers() == {}  # nor resumed from a checkpoint


def test_an_id_with_text_beyond_ascii_is_kept() -> None:
    m = machine()
    assert m.event(event_id="é 8\t9", retry_ms=None) is None
    assert m.request_headers() == {"last-event-id": "é 8\t9"}


def test_retry_field_sets_the_reconnection_time() -> None:
    m = machine(backoff=Backoff(initial=1.0, maximum=30.0, jitter=0.0))
    m.opened()
    m.received()
    m.event(event_id=None, retry_ms=2500)
    plan = m.ended(100.0, Cause.CLOSED)
    assert plan == plan.__class__(action=Action.RECONNECT, at=102.5)


@pytest.mark.parametrize(
    ("retry_ms", "clamped"),
    [
        (0, RETRY_MIN),
        (1, RETRY_MIN),
        (499, RETRY_MIN),
        (500, 0.5),
        (2500, 2.5),
        (60_000, RETRY_MAX),
        (99_999_999_999, RETRY_MAX),
    ],
)
def test_retry_is_clamped(retry_ms: int, clamped: float) -> None:
    m = machine(backoff=Backoff(initial=0.01, maximum=0.05, jitter=0.5))
    m.opened()
    m.received()
    m.event(event_id=None, retry_ms=retry_ms)
    assert m.retry == clamped
    wait = m.ended(0.0, Cause.CLOSED).at
    assert RETRY_MIN <= clamped <= wait <= max(clamped, 0.05)


def test_a_stream_that_is_not_resumable_ignores_ids_and_is_always_reconciled() -> None:
    m = machine(resumable=False, last_event_id="9")
    assert m.request_headers() == {} and m.last_event_id == ""
    m.opened()
    m.received()
    m.event(event_id="41", retry_ms=None)
    assert m.request_headers() == {} and m.last_event_id == ""
    m.ended(1.0, Cause.DROPPED)
    assert m.opened().reconcile


def test_a_broken_bound_counts_as_a_failure_however_much_arrived() -> None:
    m = machine(backoff=Backoff(initial=1.0, maximum=30.0, jitter=0.0), max_failures=3)
    waits = []
    for _ in range(2):
        m.opened()
        m.received()
        plan = m.ended(0.0, Cause.VIOLATED)
        assert plan.action is Action.RECONNECT
        waits.append(plan.at)
    assert waits == [2.0, 4.0]  # backing off, not the base delay of a healthy connection
    m.opened()
    m.received()
    assert m.ended(0.0, Cause.VIOLATED).action is Action.FALLBACK


def test_the_pacer_allows_a_burst_then_one_per_interval() -> None:
    pacer = Pacer(1.0, burst=4)
    for _ in range(4):
        assert pacer.delay(10.0) == 0.0
        pacer.take(10.0)
    assert pacer.delay(10.0) == pytest.approx(1.0)
    assert pacer.delay(10.5) == pytest.approx(0.5)
    pacer.take(11.0)
    assert pacer.delay(11.0) == pytest.approx(1.0)
    assert pacer.delay(100.0) == 0.0  # idle time refills the burst, no more
    for _ in range(4):
        pacer.take(100.0)
    assert pacer.delay(100.0) == pytest.approx(1.0)
    assert Pacer(0.0).delay(0.0) == 0.0


@given(
    interval=st.floats(0.001, 100.0),
    burst=st.integers(1, 8),
    gaps=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=60),
)
def test_paced_takes_never_beat_the_rate(interval: float, burst: int, gaps: list[float]) -> None:
    pacer, now, taken = Pacer(interval, burst=burst), 0.0, []
    for gap in gaps:
        now += gap
        now += pacer.delay(now)
        pacer.take(now)
        taken.append(now)
    for i, first in enumerate(taken):
        later = [t for t in taken[i:] if t < first + interval * 5 - 1e-6]
        assert len(later) <= burst + 5


def test_failures_grow_the_delay_then_fall_back_and_probe() -> None:
    m = machine(backoff=Backoff(initial=1.0, maximum=30.0, jitter=0.0), max_failures=4)
    waits = []
    for _ in range(3):
        plan = m.ended(0.0, Cause.REFUSED)
        assert plan.action is Action.RECONNECT
        waits.append(plan.at)
    assert waits == [2.0, 4.0, 8.0]
    plan = m.ended(0.0, Cause.REFUSED)
    assert plan.action is Action.FALLBACK and plan.fell_back and plan.at == 60.0
    # A probe that fails stays in the fallback, without counting a new fallback.
    again = m.ended(60.0, Cause.REFUSED)
    assert again.action is Action.FALLBACK and not again.fell_back and again.at == 120.0
    opened = m.opened()
    assert opened.recovered and opened.reconcile and not m.in_fallback


def test_a_healthy_connection_resets_the_failures() -> None:
    m = machine(backoff=Backoff(initial=1.0, maximum=30.0, jitter=0.0), max_failures=2)
    assert m.ended(0.0, Cause.REFUSED).action is Action.RECONNECT
    m.opened()
    m.received()
    plan = m.ended(5.0, Cause.DROPPED)
    assert plan.action is Action.RECONNECT and plan.at == 6.0
    assert m.failures == 0
    m.opened()  # opens, but ends before a byte: a failure
    assert m.ended(6.0, Cause.CLOSED).action is Action.RECONNECT
    m.opened()
    assert m.ended(6.0, Cause.CLOSED).action is Action.FALLBACK


@pytest.mark.parametrize("cause", [Cause.UNSUPPORTED])
def test_an_endpoint_without_a_stream_falls_back_at_once(cause: Cause) -> None:
    m = machine()
    plan = m.ended(3.0, cause)
    assert plan.action is Action.FALLBACK and plan.fell_back and plan.at == 63.0


def test_unauthorized_ends_the_stream() -> None:
    assert machine().ended(0.0, Cause.UNAUTHORIZED).action is Action.END


def test_retry_after_is_a_floor() -> None:
    m = machine(backoff=Backoff(initial=1.0, maximum=30.0, jitter=0.0))
    plan = m.ended(0.0, Cause.RETRYABLE, retry_after=45.0)
    assert plan.action is Action.RECONNECT and plan.at == 45.0


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    a = machine(rng=random.Random(42))
    b = machine(rng=random.Random(42))
    assert [a.ended(0, Cause.REFUSED).at for _ in range(4)] == [
        b.ended(0, Cause.REFUSED).at for _ in range(4)
    ]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_failures"):
        machine(max_failures=0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)
    with pytest.raises(ValueError, match="multiplier"):
        Backoff(multiplier=0.5)


backoffs = st.builds(
    Backoff,
    initial=st.floats(0.001, 100.0),
    maximum=st.floats(0.001, 1000.0),
    multiplier=st.floats(1.0, 1e6),
    jitter=st.floats(0.0, 0.99),
)
causes = st.sampled_from(RETRYING)
steps = st.lists(
    st.tuples(
        causes, st.booleans(), st.none() | st.integers(0, 10**7), st.none() | st.text(max_size=5)
    ),
    max_size=40,
)


@given(backoff=backoffs, seed=st.integers(), script=steps, max_failures=st.integers(1, 8))
def test_backoff_is_bounded_and_honours_retry(
    backoff: Backoff,
    seed: int,
    script: list[tuple[Cause, bool, int | None, str | None]],
    max_failures: int,
) -> None:
    m = Reconnector(
        backoff, max_failures=max_failures, probe_interval=30.0, rng=random.Random(seed)
    )
    now = 0.0
    last_id = ""
    for cause, healthy, retry_ms, event_id in script:
        m.opened()
        if healthy:
            m.received()
        m.event(event_id=event_id, retry_ms=retry_ms)
        sendable = event_id is not None and event_id.strip(" \t") == event_id
        if sendable and not any(c < " " and c != "\t" or c == "\x7f" for c in event_id or ""):
            last_id = event_id or ""
        plan = m.ended(now, cause)
        wait = plan.at - now
        assert wait >= 0
        if plan.action is Action.RECONNECT:
            retry = m.retry or 0.0
            assert wait <= max(backoff.maximum, retry) + 1e-9  # bounded
            assert wait >= retry - 1e-9  # retry: honoured
            assert m.failures < max_failures
        else:
            assert plan.action is Action.FALLBACK and wait == pytest.approx(30.0)
        assert m.last_event_id == last_id  # ids tracked
        assert m.request_headers() == ({"last-event-id": last_id} if last_id else {})
        now = plan.at


@given(
    backoff=backoffs,
    seed=st.integers(),
    failures=st.integers(0, 10_000),
    retry_ms=st.none() | st.integers(0, 10**9),
)
def test_delay_never_overflows(
    backoff: Backoff, seed: int, failures: int, retry_ms: int | None
) -> None:
    m = Reconnector(backoff, max_failures=1, probe_interval=1.0, rng=random.Random(seed))
    m.event(event_id=None, retry_ms=retry_ms)
    m.failures = failures
    retry = m.retry or 0.0
    assert retry - 1e-9 <= m.delay() <= max(backoff.maximum, retry) + 1e-9


def test_an_id_longer_than_a_header_takes_is_ignored_and_the_last_one_kept() -> None:
    # An id of megabytes was kept, saved as the checkpoint and sent on every reconnect.
    m = machine(last_event_id="7")
    assert m.event(event_id="8" * 5000, retry_ms=None) is not None
    assert m.request_headers() == {"last-event-id": "7"}
    longest = "é" * 2048  # 4,096 bytes of UTF-8
    assert m.event(event_id=longest, retry_ms=None) is None
    assert m.request_headers() == {"last-event-id": longest}
    assert m.event(event_id=longest + "8", retry_ms=None) is not None
