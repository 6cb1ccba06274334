"""How responses are classified: the standard HTTP default any provider gets, its public header
parsing (arbitrary input never raises, waits are capped), and Reader's own documented errors."""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobwatch import APIError, JobwatchError, RateLimited
from jobwatch.abc import (
    Classification,
    Outcome,
    RateLimit,
    Response,
    classify_http,
    parse_rate_limit,
    parse_retry_after,
)
from jobwatch.providers.reader import ReaderProvider

NOW = 1_800_000_000
DATE = email.utils.formatdate(NOW, usegmt=True)


def answer(status: int, body: bytes = b"", /, **headers: str) -> Response:
    return Response(
        status=status, headers={k.replace("_", "-"): v for k, v in headers.items()}, body=body
    )


def plain_error(response: Response) -> JobwatchError:
    return APIError(f"HTTP {response.status}", status=response.status)


# -- the standard HTTP default ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "outcome", "wait"),
    [
        (answer(200), Outcome.FINE, None),
        (answer(204), Outcome.FINE, None),
        (answer(429), Outcome.RATE_LIMITED, None),
        (answer(429, retry_after="12"), Outcome.RATE_LIMITED, 12.0),
        (answer(503, retry_after="30"), Outcome.RATE_LIMITED, 30.0),
        (answer(503), Outcome.RETRY, None),
        (answer(500), Outcome.RETRY, None),
        (answer(502, retry_after="5"), Outcome.RETRY, 5.0),
        (answer(408), Outcome.RETRY, None),
        (answer(404), Outcome.GONE, None),
        (answer(410), Outcome.GONE, None),
        (answer(401), Outcome.FATAL, None),
        (answer(403), Outcome.FATAL, None),
        (answer(400), Outcome.FATAL, None),
        (answer(409), Outcome.FATAL, None),
        (answer(301), Outcome.FATAL, None),
        # GitHub's secondary limit: 403 (or 429) + retry-after.
        (answer(403, retry_after="60"), Outcome.RATE_LIMITED, 60.0),
        # GitHub's primary limit: remaining 0, reset a Unix time measured against Date.
        (
            answer(403, x_ratelimit_remaining="0", x_ratelimit_reset=str(NOW + 1800), date=DATE),
            Outcome.RATE_LIMITED,
            1800.0,
        ),
        (
            answer(429, x_ratelimit_remaining="0", x_ratelimit_reset=str(NOW + 90), date=DATE),
            Outcome.RATE_LIMITED,
            90.0,
        ),
        # A 403 that says budget remains is a refusal, not a rate limit.
        (
            answer(403, x_ratelimit_remaining="12", x_ratelimit_reset=str(NOW + 90), date=DATE),
            Outcome.FATAL,
            None,
        ),
        # The job is gone even when the budget happens to be spent.
        (
            answer(404, x_ratelimit_remaining="0", x_ratelimit_reset=str(NOW + 90), date=DATE),
            Outcome.GONE,
            None,
        ),
    ],
    ids=lambda value: repr(value) if not isinstance(value, Response) else None,
)
def test_the_default_reads_standard_http(
    response: Response, outcome: Outcome, wait: float | None
) -> None:
    verdict = classify_http(response, plain_error)
    assert (verdict.outcome, verdict.wait) == (outcome, wait)


def test_the_rate_limit_headers_ride_along_whatever_the_outcome() -> None:
    headers = {
        "x_ratelimit_limit": "5000",
        "x_ratelimit_remaining": "4321",
        "x_ratelimit_reset": str(NOW + 600),
        "date": DATE,
    }
    for status in (200, 404, 500):
        verdict = classify_http(answer(status, **headers), plain_error)
        assert verdict.rate_limit == RateLimit(limit=5000, remaining=4321, reset=600.0)


def test_a_rate_limited_error_from_error_for_is_honoured() -> None:
    # An API that says "slow down" with a 400 and its own code: the provider's error_for knows.
    def error_for(response: Response) -> JobwatchError:
        return RateLimited("slow down", status=response.status, retry_after=42.0)

    verdict = classify_http(answer(400), error_for)
    assert (verdict.outcome, verdict.wait) == (Outcome.RATE_LIMITED, 42.0)


def test_the_error_is_only_asked_for_answers_that_failed() -> None:
    def error_for(response: Response) -> JobwatchError:
        raise AssertionError("error_for called for a 2xx")

    assert classify_http(answer(200), error_for).outcome is Outcome.FINE


def test_the_provider_base_class_classifies_by_default() -> None:
    from _runs_api import RunsProvider

    provider = RunsProvider()
    assert provider.classify(answer(403, retry_after="60")) == Classification.rate_limited(
        wait=60.0
    )
    assert provider.classify(answer(410)).ends


# -- header parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "120"}, 120.0),
        ({"Retry-After": "7"}, 7.0),  # a provider's own Response may keep the server's spelling
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": email.utils.formatdate(NOW + 45, usegmt=True), "date": DATE}, 45.0),
        ({"retry-after": email.utils.formatdate(NOW - 45, usegmt=True), "date": DATE}, 0.0),
        ({"retry-after": email.utils.formatdate(NOW + 45, usegmt=True)}, None),  # no Date
        ({"retry-after": "-5"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "1e400"}, None),
        ({"retry-after": "99999999"}, 3600.0),  # capped: one header cannot stop a Watcher for good
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(Response(status=429, headers=headers)) == seconds


def test_retry_after_takes_a_lower_cap() -> None:
    assert parse_retry_after(answer(429, retry_after="600"), cap=60.0) == 60.0


