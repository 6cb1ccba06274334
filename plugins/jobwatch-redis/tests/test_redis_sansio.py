"""The plugin's sans-I/O parts: no Redis, no event loop."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobwatch_redis._backoff import Backoff
from jobwatch_redis._client import describe_url
from jobwatch_redis._inflight import InFlight
from jobwatch_redis._keys import (
    Keys,
    decode_entry,
    encode_entry,
    is_fresh,
    seen_value,
    state_from_json,
    state_to_json,
    unqualify,
)

from jobwatch import DecodeError, JobStatus
from jobwatch.abc import JobState
from jobwatch.testing import make_event


def test_keys_share_a_prefix_and_split_inboxes_by_owner() -> None:
    keys = Keys(prefix="p", owner="r1")
    assert keys.seen("j1:terminal#1") == "p:seen:j1:terminal#1"
    assert keys.inbox() == "p:inbox:r1" and keys.inbox("r2") == "p:inbox:r2"
    assert keys.lease() == "p:lease:r1" and keys.checkpoints == "p:checkpoints:r1"
    names = [keys.job("x"), keys.active, keys.order(), keys.seq, keys.owners, keys.dead_letters]
    assert all(name.startswith("p:") for name in names)


@pytest.mark.parametrize(
    ("value", "now", "fresh"),
    [
        (None, 0.0, False),
        ("", 0.0, False),
        (seen_value(10.0, "n"), 9.9, True),
        (seen_value(10.0, "n"), 10.0, False),
        ("garbage|n", 1e12, True),
    ],
)
def test_dedup_value_expires_on_the_store_clock(value: str | None, now: float, fresh: bool) -> None:
    assert is_fresh(value, now) is fresh


def test_state_round_trips() -> None:
    state = JobState(
        job_id="j",
        run=2,
        status=JobStatus.PROCESSING,
        completed=3,
        total=9,
        started=True,
        watched=True,
        updated_at=1.5,
    )
    assert state_from_json(state_to_json(state)) == state
    assert state_from_json(state_to_json(JobState(job_id="k"))) == JobState(job_id="k")


@pytest.mark.parametrize(
    ("key", "bare"),
    [
        ("j1:terminal#1", "j1:terminal"),
        ("j1:page:https://x/#a#12", "j1:page:https://x/#a"),
        ("workspace:credit_low:d1", "workspace:credit_low:d1"),
        ("j#x", "j#x"),
    ],
)
def test_unqualify_strips_only_the_run_suffix(key: str, bare: str) -> None:
    assert unqualify(key) == bare


def test_entry_round_trip_unqualifies_job_keys() -> None:
    event = make_event("page", "j1", url="https://example.com/a", key="j1:page:https://e/a#2")
    decoded = decode_entry(encode_entry(event))
    assert decoded.key == "j1:page:https://e/a" and decoded.data == event.data
    raw = {k.encode(): v.encode() for k, v in encode_entry(event).items()}
    assert decode_entry(raw).key == "j1:page:https://e/a"
    credit = make_event("credit_low", None, key="workspace:credit_low:d1#1")
    assert decode_entry(encode_entry(credit)).key == "workspace:credit_low:d1#1"


@given(st.dictionaries(st.sampled_from([b"event", b"key", b"x"]), st.binary(max_size=64)))
def test_decode_entry_fails_only_with_decode_error(fields: dict[bytes, bytes]) -> None:
    try:
        decode_entry(fields)
    except DecodeError:
        pass


def test_backoff_doubles_to_its_maximum_and_resets() -> None:
    backoff = Backoff(initial=0.1, maximum=0.4)
    rng = random.Random(1)
    delays = [backoff.next_delay(rng) for _ in range(5)]
    assert 0.05 <= delays[0] <= 0.1 and all(0.2 <= d <= 0.4 for d in delays[2:])
    backoff.reset()
    assert backoff.next_delay(rng) <= 0.1


def test_backoff_stays_at_its_maximum_however_long_redis_is_down() -> None:
    # The relay retries a publish and reconnects its consumer with one Backoff for as long as
    # Redis is away: an hour of failures must not overflow the doubling.
    backoff = Backoff(initial=0.05, maximum=5.0)
    rng = random.Random(2)
    delays = [backoff.next_delay(rng) for _ in range(3000)]
    assert all(2.5 <= d <= 5.0 for d in delays[7:])
    backoff.reset()
    assert backoff.next_delay(rng) <= 0.05


def test_in_flight_settles_entries_whose_key_left_the_inbox() -> None:
    tracker = InFlight()
    tracker.add("1-0", "j1:page:a")
    tracker.add("2-0", "j1:terminal")
    assert tracker.settled(["j1:terminal#1"]) == ["1-0"]
    assert len(tracker) == 1 and tracker.ids == ["2-0"]
    assert tracker.settled([]) == ["2-0"] and not tracker


def test_urls_are_described_without_password() -> None:
    assert describe_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert describe_url("redis://user:pw@host/1") == "redis://user:***@host/1"
    assert describe_url("redis://host:6379/0") == "redis://host:6379/0"
