"""The conformance suite a provider's tests subclass: decoders pure, events whole, keys shared."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._errors import APIError, JobNotFound, JobwatchError
from .._events import EventKind, JobEvent, JobStatus
from ..abc import Outcome, Provider, Response

__all__ = ["ProviderConformance", "ProviderSamples"]

_OUTCOMES = {
    JobStatus.COMPLETED: EventKind.COMPLETED,
    JobStatus.FAILED: EventKind.FAILED,
    JobStatus.CANCELLED: EventKind.CANCELLED,
}


@attrs.frozen(kw_only=True)
class ProviderSamples:
    """Wire samples of one API, as its documentation shows them, for :class:`ProviderConformance`.

    - ``job_id``: the job every sample is about.
    - ``statuses``: a status response per normalized status the API has (``"queued"``,
      ``"processing"``, ``"completed"``, ``"failed"``, ``"cancelled"``).
    - ``unknown_status``: a status response whose status value the provider does not know.
    - ``frames``: per terminal status, the ``(event, data)`` stream frame of the job's own
      stream that reports it (where the API has streams).
    - ``webhooks``: per terminal status, the verified ``(headers, body)`` of a delivery that
      reports it (where the API sends webhooks).
    - ``not_found``: the answer to a status request for a job that does not exist.
    - ``rate_limited``: an answer that says the request budget is spent (a 429, a 403 with a
      rate-limit header, whatever the API sends).
    """

    job_id: str
    statuses: Mapping[str, Response]
    unknown_status: Response
    frames: Mapping[str, tuple[str, str]] = attrs.field(factory=dict)
    webhooks: Mapping[str, tuple[Mapping[str, str], bytes]] = attrs.field(factory=dict)
    not_found: Response | None = None
    rate_limited: Response | None = None


class ProviderConformance:
    """Behaviour every Provider must show. Provide the ``provider`` and ``samples`` fixtures.

    ::

        class TestMyProvider(ProviderConformance):
            @pytest.fixture
            def provider(self):
                return MyProvider(jobwatch.Config.from_mapping({"jobwatch": {...}}))

            @pytest.fixture
            def samples(self):
                return ProviderSamples(job_id="j1", statuses={...}, unknown_status=...)
    """

    @pytest.fixture
    def provider(self) -> Provider:
        raise NotImplementedError("override the provider fixture")

    @pytest.fixture
    def samples(self) -> ProviderSamples:
        raise NotImplementedError("override the samples fixture")

    def _poll(
        self, provider: Provider, samples: ProviderSamples, response: Response
    ) -> list[JobEvent]:
        _, events = provider.decode_status(samples.job_id, response, None, source="poll")
        return events

    def test_has_a_name_and_capabilities(self, provider: Provider) -> None:
        assert isinstance(provider.name, str) and provider.name
        assert provider.capabilities is not None

    def test_status_request_names_the_job_as_data(self, provider: Provider) -> None:
        for job_id in ("a/b", "../up", "x?limit=5", "id#frag", "sp ace"):
            request = provider.status_request(job_id)
            assert "?" not in request.path and "#" not in request.path
            assert "/../" not in request.path and not request.path.endswith("/..")

    def test_decoding_is_pure(self, provider: Provider, samples: ProviderSamples) -> None:
        for response in samples.statuses.values():
            before = copy.deepcopy(response)
            first = self._poll(provider, samples, response)
            again = self._poll(provider, samples, response)
            assert first == again and [e.key for e in first] == [e.key for e in again]
            assert response == before

    def test_events_are_whole(self, provider: Provider, samples: ProviderSamples) -> None:
        for status, response in samples.statuses.items():
            events = self._poll(provider, samples, response)
            for event in events:
                assert event.job_id == samples.job_id, status
                assert isinstance(event.key, str) and event.key, status
                assert event.source == "poll", status
                if event.terminal:
                    assert event.status is not None and event.status.terminal, status
                if event.kind is EventKind.FAILED:
                    assert event.error, f"a failed event says why ({status})"
            expected = _OUTCOMES.get(JobStatus(status))
            terminal = [e.kind for e in events if e.terminal]
            assert terminal == ([expected] if expected else []), status

    def test_an_unknown_status_is_never_taken_as_running(
        self, provider: Provider, samples: ProviderSamples, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING):
            snapshot, events = provider.decode_status(
                samples.job_id, samples.unknown_status, None, source="poll"
            )
        running = (JobStatus.QUEUED, JobStatus.PROCESSING)
        assert snapshot.status not in running
        assert all(e.status not in running for e in events)
        assert snapshot.raw_status, "the raw status value is kept"
        assert any(r.levelno >= logging.WARNING for r in caplog.records), (
            "an unknown status is warned about"
        )

    def test_keys_are_equal_across_channels(
        self, provider: Provider, samples: ProviderSamples
    ) -> None:
        if not samples.frames and not samples.webhooks:
            pytest.skip("no stream frames or webhook deliveries among the samples")
        for status, response in samples.statuses.items():
            polled = {e.key for e in self._poll(provider, samples, response) if e.terminal}
            if status in samples.frames:
                name, data = samples.frames[status]
                streamed = provider.decode_stream_event(samples.job_id, name, data, source="sse")
                assert {e.key for e in streamed if e.terminal} == polled, status
            if status in samples.webhooks:
                headers, body = samples.webhooks[status]
                delivery = provider.decode_webhook(headers, body, source="webhook")
                assert {e.key for e in delivery.events if e.terminal} == polled, status

    def test_not_found_is_classified(self, provider: Provider, samples: ProviderSamples) -> None:
        if samples.not_found is None:
            pytest.skip("no not-found sample")
        assert isinstance(provider.error_for(samples.not_found), JobNotFound)
        assert provider.classify(samples.not_found).outcome is Outcome.GONE

    def test_a_rate_limit_pauses_and_never_ends_a_watch(
        self, provider: Provider, samples: ProviderSamples
    ) -> None:
        if samples.rate_limited is None:
            pytest.skip("no rate-limited sample")
        assert provider.classify(samples.rate_limited).outcome is Outcome.RATE_LIMITED

    def test_every_status_sample_is_fine(
        self, provider: Provider, samples: ProviderSamples
    ) -> None:
        for status, response in samples.statuses.items():
            assert provider.classify(response).outcome is Outcome.FINE, status

    def test_arbitrary_bodies_never_crash_a_decoder(
        self, provider: Provider, samples: ProviderSamples
    ) -> None:
        @settings(
            max_examples=200,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            status=st.sampled_from([200, 201, 400, 404, 429, 500]),
            body=st.one_of(st.binary(max_size=512), _json_bytes()),
        )
        def check(status: int, body: bytes) -> None:
            response = Response(status=status, body=body)
            try:
                _, events = provider.decode_status(samples.job_id, response, None, source="poll")
            except JobwatchError:
                events = []
            for event in events:  # whatever the body, an event is whole or not made
                assert event.job_id == samples.job_id and event.key and event.source == "poll"
                assert not event.terminal or (event.status is not None and event.status.terminal)
                assert event.kind is not EventKind.FAILED or event.error
            error = provider.error_for(Response(status=max(status, 400), body=body))
            assert isinstance(error, APIError | JobwatchError)

        check()


def _json_bytes() -> st.SearchStrategy[bytes]:
    import json

    leaves: st.SearchStrategy[Any] = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=12)
        | st.floats(allow_nan=False)
    )
    values = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["status", "data", "id", "completed", "total", "error", "success"]),
                inner,
                max_size=5,
            )
        ),
        max_leaves=12,
    )
    return values.map(lambda v: json.dumps(v).encode())