@pytest.mark.parametrize(
    ("headers", "limits"),
    [
        (
            {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(NOW + 1200),
                "date": DATE,
            },
            RateLimit(limit=5000, remaining=0, reset=1200.0),
        ),
        (
            {"x-ratelimit-remaining": "3", "x-ratelimit-reset": "20"},
            RateLimit(remaining=3, reset=20.0),
        ),
        (
            {
                "ratelimit-limit": "100, 100;w=60",
                "ratelimit-remaining": "99",
                "ratelimit-reset": "50",
            },
            RateLimit(limit=100, remaining=99, reset=50.0),
        ),
        ({"x-ratelimit-reset": str(NOW + 1200)}, RateLimit()),  # a Unix time without a Date
        ({"x-ratelimit-reset": str(NOW - 5), "date": DATE}, RateLimit(reset=0.0)),
        ({"x-ratelimit-reset": str(NOW + 86400), "date": DATE}, RateLimit(reset=3600.0)),
        ({"x-ratelimit-remaining": "lots", "x-ratelimit-limit": "0"}, RateLimit()),
        ({"content-type": "application/json"}, None),
    ],
)
def test_rate_limit_headers(headers: dict[str, str], limits: RateLimit | None) -> None:
    assert parse_rate_limit(Response(status=200, headers=headers)) == limits


header_names = st.sampled_from(
    [
        "retry-after",
        "date",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit-reset",
        "ratelimit-remaining",
        "ratelimit-limit",
    ]
)
header_values = (
    st.text(max_size=40)
    | st.from_regex(r"-?\d{1,25}(\.\d{0,5})?", fullmatch=True)
    | st.builds(
        lambda t: email.utils.formatdate(t, usegmt=True), st.floats(0, 4e9, allow_nan=False)
    )
)


@given(
    status=st.integers(100, 599), headers=st.dictionaries(header_names, header_values, max_size=8)
)
def test_any_headers_classify_without_raising_and_waits_stay_bounded(
    status: int, headers: Mapping[str, str]
) -> None:
    response = Response(status=status, headers=headers)
    verdict = classify_http(response, plain_error)
    assert isinstance(verdict.outcome, Outcome)
    for wait in (
        verdict.wait,
        parse_retry_after(response),
        verdict.rate_limit.reset if verdict.rate_limit else None,
    ):
        assert wait is None or 0.0 <= wait <= 3600.0
    if verdict.rate_limit is not None:
        assert verdict.rate_limit.remaining is None or verdict.rate_limit.remaining >= 0


# -- the value ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_a_wait_must_be_a_number_of_seconds(bad: float) -> None:
    with pytest.raises(ValueError, match="wait"):
        Classification.retry(wait=bad)
    with pytest.raises(ValueError, match="reset"):
        RateLimit(reset=bad)


def test_absurd_waits_are_capped_at_an_hour() -> None:
    assert Classification.rate_limited(wait=math.inf).wait == 3600.0
    assert RateLimit(reset=1e12).reset == 3600.0
    with pytest.raises(ValueError, match="remaining"):
        RateLimit(remaining=-1)


def test_which_outcomes_end_a_watch() -> None:
    assert [o for o in Outcome if Classification(outcome=o).ends] == [Outcome.GONE, Outcome.FATAL]


# -- Reader -------------------------------------------------------------------------------------


def reader_error(
    status: int, code: str, details: Mapping[str, object] | None = None, **headers: str
) -> Response:
    error: dict[str, object] = {
        "code": code,
        "message": "scripted",
        "docsUrl": "https://reader.dev/docs",
    }
    if details is not None:
        error["details"] = details
    return answer(status, json.dumps({"success": False, "error": error}).encode(), **headers)


READER = ReaderProvider()
RATE = {"limit": 60, "windowSeconds": 60, "retryAfterSeconds": 12}


@pytest.mark.parametrize(
    ("response", "outcome", "wait"),
    [
        (reader_error(429, "rate_limited", RATE, retry_after="12"), Outcome.RATE_LIMITED, 12.0),
        (reader_error(429, "rate_limited", RATE), Outcome.RATE_LIMITED, 12.0),  # the body says it
        (reader_error(429, "rate_limited"), Outcome.RATE_LIMITED, None),
        # Too many active jobs: nothing a pause of every request cures; that job backs off.
        (reader_error(429, "concurrency_limited", {"active": 10, "max": 10}), Outcome.RETRY, None),
        (reader_error(401, "unauthenticated"), Outcome.FATAL, None),
        (reader_error(400, "invalid_request"), Outcome.FATAL, None),
        (reader_error(402, "insufficient_credits"), Outcome.FATAL, None),
        (reader_error(403, "url_blocked"), Outcome.FATAL, None),
        (reader_error(409, "conflict"), Outcome.FATAL, None),
        (reader_error(404, "not_found"), Outcome.GONE, None),
        (reader_error(500, "internal_error"), Outcome.RETRY, None),
        (reader_error(502, "upstream_unavailable"), Outcome.RETRY, None),
        (reader_error(504, "scrape_timeout"), Outcome.RETRY, None),
        (answer(200, b'{"success": true, "data": {}}'), Outcome.FINE, None),
    ],
    ids=lambda value: repr(value) if not isinstance(value, Response) else None,
)
def test_reader_classifies_its_documented_errors(
    response: Response, outcome: Outcome, wait: float | None
) -> None:
    verdict = READER.classify(response)
    assert (verdict.outcome, verdict.wait) == (outcome, wait)
