"""JobEvent: a frozen, keyword-only value with a JSON form that survives a round trip."""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwatch import DecodeError, EventKind, JobEvent, JobStatus
from jobwatch.testing import make_event

# -- strategies ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=6,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

# Real UTC offsets are whole minutes.
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
moments = st.none() | st.datetimes(timezones=st.none() | st.just(UTC) | offsets)

events = st.builds(
    JobEvent,
    kind=st.sampled_from(EventKind),
    job_id=st.none() | st.text(),
    status=st.none() | st.sampled_from(JobStatus),
    completed=st.none() | st.integers(),
    total=st.none() | st.integers(),
    key=st.text(),
    source=st.text(),
    occurred_at=moments,
    error=st.none() | st.text(),
    attempt=st.none() | st.integers(1, 2**40),
    data=json_objects,
)


def full_event(**changes: Any) -> JobEvent:
    base = make_event(
        "progress",
        "job_1",
        completed=3,
        total=9,
        source="poll",
        occurred_at=datetime(2026, 4, 4, 12, 0, tzinfo=UTC),
        data={"status": "processing", "completed": 3, "total": 9},
    )
    return attrs.evolve(base, **changes)


# -- the value -------------------------------------------------------------------------------


def test_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        JobEvent("started", "job_1", None, None, None, "k", "poll")  # type: ignore[call-arg]


def test_is_frozen() -> None:
    event = full_event()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.key = "other"  # type: ignore[misc]


def test_data_is_read_only_and_a_copy() -> None:
    payload = {"url": "https://example.com/a"}
    event = make_event("page", "job_1", data=payload)
    payload["url"] = "changed"
    assert event.data["url"] == "https://example.com/a"
    with pytest.raises(TypeError):
        event.data["url"] = "x"  # type: ignore[index]


def test_kind_is_converted_from_its_value() -> None:
    event = JobEvent(kind="completed", job_id="j", key="j:terminal", source="poll")
    assert event.kind is EventKind.COMPLETED
    with pytest.raises(ValueError):
        JobEvent(kind="exploded", job_id="j", key="k", source="poll")


def test_defaults() -> None:
    event = JobEvent(kind=EventKind.STARTED, job_id="j", key="j:started", source="sse")
    assert (
        event.status,
        event.completed,
        event.total,
        event.occurred_at,
        event.error,
        event.attempt,
    ) == (None,) * 6
    assert dict(event.data) == {}


def test_fields_in_the_documented_order() -> None:
    assert [field.name for field in attrs.fields(JobEvent)] == [
        "kind",
        "job_id",
        "status",
        "completed",
        "total",
        "key",
        "source",
        "occurred_at",
        "error",
        "attempt",
        "data",
    ]


@settings(max_examples=200, deadline=None)
@given(events, st.booleans())
def test_build_makes_what_the_constructor_makes(event: JobEvent, as_value: bool) -> None:
    fields = {field.name: getattr(event, field.name) for field in attrs.fields(JobEvent)}
    fields["data"] = dict(event.data)
    if as_value:
        fields["kind"] = event.kind.value  # converted like the constructor converts it
    built = JobEvent.build(**fields)
    assert built == JobEvent(**fields) == event
    assert type(built.kind) is EventKind and dict(built.data) == dict(event.data)
    assert built.to_json() == event.to_json()
    assert hash(built) == hash(event)


def test_build_freezes_a_copy_of_data_and_shares_a_frozen_one() -> None:
    payload = {"url": "https://example.com/a"}
    built = JobEvent.build(kind="page", job_id="j", key="k", source="sse", data=payload)
    payload["url"] = "changed"
    assert built.data["url"] == "https://example.com/a"
    with pytest.raises(TypeError):
        built.data["url"] = "x"  # type: ignore[index]
    frozen = types.MappingProxyType({"a": 1})
    assert JobEvent.build(kind="page", job_id="j", key="k", source="s", data=frozen).data is frozen
    assert dict(JobEvent.build(kind="started", job_id="j", key="k", source="s").data) == {}
    with pytest.raises(ValueError):
        JobEvent.build(kind="exploded", job_id="j", key="k", source="s")
    with pytest.raises(TypeError):
        JobEvent.build("started", "j", key="k", source="s")  # type: ignore[call-arg]


def test_with_key_keeps_every_other_field() -> None:
    event = full_event(kind=EventKind.FAILED, status=JobStatus.FAILED, error="quota", attempt=2)
    moved = event.with_key("other#2")
    assert moved.key == "other#2"
    assert attrs.evolve(moved, key=event.key) == event
    assert moved.data is event.data


