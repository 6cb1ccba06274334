"""The built-in signature schemes, sans I/O: valid, tampered, wrong secret, rotation, time
window, malformed headers, agreement with independent implementations, configuration.

Every built-in also passes ``SchemeConformance`` (test_scheme_conformance.py).
"""

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
from jobwatch._registry import installed
from jobwatch.abc import Scheme
from jobwatch.providers._reader_scheme import ReaderScheme
from jobwatch.transports._signatures import (
    MAX_SIGNATURE_HEADER,
    GitHubScheme,
    StandardWebhooksScheme,
    StripeScheme,
    build_scheme,
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
    "hmac-sha256": (SECRET, OTHER),
}
#: hmac-sha256 as the tests below configure it: a timestamp, base64, a prefix of its own.
HMAC = {
    "name": "hmac-sha256",
    "header": "X-Acme-Signature",
    "prefix": "v1=",
    "encoding": "base64",
    "signed": "timestamp+body",
    "timestamp_header": "X-Acme-Time",
    "separator": ":",
}
SCHEMES = sorted(SECRETS)
TIMED = ["reader", "stripe", "standard-webhooks", "hmac-sha256"]


def make(name: str, *secrets: str, tolerance: float = 300.0) -> Scheme:
    return build_scheme(HMAC if name == "hmac-sha256" else name, list(secrets), tolerance=tolerance)


def fails(status: int, check: Callable[[], None]) -> WebhookVerificationError:
    with pytest.raises(WebhookVerificationError) as info:
        check()
    assert info.value.status == status
    return info.value


@pytest.fixture(params=SCHEMES)
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


@pytest.mark.parametrize("name", TIMED)
@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10_000])
def test_stale_and_future_timestamps_are_400(name: str, offset: int) -> None:
    scheme = make(name, SECRETS[name][0])
    headers = scheme.sign(BODY, now=NOW + offset)
    error = fails(400, lambda: scheme.verify(headers, BODY, now=NOW))
    assert ("old" if offset < 0 else "future") in str(error)


@pytest.mark.parametrize("name", TIMED)
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
    (
        "standard-webhooks",
        {"webhook-id": "m", "webhook-signature": "v1,AAAA", "webhook-timestamp": "now"},
        400,
    ),
    (
        "standard-webhooks",
        {"webhook-id": "m", "webhook-signature": "v2,AAAA", "webhook-timestamp": "1712275200"},
        401,
    ),
    (
        "standard-webhooks",
        {"webhook-id": "m", "webhook-signature": "v1,!!!", "webhook-timestamp": "1712275200"},
        401,
    ),
]


@pytest.mark.parametrize(("name", "headers", "status"), MALFORMED)
def test_malformed_headers(name: str, headers: dict[str, str], status: int) -> None:
    fails(status, lambda: make(name, SECRETS[name][0]).verify(headers, BODY, now=NOW))


# -- interoperability with independent implementations -----------------------------------


def _library_headers(secret: str, msg_id: str, when: float, body: bytes) -> dict[str, str]:
    stamp = datetime.fromtimestamp(when, UTC)
    signature = Webhook(secret).sign(msg_id, stamp, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when)),
        "webhook-signature": signature,
    }


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
    headers = {
        "webhook-id": "m1",
        "webhook-timestamp": str(int(NOW)),
        "webhook-signature": f"v1a,ed25519stuff {theirs} {ours}",
    }
    StandardWebhooksScheme([WHSEC]).verify(headers, BODY, now=NOW)


def test_standard_webhooks_signatures_on_two_header_lines() -> None:
    # Two webhook-signature lines reach the receiver joined by ", " (RFC 9110).
    ours = _library_headers(WHSEC, "m1", NOW, BODY)["webhook-signature"]
    theirs = _library_headers(WHSEC_OTHER, "m1", NOW, BODY)["webhook-signature"]
    for value in (f"{ours}, {theirs}", f"{theirs}, {ours}"):
        headers = {
            "webhook-id": "m1",
            "webhook-timestamp": str(int(NOW)),
            "webhook-signature": value,
        }
        StandardWebhooksScheme([WHSEC]).verify(headers, BODY, now=NOW)


