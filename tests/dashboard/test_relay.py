"""The relay's sans-I/O core: ids and resume, snapshots, overflow, the table, the timeline,
and what never reaches a client (secrets)."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jobwatch
from jobwatch._relay import Client, Relay, Scrubber, secret_name
from jobwatch.testing import make_event


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def relay(**options: Any) -> Relay:
    return Relay(epoch="e1", clock=Clock(), **options)


def frames(data: bytes) -> list[dict[str, str]]:
    """The SSE events in ``data`` as {field: value} (data decoded later by the caller)."""
    events = []
    for block in data.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            events.append(fields)
    return events


def progress(job: str, n: int, **kw: Any) -> jobwatch.JobEvent:
    return make_event("progress", job, completed=n, total=10, **kw)


def test_each_event_is_one_frame_with_an_id_and_the_events_json_form() -> None:
    r = relay()
    event = progress("job_1", 3, data={"url": "https://example.com/a"})
    r.observe(event, None)
    client = r.connect("e1-0")
    (frame,) = frames(r.take(client))
    assert frame["id"] == "e1-1"
    assert json.loads(frame["data"]) == event.to_dict()
    assert r.take(client) == b""


def test_a_client_resumes_after_its_last_event_id_from_the_ring() -> None:
    r = relay(buffer=5)
    for n in range(1, 5):
        r.observe(progress("job_1", n), None)
    client = r.connect("e1-2")
    assert [f["id"] for f in frames(r.take(client))] == ["e1-3", "e1-4"]
    assert r.counts["resumed"] == 1 and r.counts["snapshots"] == 0


@pytest.mark.parametrize("last_event_id", [None, "e1-1", "other-7", "e1-x", "e1-99"])
def test_a_client_too_far_behind_or_from_another_process_gets_a_snapshot(
    last_event_id: str | None,
) -> None:
    r = relay(buffer=3)
    for n in range(1, 7):
        r.observe(progress("job_1", n), None)
    client = r.connect(last_event_id)
    (frame,) = frames(r.take(client))
    assert frame["event"] == "snapshot" and frame["id"] == "e1-6"
    table = json.loads(frame["data"])
    assert [(j["job_id"], j["completed"]) for j in table["jobs"]] == [("job_1", 6)]
    r.observe(progress("job_1", 7), None)
    assert [f["id"] for f in frames(r.take(client))] == ["e1-7"]  # then live, no gap


def test_the_ring_wraps_and_a_slow_reader_still_gets_each_event_once_in_order() -> None:
    r = relay(buffer=4)
    client = r.connect(None)
    r.take(client)
    seen: list[str] = []
    for n in range(1, 12):
        r.observe(progress("job_1", n), None)
        if n % 3 == 0:
            seen += [f["id"] for f in frames(r.take(client))]
    seen += [f["id"] for f in frames(r.take(client))]
    assert seen == [f"e1-{n}" for n in range(1, 12)]


def test_a_write_is_bounded_and_the_rest_follows_in_the_next() -> None:
    r = relay()
    for n in range(1, 21):
        r.observe(progress("job_1", n, data={"pad": "x" * 100}), None)
    client = r.connect("e1-0")
    first = frames(r.take(client, max_bytes=1000))
    second = frames(r.take(client, max_bytes=100_000))
    assert 1 < len(first) < 20
    assert [f["id"] for f in first + second] == [f"e1-{n}" for n in range(1, 21)]


def test_a_client_that_cannot_keep_up_is_resynced_with_a_snapshot_and_counted() -> None:
    r = relay(client_queue=3)
    client = r.connect(None)
    r.take(client)
    r.sent(client)
    for n in range(1, 4):  # three events behind: it may catch up
        r.observe(progress("job_1", n), None)
    r.sent(client)
    assert r.counts["resyncs"] == 0
    r.observe(progress("job_1", 4), None)  # four: it cannot keep up
    r.sent(client)
    assert r.counts["resyncs"] == 1
    (frame,) = frames(r.take(client))
    assert frame["event"] == "snapshot" and frame["id"] == "e1-4"
    r.observe(progress("job_1", 5), None)
    assert [f["id"] for f in frames(r.take(client))] == ["e1-5"]
    r.sent(client)
    assert r.counts["resyncs"] == 1


def test_the_backlog_a_client_resumes_with_is_not_taken_as_falling_behind() -> None:
    r = relay(client_queue=3, buffer=100)
    for n in range(1, 11):
        r.observe(progress("job_1", n), None)
    client = r.connect("e1-1")  # nine events to catch up on
    first = frames(r.take(client, max_bytes=1))
    r.sent(client)
    rest = frames(r.take(client))
    assert [f["id"] for f in first + rest] == [f"e1-{n}" for n in range(2, 11)]
    assert r.counts["resyncs"] == 0


def test_a_client_whose_position_left_the_ring_is_resynced() -> None:
    r = relay(buffer=2)
    client = Client(position=0)
    r.clients.add(client)
    for n in range(1, 5):
        r.observe(progress("job_1", n), None)
    assert frames(r.take(client))[0]["event"] == "snapshot"
    assert r.counts["resyncs"] == 1


def test_the_table_follows_status_progress_failure_and_a_new_run() -> None:
    r = relay()
    r.observe(make_event("started", "job_1", source="sse"), None)
    r.observe(progress("job_1", 4, source="webhook"), None)
    r.observe(make_event("page_failed", "job_1", url="https://a.example/x"), None)
    failed = attrs.evolve(make_event("failed", "job_1"), error="the browser pool crashed")
    r.observe(failed, None)
    (row,) = r.table()["jobs"]
    assert row | {"age": 0, "idle": 0} == {
        "job_id": "job_1",
        "status": "failed",
        "kind": "failed",
        "completed": 4,
        "total": 10,
        "source": "sse",
        "error": "the browser pool crashed",
        "attempt": None,
        "events": 4,
        "dropped": 0,
        "page_errors": 1,
        "age": 0,
        "idle": 0,
    }
    r.observe(make_event("started", "job_1", key="job_1:started#2"), None)
    assert r.table()["jobs"][0]["error"] is None and r.table()["jobs"][0]["status"] == "processing"


def test_drops_appear_in_the_timeline_once_each_with_a_count() -> None:
    r = relay()
    r.observe(progress("job_1", 1, source="sse"), None)
    for _ in range(3):
        r.observe(progress("job_1", 1, source="webhook"), "duplicate")
    r.observe(progress("job_1", 0, source="poll"), "stale")
    timeline = r.job("job_1")["timeline"]  # type: ignore[index]
    assert [(e["source"], e["dropped"], e["count"]) for e in timeline] == [
        ("sse", None, 1),
        ("webhook", "duplicate", 3),
        ("poll", "stale", 1),
    ]
    assert r.table()["jobs"][0]["dropped"] == 4


def test_a_duplicate_of_an_unknown_job_shows_the_job_and_a_stale_event_does_not() -> None:
    r = relay()
    r.observe(progress("job_old", 7, source="poll"), "duplicate")
    r.observe(progress("job_gone", 2, source="poll"), "stale")
    assert [(j["job_id"], j["completed"]) for j in r.table()["jobs"]] == [("job_old", 7)]
    assert r.seq == 0  # nothing was dispatched: nothing is sent on /events


def test_text_cut_inside_a_character_is_shown_and_breaks_no_frame_or_snapshot() -> None:
    # JSON's escapes can carry a lone surrogate (an API's string cut inside an emoji), which
    # UTF-8 cannot: it is shown as U+FFFD, in the event's frame, the table and the snapshot.
    r = relay()
    cut = "disk quota exceeded \ud83d"
    failed = make_event("failed", "job_1", status="failed", data={"error": cut})
    r.observe(attrs.evolve(failed, error=cut), None)
    r.observe(attrs.evolve(failed, error=cut, source="poll"), "duplicate")
    (frame,) = frames(r.take(r.connect("e1-0")))
    assert json.loads(frame["data"])["error"] == "disk quota exceeded \ufffd"
    assert json.loads(r.snapshot_frame().split(b"data: ", 1)[1])["jobs"][0]["error"] == (
        "disk quota exceeded \ufffd"
    )
    assert r.table()["jobs"][0]["error"] == cut  # the table keeps the text as it came


def test_new_jobs_are_followed_until_they_end_or_leave_the_table() -> None:
    followed: dict[str, list[str]] = {}

    class Handle:
        def __init__(self, job_id: str) -> None:
            self.job_id = job_id
            followed[job_id] = ["on"]

        def cancel(self) -> None:
            followed[self.job_id].append("off")

    r = relay(follow=Handle, jobs=2)
    r.observe(make_event("started", "job_1"), None)
    r.observe(make_event("completed", "job_1"), None)
    r.observe(make_event("completed", "job_done"), None)  # ended when first seen: not followed
    r.observe(make_event("started", "job_2"), None)
    r.observe(make_event("started", "job_3"), None)  # the table is full: a finished job leaves
    assert followed == {"job_1": ["on", "off"], "job_2": ["on"], "job_3": ["on"]}
    assert [j["job_id"] for j in r.table()["jobs"]] == ["job_2", "job_3"]
    r.observe(make_event("started", "job_4"), None)  # none finished: the oldest leaves
    assert followed["job_2"] == ["on", "off"]


def test_workspace_events_are_relayed_and_kept_as_the_notice() -> None:
    r = relay()
    r.observe(make_event("credit_low", None, data={"balance": 12}), None)
    assert r.table()["jobs"] == [] and r.table()["notice"]["data"] == {"balance": 12}
    assert r.seq == 1


# -- secrets -----------------------------------------------------------------------------------


def test_the_configurations_secrets_are_collected() -> None:
    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_key_123456",
                "transport": "webhook",
                "webhook": {"secrets": ["whsec_first", "whsec_second"]},
                "dashboard": {"token": "dashboard-token-0123456789"},
            }
        }
    )
    scrubber = Scrubber.for_config(config)
    text = "rdr_key_123456 whsec_first whsec_second dashboard-token-0123456789 fine"
    assert scrubber.text(text) == "*** *** *** *** fine"


@pytest.mark.parametrize(
    "name",
    [
        "secret",
        "webhookSecret",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "Authorization",
        "access_token",
        "password",
        "signature",
    ],
)
def test_keys_named_like_secrets_are_redacted(name: str) -> None:
    assert secret_name(name)
    assert Scrubber(()).payload({name: "value", "nested": [{name: 1}]}) == {
        name: "***",
        "nested": [{name: "***"}],
    }


@pytest.mark.parametrize("name", ["total_tokens", "status", "url", "keys", "id"])
def test_ordinary_keys_are_kept(name: str) -> None:
    assert not secret_name(name)


SECRET = "sk_live_SECRETVALUE"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    prefix=st.text(max_size=5),
    suffix=st.text(max_size=5),
    error=st.text(max_size=10),
)
def test_no_secret_reaches_a_frame_or_the_table_whatever_the_payload(
    payload: dict[str, Any], prefix: str, suffix: str, error: str
) -> None:
    r = Relay(epoch="e1", clock=Clock(), scrubber=Scrubber([SECRET]))
    planted = {**payload, "note": prefix + SECRET + suffix, "list": [SECRET]}
    event = attrs.evolve(make_event("failed", "job_" + SECRET, data=planted), error=error + SECRET)
    r.observe(event, None)
    r.observe(event, "duplicate")
    sent = r.take(r.connect("e1-0")) + r.snapshot_frame() + json.dumps(r.table()).encode()
    sent += json.dumps(r.job("job_***")).encode()
    assert SECRET.encode() not in sent


@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=60),
    budget=st.integers(1, 5000),
    start=st.integers(0, 59),
    ring=st.integers(1, 80),
)
def test_writes_carry_every_frame_once_in_order_within_the_byte_budget(
    sizes: list[int], budget: int, start: int, ring: int
) -> None:
    r = relay(buffer=ring)
    for n, size in enumerate(sizes, 1):
        r.observe(progress("job_1", n, data={"pad": "x" * size}), None)
    after = max(min(start, r.seq), r.seq - ring)
    client = r.connect(f"e1-{after}")
    got: list[str] = []
    while write := r.take(client, max_bytes=budget):
        ids = [f["id"] for f in frames(write)]
        assert len(write) <= budget or len(ids) == 1
        got += ids
    assert got == [f"e1-{n}" for n in range(after + 1, r.seq + 1)]