def test_data_is_not_part_of_equality() -> None:
    # Identity is the key and the fields; the payload as sent may differ between channels.
    assert full_event(data={"a": 1}) == full_event(data={"b": 2})
    assert full_event(key="x") != full_event(key="y")


@pytest.mark.parametrize("kind", list(EventKind))
def test_terminal_kinds(kind: EventKind) -> None:
    expected = kind.value in ("completed", "failed", "cancelled")
    assert make_event(kind, "j").terminal is expected
    assert kind.terminal is expected


@pytest.mark.parametrize("kind", list(EventKind))
def test_kinds_that_carry_data(kind: EventKind) -> None:
    # Declared, so that the guard and the pipeline name no kind of their own.
    assert kind.carries_data is (kind.value in ("page", "page_failed"))
    assert not (kind.carries_data and kind.terminal)


@pytest.mark.parametrize(
    ("status", "terminal", "rank"),
    [
        (JobStatus.QUEUED, False, 0),
        (JobStatus.PROCESSING, False, 1),
        (JobStatus.COMPLETED, True, 2),
        (JobStatus.FAILED, True, 2),
        (JobStatus.CANCELLED, True, 2),
    ],
)
def test_status_terminal_and_rank(status: JobStatus, terminal: bool, rank: int) -> None:
    assert (status.terminal, status.rank) == (terminal, rank)


def test_enums_are_strings() -> None:
    kind: str = EventKind.PAGE_FAILED  # compares equal to its value, as a str
    assert kind == "page_failed"
    assert JobStatus("cancelled") is JobStatus.CANCELLED
    assert [k.value for k in EventKind] == [
        "started",
        "progress",
        "page",
        "page_failed",
        "completed",
        "failed",
        "cancelled",
        "credit_low",
    ]


# -- the JSON form ---------------------------------------------------------------------------


def test_json_form_has_the_field_names_and_iso_time() -> None:
    obj = json.loads(full_event().to_json())
    assert obj == {
        "kind": "progress",
        "job_id": "job_1",
        "status": "processing",
        "completed": 3,
        "total": 9,
        "key": "job_1:progress:3",
        "source": "poll",
        "occurred_at": "2026-04-04T12:00:00+00:00",
        "error": None,
        "attempt": None,
        "data": {"status": "processing", "completed": 3, "total": 9},
    }
    failed = full_event(
        kind=EventKind.FAILED, status=JobStatus.FAILED, error="out of credits", attempt=3
    )
    obj = json.loads(failed.to_json())
    assert (obj["error"], obj["attempt"]) == ("out of credits", 3)
    assert list(obj) == [field.name for field in attrs.fields(JobEvent)]


@pytest.mark.parametrize("missing", [("error",), ("attempt",), ("error", "attempt")])
def test_an_event_written_before_error_and_attempt_existed_still_loads(
    missing: tuple[str, ...],
) -> None:
    old = full_event(error="boom", attempt=2).to_dict()
    for name in missing:
        del old[name]
    back = JobEvent.from_json(json.dumps(old))
    assert back == full_event(**{"error": "boom", "attempt": 2, **dict.fromkeys(missing)})
    assert JobEvent.from_dict(old) == back


def test_json_form_is_one_line() -> None:
    event = full_event(data={"markdown": "line 1\nline 2"})
    assert "\n" not in event.to_json()


def test_to_dict_is_json_ready() -> None:
    event = full_event(status=None, occurred_at=None, job_id=None)
    assert json.loads(json.dumps(event.to_dict())) == event.to_dict()


@settings(max_examples=200, deadline=None)
@given(events)
def test_json_round_trip(event: JobEvent) -> None:
    back = JobEvent.from_json(event.to_json())
    assert back == event
    assert dict(back.data) == dict(event.data)
    assert back.to_json() == event.to_json()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.floats() | json_values, max_size=4))
def test_json_round_trip_keeps_floats_json_has_no_form_for(data: dict[str, Any]) -> None:
    # An API's NaN or Infinity (which json.loads accepts) survives a durable store's inbox.
    event = make_event("progress", "job_1", completed=1, total=2, data=data)
    back = JobEvent.from_json(event.to_json())
    assert json.dumps(dict(back.data), sort_keys=True) == json.dumps(data, sort_keys=True)


# JSON's escapes can carry a lone surrogate (an API's string cut inside a character), which
# json.loads reads and UTF-8 cannot encode.
surrogate_text = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), max_size=8
)