def test_standard_webhooks_id_that_is_not_ascii() -> None:
    # Signed over the id's UTF-8 bytes; an ASGI server hands those bytes over as latin-1 text,
    # a serverless platform as the text itself. Both verify; another id does not.
    headers = _library_headers(WHSEC, "msg_ü", NOW, BODY)
    scheme = StandardWebhooksScheme([WHSEC])
    scheme.verify(headers, BODY, now=NOW)
    as_asgi = {**headers, "webhook-id": "msg_ü".encode().decode("latin-1")}
    scheme.verify(as_asgi, BODY, now=NOW)
    fails(
        401,
        lambda: scheme.verify(
            {**headers, "webhook-id": "msg_ü".encode("latin-1").decode("latin-1") + "x"},
            BODY,
            now=NOW,
        ),
    )


def test_identity_names_the_signed_content_not_the_unsigned_headers(name: str) -> None:
    scheme = make(name, SECRETS[name][0])
    headers = scheme.sign(BODY, now=NOW, delivery_id="msg_1")
    key = scheme.identity(headers, BODY)
    relabelled = {**headers, "x-reader-event": "job.failed", "x-reader-delivery": "other"}
    assert scheme.identity(relabelled, BODY) == key
    later = scheme.sign(BODY, now=NOW + 1, delivery_id="msg_1")
    if name == "standard-webhooks":
        # The delivery id is signed: the sender's retries share it, another message has
        # another one.
        assert key == "msg_1" and scheme.identity(later, BODY) == key
    elif name == "github":
        # No timestamp: the body alone is the signed content.
        assert scheme.identity(later, BODY) == key
    else:
        assert scheme.identity(later, BODY) != key


def test_standardwebhooks_package_verifies_our_signatures() -> None:
    headers = StandardWebhooksScheme([WHSEC]).sign(
        BODY, now=datetime.now(UTC).timestamp(), delivery_id="msg_x"
    )
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


def test_unknown_scheme_lists_the_installed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        scheme_class("svix")
    message = str(info.value)
    assert "[jobwatch.webhook] scheme" in message and "unknown scheme 'svix'" in message
    assert "installed schemes are github, hmac-sha256, reader, standard-webhooks, stripe" in message
    assert "jobwatch.schemes" in message


