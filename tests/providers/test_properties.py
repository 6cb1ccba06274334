"""Property tests: no input crashes a described API's decoders or its loading, no decoder
yields a half-filled event, and no job id changes where a request goes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest
from _samples import REPOSITORY, provider
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_conformance import CRAWLS
from test_description import BASE

import jobwatch
from jobwatch import EventKind, JobEvent, JobStatus
from jobwatch.abc import Provider, Response
from jobwatch.providers._describe import VOCABULARY

PROVIDERS = {
    "generic": lambda: provider("generic", CRAWLS),
    "openai-batch": lambda: provider("openai-batch"),
    "github-actions": lambda: provider("github-actions", {"repository": REPOSITORY}),
    "replicate": lambda: provider("replicate"),
}
FIELDS = [
    "status",
    "conclusion",
    "id",
    "data",
    "type",
    "action",
    "workflow_run",
    "error",
    "errors",
    "request_counts",
    "completed",
    "failed",
    "total",
    "run_attempt",
    "urls",
    "stream",
    "output",
    "reason",
    "repository",
    "full_name",
    "message",
    "url",
    "jobs",
]
WORDS = [
    "completed",
    "failed",
    "in_progress",
    "succeeded",
    "canceled",
    "aborted",
    "success",
    "batch.completed",
    "workflow_run",
    "octo-org/hello-world",
    "processing",
    "expired",
]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2**70),
    st.sampled_from(WORDS),
    st.text(max_size=8),
    st.floats(allow_nan=True),
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=25,
)
bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64))
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def whole(event: JobEvent, job_id: str | None) -> None:
    """Every field of the event is what the event model promises: nothing half-filled."""
    assert isinstance(event.kind, EventKind)
    if job_id is not None:
        assert event.job_id == job_id
    assert isinstance(event.job_id, str) and event.job_id
    assert isinstance(event.key, str) and event.key.startswith(f"{event.job_id}:")
    assert event.status is None or isinstance(event.status, JobStatus)
    for count in (event.completed, event.total, event.attempt):
        assert count is None or type(count) is int and count >= 0
    if event.terminal:
        assert event.status is not None and event.status.terminal
    if event.kind in (EventKind.FAILED, EventKind.PAGE_FAILED):
        assert isinstance(event.error, str) and event.error
    else:
        assert event.error is None
    json.dumps(event.to_dict(), default=str)  # storable


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_arbitrary_answers_never_crash_a_decoder(name: str) -> None:
    built: Provider = PROVIDERS[name]()

    @SETTINGS
    @given(
        body=bodies,
        status=st.sampled_from([200, 200, 403, 404, 429, 500]),
        headers=st.dictionaries(
            st.sampled_from(
                ["link", "retry-after", "x-github-event", "x-ratelimit-remaining", "webhook-id"]
            ),
            st.sampled_from(["0", "30", "workflow_run", "ping", '<https://x>; rel="next"', "abc"]),
            max_size=3,
        ),
        frame=st.sampled_from(
            ["output", "logs", "error", "done", "snapshot", "document", "message", ""]
        ),
    )
    def check(body: bytes, status: int, headers: dict[str, str], frame: str) -> None:
        response = Response(status=status, headers=headers, body=body)
        calls: list[Callable[[], Iterable[object]]] = [
            lambda: built.decode_status("job-1", response, None, source="poll")[1],
            lambda: built.decode_webhook(headers, body, source="webhook").events,
            lambda: built.decode_results("job-1", response).items,
        ]
        if built.capabilities.job_stream:
            text = body.decode("utf-8", "replace")
            calls.append(lambda: built.decode_stream_event("job-1", frame, text, source="sse"))
        for call in calls:
            try:
                out = call()
            except jobwatch.JobwatchError:
                continue
            for item in out:
                if isinstance(item, JobEvent):
                    whole(item, None if call is calls[1] else "job-1")
        assert isinstance(built.classify(response).outcome, str)
        assert isinstance(built.error_for(response), jobwatch.JobwatchError)

    check()


# -- loading arbitrary tables --------------------------------------------------------------

KEYS = sorted({key for keys in VOCABULARY.values() for key in keys} | {"map", "x", "when"})
SCALARS = st.one_of(
    st.booleans(),
    st.integers(-5, 700),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            "status",
            "`true`",
            "true",
            "a.b",
            "x[",
            "GET /jobs/{id}",
            "GET /{nope}",
            "completed",
            "status == 'done'",
            "@",
            "counts",
            "bearer",
            "url",
            "done",
            "page",
            "thin",
            "object",
            "link",
            "cursor",
            "`null`",
            "failed",
        ]
    ),
    st.text(max_size=6),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
PLACES = [
    ("job",),
    ("status",),
    ("status", "map"),
    ("progress",),
    ("results",),
    ("stream",),
    ("webhook",),
    ("rate_limit",),
    ("errors",),
    ("auth",),
    ("stream", "events"),
    ("webhook", "events"),
    (),
]


def _mutated(
    seed: dict[str, Any], changes: list[tuple[tuple[str, ...], str, Any]]
) -> dict[str, Any]:
    table = copy.deepcopy(seed)
    for place, key, value in changes:
        node: Any = table
        for part in place:
            if not isinstance(node, dict):
                break
            node = node.setdefault(part, {})
        if isinstance(node, dict):
            node[key] = value
    return table


@SETTINGS
@given(
    seed=st.sampled_from([BASE, CRAWLS]),
    changes=st.lists(
        st.tuples(st.sampled_from(PLACES), st.sampled_from(KEYS), TOML_VALUES), max_size=4
    ),
)
def test_arbitrary_tables_load_or_raise_config_error(
    seed: dict[str, Any], changes: list[Any]
) -> None:
    table = _mutated(seed, changes)
    try:
        built = provider("generic", table)
    except jobwatch.ConfigError:
        return
    built.status_request("job-1")


@SETTINGS
@given(table=st.dictionaries(st.sampled_from(KEYS), TOML_VALUES, max_size=6))
def test_random_tables_load_or_raise_config_error(table: dict[str, Any]) -> None:
    try:
        provider("generic", table)
    except jobwatch.ConfigError:
        pass


# -- job ids are data ----------------------------------------------------------------------

QUERY_TEMPLATE = dict(BASE, job={"get": "GET /v2/jobs/{id}/status?expand=text&tag={id}"})
ids = st.one_of(
    st.text(min_size=1, max_size=20),
    st.sampled_from(
        [
            "a/b",
            "../../etc/passwd",
            "x?limit=5",
            "..",
            ".",
            "a#b",
            "%2F",
            "a&b=c",
            "a/../..",
            " ",
            "é/ü",
        ]
    ),
)


@pytest.mark.parametrize("name", ["generic-query", *sorted(PROVIDERS)])
def test_a_job_id_never_changes_the_path_or_query(name: str) -> None:
    built = provider("generic", QUERY_TEMPLATE) if name == "generic-query" else PROVIDERS[name]()
    reference = built.status_request("job-1")
    client = httpx.Client(base_url="https://api.example.com/base")
    expected = client.build_request("GET", reference.path, params=dict(reference.params)).url

    @SETTINGS
    @given(job_id=ids)
    def check(job_id: str) -> None:
        request = built.status_request(job_id)
        url = client.build_request(request.method, request.path, params=dict(request.params)).url
        assert url.raw_path.count(b"/") == expected.raw_path.count(b"/")
        assert b"/../" not in url.raw_path and not url.raw_path.endswith(b"/..")
        assert sorted(url.params.keys()) == sorted(expected.params.keys())
        assert url.host == expected.host
        if "tag" in url.params:
            assert url.params["tag"] == job_id

    check()
    with pytest.raises(jobwatch.InvalidJobId):
        built.status_request("")
