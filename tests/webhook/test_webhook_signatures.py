"""The signature schemes, sans I/O: valid, tampered, wrong secret, rotation, time window."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from jobwatch import ConfigError, WebhookVerificationError
from jobwatch.transports._signatures import (
    SCHEMES,
    GitHubScheme,
    ReaderScheme,
    Scheme,
    StandardWebhooksScheme,
    StripeScheme,
    scheme_class,
)

NOW = 1_712_275_200.0
BODY = b'{"jobId":"job_1","status":"completed","completed":3,"total":3}'
SECRET = "reader-secret-0123456789"
OTHER = "another-secret-9876543210"
WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode()
WHSEC_OTHER = "whsec_" + base64.b64encode(b"the-next-standard-webhooks-key!!").decode()

SECRETS = {
    "reader": (SECRET, OTHER),
    "github": (SECRET, OTHER),
    "stripe": ("whsec_stripe_" + SECRET, "whsec_stripe_" + OTHER),
    "standard-webhooks": (WHSEC, WHSEC_OTHER),
}


def make(name: str, *secrets: str, tolerance: float = 300.0) -> Scheme:
    return scheme_class(name)(list(secrets), tolerance=tolerance)


def fails(status: int, check: Callable[[], None]) -> WebhookVerificationError:
    with pytest.raises(WebhookVerificationError) as info:
        check()
    assert info.value.status == status
    return info.value


@pytest.fixture(params=sorted(SCHEMES))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_valid_signature_verifies(name: str) -> None:
    first, _ = SECRETS[name]
    scheme = make(name, first)
    scheme.verify(scheme.sign(BODY, now=NOW), BODY, now=NOW + 5)


def test_tampered_body_is_401(name: str) -> None:
    scheme = make(name, SECRETS[name][0])
    headers = scheme.sign(BODY, now=NOW)
    fails(401, lambda: scheme.verify(headers, BODY.replace(b"3}", b"4}"), now=NOW))


def test_wrong_secret_is_401_and_never_echoes_a_secret(name: str) -> None:
    first, other = SECRETS[name]
    headers = make(name, other).sign(BODY, now=NOW)
    error = fails(401, lambda: make(name, first).verify(headers, BODY, now=NOW))
    assert first not in str(error) and other not in str(error)
    for value in headers.values():
        assert value not in str(error)


def test_rotation_accepts_either_secret(name: str) -> None:
    first, second = SECRETS[name]
    receiver = make(name, first, second)
    receiver.verify(make(name, second).sign(BODY, now=NOW), BODY, now=NOW)
    receiver.verify(make(name, first).sign(BODY, now=NOW), BODY, now=NOW)


@pytest.mark.parametrize("name", ["reader", "stripe", "standard-webhooks"])
@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10_000])
def test_stale_and_future_timestamps_are_400(name: str, offset: int) -> None:
    scheme = make(name, SECRETS[name][0])
    headers = scheme.sign(BODY, now=NOW + offset)
    error = fails(400, lambda: scheme.verify(headers, BODY, now=NOW))
    assert ("old" if offset < 0 else "future") in str(error)


@pytest.mark.parametrize("name", ["reader", "stripe", "standard-webhooks"])
def test_timestamp_at_the_edge_of_the_tolerance_passes(name: str) -> None:
    scheme = make(name, SECRETS[name][0], tolerance=60)
    scheme.verify(scheme.sign(BODY, now=NOW - 60), BODY, now=NOW)
    scheme.verify(scheme.sign(BODY, now=NOW + 60), BODY, now=NOW)


def test_github_has_no_timestamp_window() -> None:
    scheme = make("github", SECRET)
    scheme.verify(scheme.sign(BODY, now=0), BODY, now=NOW)


def test_missing_signature_is_401(name: str) -> None:
    fails(401, lambda: make(name, SECRETS[name][0]).verify({}, BODY, now=NOW))


MALFORMED: list[tuple[str, dict[str, str], int]] = [
    ("reader", {"x-reader-signature": "sha1=abc", "x-reader-timestamp": "1712275200"}, 401),
    ("reader", {"x-reader-signature": "sha256=" + "z" * 64, "x-reader-timestamp": "1"}, 401),
    ("reader", {"x-reader-signature": "sha256=" + "a" * 64}, 400),
    ("reader", {"x-reader-signature": "sha256=" + "a" * 64, "x-reader-timestamp": "soon"}, 400),
    ("reader", {"x-reader-signature": "sha256=" + "a" * 64, "x-reader-timestamp": "-5"}, 400),
    ("reader", {"x-reader-signature": "sha256=" + "a" * 64, "x-reader-timestamp": "1e9"}, 400),
    ("github", {"x-hub-signature-256": "sha256=" + "a" * 63}, 401),
    ("github", {"x-hub-signature-256": ""}, 401),
    ("stripe", {"stripe-signature": "t=1712275200"}, 401),
    ("stripe", {"stripe-signature": "v1=" + "a" * 64}, 400),
    ("stripe", {"stripe-signature": "t=x,v1=" + "a" * 64}, 400),
    ("stripe", {"stripe-signature": "t=1,t=2,v1=" + "a" * 64}, 400),
    ("stripe", {"stripe-signature": ",,,"}, 401),
    ("standard-webhooks", {"webhook-signature": "v1,AAAA", "webhook-timestamp": "1712275200"}, 401),
    ("standard-webhooks",
     {"webhook-id": "m", "webhook-signature": "v1,AAAA", "webhook-timestamp": "now"}, 400),
    ("standard-webhooks",
     {"webhook-id": "m", "webhook-signature": "v2,AAAA", "webhook-timestamp": "1712275200"}, 401),
    ("standard-webhooks",
     {"webhook-id": "m", "webhook-signature": "v1,!!!", "webhook-timestamp": "1712275200"}, 401),
]


@pytest.mark.parametrize(("name", "headers", "status"), MALFORMED)
def test_malformed_headers(name: str, headers: dict[str, str], status: int) -> None:
    fails(status, lambda: make(name, SECRETS[name][0]).verify(headers, BODY, now=NOW))


# -- interoperability with independent implementations -----------------------------------


def _library_headers(secret: str, msg_id: str, when: float, body: bytes) -> dict[str, str]:
    stamp = datetime.fromtimestamp(when, UTC)
    signature = Webhook(secret).sign(msg_id, stamp, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when)),
            "webhook-signature": signature}


def test_standardwebhooks_package_signatures_verify() -> None:
    headers = _library_headers(WHSEC, "msg_2Lh9", NOW, BODY)
    StandardWebhooksScheme([WHSEC]).verify(headers, BODY, now=NOW)
    # Secrets may also be given without the whsec_ prefix.
    StandardWebhooksScheme([WHSEC.removeprefix("whsec_")]).verify(headers, BODY, now=NOW)


def test_standardwebhooks_package_tampered_fails() -> None:
    headers = _library_headers(WHSEC, "msg_2Lh9", NOW, BODY)
    scheme = StandardWebhooksScheme([WHSEC])
    fails(401, lambda: scheme.verify(headers, BODY + b" ", now=NOW))
    fails(401, lambda: scheme.verify({**headers, "webhook-id": "msg_other"}, BODY, now=NOW))
    fails(400, lambda: scheme.verify(headers, BODY, now=NOW + 3600))


def test_standard_webhooks_several_signatures_in_one_header() -> None:
    ours = _library_headers(WHSEC, "m1", NOW, BODY)["webhook-signature"]
    theirs = _library_headers(WHSEC_OTHER, "m1", NOW, BODY)["webhook-signature"]
    headers = {"webhook-id": "m1", "webhook-timestamp": str(int(NOW)),
               "webhook-signature": f"v1a,ed25519stuff {theirs} {ours}"}
    StandardWebhooksScheme([WHSEC]).verify(headers, BODY, now=NOW)


def test_standard_webhooks_signatures_on_two_header_lines() -> None:
    # Two webhook-signature lines reach the receiver joined by ", " (RFC 9110).
    ours = _library_headers(WHSEC, "m1", NOW, BODY)["webhook-signature"]
    theirs = _library_headers(WHSEC_OTHER, "m1", NOW, BODY)["webhook-signature"]
    for value in (f"{ours}, {theirs}", f"{theirs}, {ours}"):
        headers = {"webhook-id": "m1", "webhook-timestamp": str(int(NOW)),
                   "webhook-signature": value}
        StandardWebhooksScheme([WHSEC]).verify(headers, BODY, now=NOW)


def test_standard_webhooks_id_that_is_not_ascii() -> None:
    # Signed over the id's UTF-8 bytes; an ASGI server hands those bytes over as latin-1 text,
    # a serverless platform as the text itself. Both verify; another id does not.
    headers = _library_headers(WHSEC, "msg_ü", NOW, BODY)
    scheme = StandardWebhooksScheme([WHSEC])
    scheme.verify(headers, BODY, now=NOW)
    as_asgi = {**headers, "webhook-id": "msg_ü".encode().decode("latin-1")}
    scheme.verify(as_asgi, BODY, now=NOW)
    fails(401, lambda: scheme.verify({**headers, "webhook-id": "msg_ü".encode("latin-1")
                                      .decode("latin-1") + "x"}, BODY, now=NOW))


def test_replay_key_names_the_signed_content_not_the_unsigned_headers(name: str) -> None:
    scheme = make(name, SECRETS[name][0])
    headers = scheme.sign(BODY, now=NOW, delivery_id="msg_1")
    key = scheme.replay_key(headers, BODY)
    relabelled = {**headers, "x-reader-event": "job.failed", "x-reader-delivery": "other"}
    assert scheme.replay_key(relabelled, BODY) == key
    later = scheme.sign(BODY, now=NOW + 1, delivery_id="msg_1")
    if name == "standard-webhooks":
        assert key is None  # the delivery id is signed: its own dedup covers a replay
    elif name == "github":
        assert key is not None  # no timestamp: the body alone is the signed content
        assert scheme.replay_key(headers, BODY + b" ") != key
    else:
        assert key is not None and scheme.replay_key(later, BODY) != key
        assert scheme.replay_key(headers, BODY + b" ") != key


def test_standardwebhooks_package_verifies_our_signatures() -> None:
    headers = StandardWebhooksScheme([WHSEC]).sign(BODY, now=datetime.now(UTC).timestamp(),
                                                   delivery_id="msg_x")
    Webhook(WHSEC).verify(BODY, headers)


def test_reader_matches_its_documented_recipe() -> None:
    stamp = "1712275200"
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    headers = {"x-reader-signature": f"sha256={digest}", "x-reader-timestamp": stamp}
    ReaderScheme([SECRET]).verify(headers, BODY, now=NOW)


def test_stripe_with_several_v1_signatures() -> None:
    stamp = str(int(NOW))
    good = hmac.new(SECRET.encode(), f"{stamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    header = f"t={stamp},v1={'0' * 64},v0={'1' * 64},v1={good}"
    StripeScheme([SECRET]).verify({"stripe-signature": header}, BODY, now=NOW)


def test_github_matches_its_documented_recipe() -> None:
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    GitHubScheme([SECRET]).verify({"x-hub-signature-256": f"sha256={digest}"}, BODY, now=NOW)


# -- configuration -----------------------------------------------------------------------


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="github, reader, standard-webhooks, stripe"):
        scheme_class("svix")


def test_bad_standard_webhooks_secret_is_a_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        StandardWebhooksScheme(["whsec_not base64 at all!"])
    assert "not base64" not in str(info.value)


def test_a_scheme_needs_a_non_empty_secret() -> None:
    with pytest.raises(ConfigError):
        ReaderScheme([])
    with pytest.raises(ConfigError):
        ReaderScheme([""])


# -- arbitrary input ---------------------------------------------------------------------

_HEADER_NAMES = st.sampled_from([
    "x-reader-signature", "x-reader-timestamp", "x-hub-signature-256", "stripe-signature",
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
])


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(SCHEMES)),
    headers=st.dictionaries(_HEADER_NAMES, st.text(max_size=120)),
    body=st.binary(max_size=200),
)
def test_arbitrary_input_is_rejected_cleanly(name: str, headers: dict[str, str],
                                             body: bytes) -> None:
    scheme = make(name, SECRETS[name][0])
    with pytest.raises(WebhookVerificationError) as info:
        scheme.verify(headers, body, now=NOW)
    assert info.value.status in (400, 401)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(SCHEMES)), body=st.binary(max_size=300),
       flip=st.integers(min_value=0))
def test_any_single_bit_flip_in_the_body_is_caught(name: str, body: bytes, flip: int) -> None:
    scheme = make(name, SECRETS[name][0])
    headers = scheme.sign(body, now=NOW)
    scheme.verify(headers, body, now=NOW)
    if body:
        index = flip % (len(body) * 8)
        tampered = bytearray(body)
        tampered[index // 8] ^= 1 << (index % 8)
        fails(401, lambda: scheme.verify(headers, bytes(tampered), now=NOW))