def test_every_builtin_is_an_entry_point() -> None:
    assert {"github", "hmac-sha256", "reader", "standard-webhooks", "stripe"} <= set(
        installed("scheme")
    )
    for name in installed("scheme"):
        kind = scheme_class(name)
        assert issubclass(kind, Scheme) and kind.name == name
    assert scheme_class("reader") is ReaderScheme


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "hmac-sha256"}, r"required field missing @ \[jobwatch.webhook\] scheme.header"),
        (
            {"name": "hmac-sha256", "header": "X-Sig", "hedaer": "x"},
            r"unknown key\(s\) hedaer.*@ \[jobwatch.webhook\] scheme",
        ),
        ({"name": "hmac-sha256", "header": 5}, r"\[jobwatch.webhook\] scheme.header"),
        (
            {"name": "hmac-sha256", "header": "X-Sig", "encoding": "b64"},
            r"'hex', 'base64'.*\[jobwatch.webhook\] scheme.encoding",
        ),
        (
            {"name": "hmac-sha256", "header": "X-Sig", "signed": "timestamp+body"},
            r"scheme.timestamp_header is required",
        ),
        (
            {"name": "hmac-sha256", "header": "X-Sig", "timestamp_header": "X-Time"},
            r"scheme.timestamp_header is used only",
        ),
        ({"name": "hmac-sha256", "header": "X Sig"}, r"scheme.header must be a header name"),
        ({"name": "github", "header": "X-Sig"}, "the github scheme takes no options"),
        ({"header": "X-Sig"}, "must be a scheme name"),
        (5, "must be a scheme name"),
    ],
)
def test_scheme_options_are_strict(spec: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_scheme(spec, [SECRET], tolerance=300)


@pytest.mark.parametrize(
    ("options", "header"),
    [
        ({"header": "X-Hub-Signature-256", "prefix": "sha256="}, "x-hub-signature-256"),
        ({"header": "Signature"}, "signature"),
    ],
)
def test_hmac_sha256_over_the_body_matches_a_plain_recipe(
    options: dict[str, str], header: str
) -> None:
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    scheme = build_scheme({"name": "hmac-sha256", **options}, [SECRET], tolerance=300)
    scheme.verify({header: options.get("prefix", "") + digest.upper()}, BODY, now=NOW)
    fails(401, lambda: scheme.verify({header: digest + "0"}, BODY, now=NOW))


def test_hmac_sha256_with_a_timestamp_matches_a_plain_recipe() -> None:
    stamp = str(int(NOW))
    digest = hmac.new(SECRET.encode(), f"{stamp}:".encode() + BODY, hashlib.sha256).digest()
    headers = {"x-acme-signature": "v1=" + base64.b64encode(digest).decode(), "x-acme-time": stamp}
    scheme = make("hmac-sha256", SECRET)
    scheme.verify(headers, BODY, now=NOW)
    fails(
        400, lambda: scheme.verify({**headers, "x-acme-time": str(int(NOW) + 1000)}, BODY, now=NOW)
    )
    fails(401, lambda: scheme.verify({**headers, "x-acme-time": str(int(NOW) + 1)}, BODY, now=NOW))
    fails(401, lambda: scheme.verify({"x-acme-time": stamp}, BODY, now=NOW))


def test_bad_standard_webhooks_secret_is_a_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        StandardWebhooksScheme(["whsec_not base64 at all!"])
    assert "not base64" not in str(info.value)


def test_a_scheme_needs_a_non_empty_secret() -> None:
    with pytest.raises(ConfigError):
        ReaderScheme([])
    with pytest.raises(ConfigError):
        ReaderScheme([""])


# -- how many signatures a header may carry ------------------------------------------------


def test_stripe_accepts_many_v1_signatures_as_its_library_does() -> None:
    # The stripe library tries every v1= item; a header was once cut after 32 items.
    stamp = str(int(NOW))
    good = hmac.new(SECRET.encode(), f"{stamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    header = f"t={stamp}," + ",".join(f"v1={n:064x}" for n in range(60)) + f",v1={good}"
    StripeScheme([SECRET]).verify({"stripe-signature": header}, BODY, now=NOW)


def test_standard_webhooks_accepts_many_signatures_as_its_library_does() -> None:
    # The reference implementation tries every signature; a header was once cut after 16.
    now = datetime.now(UTC).timestamp()
    ours = _library_headers(WHSEC, "m1", now, BODY)
    others = " ".join("v1," + base64.b64encode(bytes([n]) * 32).decode() for n in range(40))
    headers = {**ours, "webhook-signature": f"{others} {ours['webhook-signature']}"}
    Webhook(WHSEC).verify(BODY, headers)
    StandardWebhooksScheme([WHSEC]).verify(headers, BODY, now=now)


@pytest.mark.parametrize("name", ["stripe", "standard-webhooks", "github", "reader"])
def test_a_signature_header_over_the_byte_bound_is_401(name: str) -> None:
    scheme = make(name, SECRETS[name][0])
    headers = scheme.sign(BODY, now=NOW)
    (header,) = [h for h in headers if h in scheme.signature_headers]
    padded = {**headers, header: headers[header] + " " * MAX_SIGNATURE_HEADER}
    error = fails(401, lambda: scheme.verify(padded, BODY, now=NOW))
    assert "longer than" in str(error)


# -- arbitrary input ---------------------------------------------------------------------

_HEADER_NAMES = st.sampled_from(
    [
        "x-reader-signature",
        "x-reader-timestamp",
        "x-hub-signature-256",
        "stripe-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "x-acme-signature",
        "x-acme-time",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(SCHEMES),
    headers=st.dictionaries(_HEADER_NAMES, st.text(max_size=120)),
    body=st.binary(max_size=200),
)
def test_arbitrary_input_is_rejected_cleanly(
    name: str, headers: dict[str, str], body: bytes
) -> None:
    scheme = make(name, SECRETS[name][0])
    with pytest.raises(WebhookVerificationError) as info:
        scheme.verify(headers, body, now=NOW)
    assert info.value.status in (400, 401)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(SCHEMES), body=st.binary(max_size=300), flip=st.integers(min_value=0))
def test_any_single_bit_flip_in_the_body_is_caught(name: str, body: bytes, flip: int) -> None:
    scheme = make(name, SECRETS[name][0])
    headers = scheme.sign(body, now=NOW)
    scheme.verify(headers, body, now=NOW)
    if body:
        index = flip % (len(body) * 8)
        tampered = bytearray(body)
        tampered[index // 8] ^= 1 << (index % 8)
        fails(401, lambda: scheme.verify(headers, bytes(tampered), now=NOW))