@settings(max_examples=200, deadline=None)
@given(surrogate_text, st.dictionaries(surrogate_text, surrogate_text, max_size=3))
def test_json_round_trip_keeps_lone_surrogates(text: str, data: dict[str, str]) -> None:
    event = full_event(job_id=text, error=text, data=data)
    back = JobEvent.from_json(event.to_json())
    assert back == event and dict(back.data) == data


def test_json_form_writes_text_as_utf_8() -> None:
    event = full_event(job_id="job_é", error="échec: null", data={"titre": "ünïcode"})
    text = event.to_json()
    assert "job_é" in text and "échec: null" in text and "ünïcode" in text
    assert JobEvent.from_json(text.encode()) == event


@settings(max_examples=50, deadline=None)
@given(events)
def test_from_json_accepts_bytes(event: JobEvent) -> None:
    assert JobEvent.from_json(event.to_json().encode()) == event


@settings(max_examples=300, deadline=None)
@given(st.binary() | st.text())
def test_from_json_on_arbitrary_input_raises_only_decode_error(raw: bytes | str) -> None:
    try:
        event = JobEvent.from_json(raw)
    except DecodeError:
        return
    assert isinstance(event, JobEvent)


field_values = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from([k.value for k in EventKind]) | json_values,
        "job_id": st.text() | json_values,
        "status": st.sampled_from([s.value for s in JobStatus]) | json_values,
        "completed": st.integers() | json_values,
        "total": st.integers() | json_values,
        "key": st.text() | json_values,
        "source": st.text() | json_values,
        "occurred_at": st.datetimes().map(datetime.isoformat) | json_values,
        "error": st.text() | json_values,
        "attempt": st.integers() | json_values,
        "data": json_objects | json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(field_values)
def test_from_json_on_arbitrary_objects_raises_only_decode_error(obj: dict[str, Any]) -> None:
    try:
        event = JobEvent.from_json(json.dumps(obj))
    except DecodeError:
        return
    # Whatever parses is a complete event that writes back to the same fields.
    assert isinstance(event.kind, EventKind)
    assert isinstance(event.key, str) and isinstance(event.source, str)
    assert event.job_id is None or isinstance(event.job_id, str)
    assert event.error is None or isinstance(event.error, str)
    assert event.attempt is None or type(event.attempt) is int
    assert JobEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"kind": "started", "job_id": "j", "source": "poll"}', "missing the field 'key'"),
        (
            '{"kind": "started", "job_id": "j", "key": 5, "source": "poll"}',
            "'key' must be a string",
        ),
        ('{"kind": "boom", "job_id": "j", "key": "k", "source": "poll"}', "malformed event"),
        ('{"kind": "started", "job_id": 7, "key": "k", "source": "poll"}', "'job_id' must be"),
        (
            '{"kind": "progress", "job_id": "j", "key": "k", "source": "poll", "completed": "3"}',
            "expected an integer",
        ),
        (
            '{"kind": "progress", "job_id": "j", "key": "k", "source": "poll", "completed": true}',
            "expected an integer",
        ),
        (
            '{"kind": "page", "job_id": "j", "key": "k", "source": "poll", "data": [1]}',
            "'data' must be an object",
        ),
        (
            '{"kind": "page", "job_id": "j", "key": "k", "source": "poll", "occurred_at": "noon"}',
            "malformed event",
        ),
        (
            '{"kind": "failed", "job_id": "j", "key": "k", "source": "poll", "error": {"a": 1}}',
            "'error' must be a string or null",
        ),
        (
            '{"kind": "failed", "job_id": "j", "key": "k", "source": "poll", "attempt": "2"}',
            "expected an integer",
        ),
        (
            '{"kind": "failed", "job_id": "j", "key": "k", "source": "poll", "attempt": 2.0}',
            "expected an integer",
        ),
    ],
)
def test_from_json_messages(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        JobEvent.from_json(text)


def test_from_json_on_deeply_nested_input_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="nested too deeply"):
        JobEvent.from_json("[" * 100_000)


def test_make_event_builds_a_failure_and_a_numbered_attempt() -> None:
    # A failed event without its error, or an event of a re-run, took attrs.evolve to build.
    failed = make_event("failed", "j", error="out of credits", attempt=2)
    assert (failed.error, failed.attempt, failed.status) == ("out of credits", 2, "failed")
    assert failed.key == make_event("failed", "j").key
