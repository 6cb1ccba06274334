"""The conformance suite for webhook signature schemes: subclass, provide a fixture, run.

::

    import pytest
    from jobwatch.testing import SchemeConformance

    class TestMyScheme(SchemeConformance):
        @pytest.fixture
        def make_scheme(self):
            return lambda secrets, tolerance: MyScheme(secrets, tolerance=tolerance)

The built-in schemes run the same suite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import pytest

from .._errors import ConfigError, WebhookVerificationError
from ..abc import Scheme

__all__ = ["SchemeConformance"]

SchemeFactory = Callable[[Sequence[str], float], Scheme]

NOW = 1_712_275_200.0
BODY = b'{"id":"job_1","status":"completed","count":3}'


def _fails(
    status: int, scheme: Scheme, headers: dict[str, str], body: bytes, now: float = NOW
) -> WebhookVerificationError:
    with pytest.raises(WebhookVerificationError) as info:
        scheme.verify(headers, body, now=now)
    assert info.value.status == status, f"answered {info.value.status}: {info.value}"
    return info.value


class SchemeConformance:
    """Behaviour every :class:`~jobwatch.abc.Scheme` must show.

    Provide ``make_scheme(secrets, tolerance) -> Scheme`` as a fixture (with the scheme's
    options, if it has any). Override the ``secrets`` fixture where the scheme takes secrets
    of a particular form (two different ones), and set ``timestamped = False`` for a scheme
    that signs no timestamp.
    """

    #: Whether the scheme signs a timestamp (and so refuses stale and future deliveries).
    timestamped: ClassVar[bool] = True

    @pytest.fixture
    def make_scheme(self) -> SchemeFactory:
        raise NotImplementedError("override the make_scheme fixture")

    @pytest.fixture
    def secrets(self) -> tuple[str, str]:
        return "conformance-secret-0123456789", "the-next-secret-9876543210"

    def test_has_a_name(self, make_scheme: SchemeFactory, secrets: tuple[str, str]) -> None:
        scheme = make_scheme([secrets[0]], 300.0)
        assert isinstance(scheme, Scheme)
        assert isinstance(scheme.name, str) and scheme.name

    def test_sign_then_verify(self, make_scheme: SchemeFactory, secrets: tuple[str, str]) -> None:
        scheme = make_scheme([secrets[0]], 300.0)
        headers = scheme.sign(BODY, now=NOW, delivery_id="msg_conformance_1")
        assert headers and all(name == name.lower() for name in headers)
        assert scheme.signed(headers)
        scheme.verify(headers, BODY, now=NOW + 1)
        identity = scheme.identity(headers, BODY)
        assert isinstance(identity, str) and identity

    def test_a_delivery_without_a_signature_is_unsigned_and_401(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str]
    ) -> None:
        scheme = make_scheme([secrets[0]], 300.0)
        headers = {"content-type": "application/json"}
        assert not scheme.signed(headers)
        _fails(401, scheme, headers, BODY)

    def test_another_secret_is_401_and_named_nowhere(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str]
    ) -> None:
        first, other = secrets
        headers = make_scheme([other], 300.0).sign(BODY, now=NOW, delivery_id="msg_2")
        error = str(_fails(401, make_scheme([first], 300.0), headers, BODY))
        assert first not in error and other not in error
        for value in headers.values():
            assert len(value) < 16 or value not in error, "a message repeats a signature"

    @pytest.mark.parametrize("change", ["append", "flip", "empty"])
    def test_a_tampered_body_is_401(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str], change: str
    ) -> None:
        scheme = make_scheme([secrets[0]], 300.0)
        headers = scheme.sign(BODY, now=NOW, delivery_id="msg_3")
        tampered = {"append": BODY + b" ", "flip": BODY.replace(b"3", b"4"), "empty": b""}
        _fails(401, scheme, headers, tampered[change])

    def test_any_secret_of_several_verifies(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str]
    ) -> None:
        first, second = secrets
        for order in ([first, second], [second, first]):
            receiver = make_scheme(order, 300.0)
            for secret in secrets:
                headers = make_scheme([secret], 300.0).sign(BODY, now=NOW, delivery_id="msg_4")
                receiver.verify(headers, BODY, now=NOW)

    def test_the_first_secret_signs(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str]
    ) -> None:
        first, second = secrets
        headers = make_scheme([first, second], 300.0).sign(BODY, now=NOW, delivery_id="m5")
        make_scheme([first], 300.0).verify(headers, BODY, now=NOW)

    @pytest.mark.parametrize("offset", [-61, 61, -100_000, 100_000])
    def test_a_stale_or_future_timestamp_is_400(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str], offset: float
    ) -> None:
        scheme = make_scheme([secrets[0]], 60.0)
        headers = scheme.sign(BODY, now=NOW + offset, delivery_id="msg_6")
        if not self.timestamped:
            scheme.verify(headers, BODY, now=NOW)  # nothing signed says when
            return
        _fails(400, scheme, headers, BODY)

    def test_a_timestamp_within_the_tolerance_passes(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str]
    ) -> None:
        scheme = make_scheme([secrets[0]], 60.0)
        for offset in (-60, -1, 0, 1, 60):
            headers = scheme.sign(BODY, now=NOW + offset, delivery_id="msg_7")
            scheme.verify(headers, BODY, now=NOW)

    def test_identity_comes_from_signed_content(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str]
    ) -> None:
        scheme = make_scheme([secrets[0]], 300.0)
        headers = scheme.sign(BODY, now=NOW, delivery_id="msg_8")
        identity = scheme.identity(headers, BODY)
        # Headers the scheme does not sign change nothing; another signed body does.
        relabelled = {**headers, "x-event": "job.failed", "x-delivery": "forged", "x-id": "1"}
        assert scheme.identity(relabelled, BODY) == identity
        other = b'{"id":"job_2","status":"failed"}'
        assert scheme.identity(scheme.sign(other, now=NOW, delivery_id="msg_9"), other) != identity

    def test_identity_reads_only_what_sign_produced(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str]
    ) -> None:
        # A scheme that read an unsigned header of its own (a delivery id, an event name) would
        # let a captured delivery be sent again as new: whatever else a delivery carries, the
        # headers sign() produced decide its identity alone.
        pytest.importorskip("hypothesis")
        from hypothesis import given, settings
        from hypothesis import strategies as st

        scheme = make_scheme([secrets[0]], 300.0)
        headers = scheme.sign(BODY, now=NOW, delivery_id="msg_8")
        identity = scheme.identity(headers, BODY)
        # Names senders give their unsigned headers, and arbitrary ones.
        names = st.sampled_from(_UNSIGNED_NAMES) | st.text(
            alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=24
        )

        @settings(max_examples=150, deadline=None)
        @given(
            extra=st.dictionaries(
                names.filter(lambda n: n not in headers), st.text(max_size=40), max_size=8
            )
        )
        def check(extra: dict[str, str]) -> None:
            assert scheme.identity({**extra, **headers}, BODY) == identity

        check()

    def test_no_secret_is_a_config_error(self, make_scheme: SchemeFactory) -> None:
        with pytest.raises(ConfigError):
            make_scheme([], 300.0)
        with pytest.raises(ConfigError):
            make_scheme([""], 300.0)

    def test_arbitrary_headers_and_bodies_raise_only_verification_errors(
        self, make_scheme: SchemeFactory, secrets: tuple[str, str]
    ) -> None:
        pytest.importorskip("hypothesis")
        from hypothesis import given, settings
        from hypothesis import strategies as st

        scheme = make_scheme([secrets[0]], 300.0)
        signed = scheme.sign(BODY, now=NOW, delivery_id="msg_10")
        names = sorted({*signed, *scheme.signature_headers, "content-type"})
        values = st.one_of(
            st.text(max_size=120),
            st.sampled_from(list(signed.values())),
            st.text(alphabet="0123456789abcdefv,=t ", max_size=90),
        )
        headers = st.fixed_dictionaries({}, optional=dict.fromkeys(names, values))
        bodies = st.one_of(st.just(BODY), st.binary(max_size=300))

        @settings(max_examples=200, deadline=None, database=None)
        @given(changed=headers, keep=st.booleans(), body=bodies)
        def check(changed: dict[str, str], keep: bool, body: bytes) -> None:
            delivery = {**signed, **changed} if keep else changed
            try:
                scheme.verify(delivery, body, now=NOW)
            except WebhookVerificationError as exc:
                assert exc.status in (400, 401), exc
                return
            assert isinstance(scheme.identity(delivery, body), str)

        check()


#: Headers webhook senders add beside a signature, none of them signed by the usual schemes.
_UNSIGNED_NAMES = (
    "x-event",
    "x-event-type",
    "x-delivery",
    "x-delivery-id",
    "x-id",
    "x-request-id",
    "x-webhook-id",
    "x-webhook-event",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-reader-event",
    "x-reader-delivery",
    "x-hook-id",
    "x-correlation-id",
    "user-agent",
    "x-attempt",
    "x-retry-count",
    "idempotency-key",
    "x-event-id",
)
