"""Webhook signature schemes: small sans-I/O verifiers, one per way of signing deliveries.

Each scheme takes the secrets it may be signed with (several at once while a secret is being
rotated) and a timestamp ``tolerance``, and checks one delivery — lower-case header names, the
raw body bytes and the current unix time ``now`` — raising
:class:`~jobwatch.WebhookVerificationError` with the HTTP status to answer:

- 401: the signature is missing, malformed or matches none of the secrets;
- 400: the signed timestamp is missing, malformed, older than ``now - tolerance`` or newer
  than ``now + tolerance``.

Comparisons are constant-time, and no message repeats a secret or a received signature.

======================  ==================================================================
``reader``              ``X-Reader-Signature: sha256=<hex>``, HMAC-SHA256 of
                        ``"{X-Reader-Timestamp}.{body}"``
``standard-webhooks``   ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (space
                        separated ``v1,<base64>``), HMAC-SHA256 of ``"{id}.{ts}.{body}"``,
                        ``whsec_``-prefixed base64 secrets
``github``              ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the body (no
                        timestamp)
``stripe``              ``Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>]``, HMAC-SHA256 of
                        ``"{t}.{body}"``
======================  ==================================================================
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

from .._errors import ConfigError, WebhookVerificationError

__all__ = [
    "SCHEMES",
    "GitHubScheme",
    "ReaderScheme",
    "Scheme",
    "StandardWebhooksScheme",
    "StripeScheme",
    "scheme_class",
]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS = re.compile(r"[0-9]{1,12}")
#: More candidate signatures than this in one header is an attack, not a rotation.
_MAX_SIGNATURES = 16


def _hmac(keyed: hmac.HMAC, *parts: bytes) -> bytes:
    # `keyed` has absorbed its key already; copying it skips hashing the key's pads again,
    # which is most of the work for a body of a few hundred bytes.
    mac = keyed.copy()
    for part in parts:
        mac.update(part)
    return mac.digest()


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _reject(message: str) -> WebhookVerificationError:
    return WebhookVerificationError(message, status=401)


def _bad_time(message: str) -> WebhookVerificationError:
    return WebhookVerificationError(message, status=400)


class Scheme(abc.ABC):
    """One way of signing webhook deliveries.

    ``secrets`` are the configured secrets (the first one signs, in :meth:`sign`; any one
    verifies); ``tolerance`` is how far, in seconds and in both directions, a signed timestamp
    may be from ``now``.
    """

    name: ClassVar[str]
    #: Header names (lower case) of which at least one is present on a signed delivery.
    signature_headers: ClassVar[tuple[str, ...]]

    def __init__(self, secrets: Sequence[str], *, tolerance: float = 300.0) -> None:
        if not secrets:
            raise ConfigError(f"[jobwatch.webhook] the {self.name} scheme needs a secret")
        self._macs = tuple(
            hmac.new(self.key(secret, index), digestmod=hashlib.sha256)
            for index, secret in enumerate(secrets)
        )
        self.tolerance = tolerance

    def key(self, secret: str, index: int) -> bytes:
        """The HMAC key of one configured secret (its UTF-8 bytes unless a scheme says else)."""
        if not secret:
            raise ConfigError(f"[jobwatch.webhook] secrets[{index}] is empty")
        return secret.encode("utf-8")

    def signed(self, headers: Mapping[str, str]) -> bool:
        """Whether the delivery carries any signature header at all."""
        return any(name in headers for name in self.signature_headers)

    @abc.abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check one delivery; raise WebhookVerificationError (401 or 400) if it fails."""

    @abc.abstractmethod
    def sign(self, body: bytes, *, now: float, delivery_id: str = "") -> dict[str, str]:
        """The signature headers a sender would add, with the first secret (tests, benches).
        """

    def replay_key(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """What identifies the signed content of a delivery that :meth:`verify` passed.

        Where a scheme signs the body and timestamp but not the headers that name the event
        and the delivery, a captured delivery could be sent again under another event name
        or delivery id; the receiver answers a second delivery of the same signed content as
        a duplicate. None: the scheme signs the delivery id too (``standard-webhooks``), whose
        dedup covers it.
        """
        return None

    def _check_time(self, value: str | None, header: str, now: float) -> int:
        if value is None:
            raise _bad_time(f"the delivery has no {header} header")
        if not _DIGITS.fullmatch(value):
            raise _bad_time(f"the {header} header is not a unix time in seconds")
        stamp = int(value)
        if stamp < now - self.tolerance:
            raise _bad_time(
                f"the {header} is {now - stamp:.0f} s old, more than the tolerance of "
                f"{self.tolerance:g} s: a replay, or a clock that is off"
            )
        if stamp > now + self.tolerance:
            raise _bad_time(
                f"the {header} is {stamp - now:.0f} s in the future, more than the tolerance of "
                f"{self.tolerance:g} s: check the clocks"
            )
        return stamp

    def _match(self, candidates: Iterable[bytes], *parts: bytes) -> None:
        wanted = [_hmac(mac, *parts) for mac in self._macs]
        found = False
        for candidate in candidates:
            for expected in wanted:
                # No early exit: the time taken does not depend on which secret matched.
                found |= hmac.compare_digest(expected, candidate)
        if not found:
            raise _reject(
                f"the {self.name} signature matches none of the {len(wanted)} configured "
                "secret(s): check [jobwatch.webhook] secrets, or the body was altered"
            )


def _hex_signature(value: str | None, header: str) -> bytes:
    if value is None:
        raise _reject(f"the delivery has no {header} header; is the webhook's secret set?")
    algorithm, _, digest = value.strip().partition("=")
    if algorithm != "sha256" or not _HEX64.fullmatch(digest):
        raise _reject(f"the {header} header is not 'sha256=' and 64 hex digits")
    return bytes.fromhex(digest)


class ReaderScheme(Scheme):
    """Reader: ``X-Reader-Signature: sha256=<hex>`` over ``"{X-Reader-Timestamp}.{body}"``."""

    name = "reader"
    signature_headers = ("x-reader-signature",)

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        signature = _hex_signature(headers.get("x-reader-signature"), "X-Reader-Signature")
        raw = headers.get("x-reader-timestamp")
        self._check_time(raw, "X-Reader-Timestamp", now)
        assert raw is not None  # checked above
        self._match([signature], raw.encode("ascii"), b".", body)

    def replay_key(self, headers: Mapping[str, str], body: bytes) -> str | None:
        # X-Reader-Event and X-Reader-Delivery are not signed; the timestamp is (verified).
        return _digest(headers["x-reader-timestamp"].encode("ascii"), b".", body)

    def sign(self, body: bytes, *, now: float, delivery_id: str = "") -> dict[str, str]:
        stamp = str(int(now))
        digest = _hmac(self._macs[0], stamp.encode(), b".", body).hex()
        return {"x-reader-signature": f"sha256={digest}", "x-reader-timestamp": stamp}


class GitHubScheme(Scheme):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex>`` over the body; there is no timestamp."""

    name = "github"
    signature_headers = ("x-hub-signature-256",)

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        signature = _hex_signature(headers.get("x-hub-signature-256"), "X-Hub-Signature-256")
        self._match([signature], body)

    def replay_key(self, headers: Mapping[str, str], body: bytes) -> str | None:
        return _digest(body)  # X-GitHub-Event and X-GitHub-Delivery are not signed

    def sign(self, body: bytes, *, now: float, delivery_id: str = "") -> dict[str, str]:
        return {"x-hub-signature-256": f"sha256={_hmac(self._macs[0], body).hex()}"}


class StripeScheme(Scheme):
    """Stripe: ``Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`` over ``"{t}.{body}"``."""

    name = "stripe"
    signature_headers = ("stripe-signature",)

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        value = headers.get("stripe-signature")
        if value is None:
            raise _reject("the delivery has no Stripe-Signature header")
        stamps, signatures = self._parse(value)
        if len(stamps) != 1:
            raise _bad_time("the Stripe-Signature header needs exactly one t= timestamp")
        self._check_time(stamps[0], "Stripe-Signature timestamp", now)
        self._match(signatures, stamps[0].encode("ascii"), b".", body)

    def replay_key(self, headers: Mapping[str, str], body: bytes) -> str | None:
        stamps, _ = self._parse(headers["stripe-signature"])  # verified: exactly one t=
        return _digest(stamps[0].encode("ascii"), b".", body)

    @staticmethod
    def _parse(value: str) -> tuple[list[str], list[bytes]]:
        stamps: list[str] = []
        signatures: list[bytes] = []
        for item in value.split(",")[: 2 * _MAX_SIGNATURES]:
            name, _, text = item.strip().partition("=")
            if name == "t":
                stamps.append(text)
            elif name == "v1" and _HEX64.fullmatch(text):
                signatures.append(bytes.fromhex(text))
        if not signatures:
            raise _reject("the Stripe-Signature header has no v1= signature of 64 hex digits")
        return stamps, signatures

    def sign(self, body: bytes, *, now: float, delivery_id: str = "") -> dict[str, str]:
        stamp = str(int(now))
        digest = _hmac(self._macs[0], stamp.encode(), b".", body).hex()
        return {"stripe-signature": f"t={stamp},v1={digest}"}


class StandardWebhooksScheme(Scheme):
    """Standard Webhooks (standardwebhooks.com): ``v1,<base64>`` over ``"{id}.{ts}.{body}"``.

    Secrets are base64, optionally prefixed with ``whsec_``; the signature header may carry
    several space-separated signatures (the sender's own rotation), any one of which may match.
    """

    name = "standard-webhooks"
    signature_headers = ("webhook-signature",)
    _PREFIX = "whsec_"

    def key(self, secret: str, index: int) -> bytes:
        text = secret.removeprefix(self._PREFIX)
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                f"[jobwatch.webhook] secrets[{index}] is not a standard-webhooks secret: expected "
                "base64, optionally prefixed with whsec_"
            ) from None
        if not key:
            raise ConfigError(f"[jobwatch.webhook] secrets[{index}] is empty")
        return key

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        value = headers.get("webhook-signature")
        if value is None:
            raise _reject("the delivery has no webhook-signature header")
        ident = headers.get("webhook-id")
        if not ident:
            raise _reject("the delivery has no webhook-id header (it is part of the signature)")
        raw = headers.get("webhook-timestamp")
        self._check_time(raw, "webhook-timestamp", now)
        assert raw is not None  # checked above
        signatures = self._parse(value)
        signed_id = ident.encode("utf-8", "surrogatepass")
        if not ident.isascii():
            # The id's bytes as sent: an ASGI server hands header bytes over as latin-1 text,
            # a serverless platform as UTF-8 text. Either way only the secret makes a match.
            try:
                as_sent = ident.encode("latin-1")
            except UnicodeEncodeError:
                pass
            else:
                try:
                    self._match(signatures, as_sent, b".", raw.encode("ascii"), b".", body)
                    return
                except WebhookVerificationError:
                    pass
        self._match(signatures, signed_id, b".", raw.encode("ascii"), b".", body)

    @staticmethod
    def _parse(value: str) -> list[bytes]:
        signatures: list[bytes] = []
        for item in value.split()[:_MAX_SIGNATURES]:
            version, _, text = item.partition(",")
            if version != "v1":
                continue  # another version (v1a: asymmetric) is not ours to check
            try:
                # A header sent on two lines arrives joined by ", ": the comma is not base64.
                signatures.append(base64.b64decode(text.removesuffix(","), validate=True))
            except (binascii.Error, ValueError):
                continue
        if not signatures:
            raise _reject("the webhook-signature header has no v1,<base64> signature")
        return signatures

    def sign(self, body: bytes, *, now: float, delivery_id: str = "msg_jobwatch") -> dict[str, str]:
        stamp = str(int(now))
        digest = _hmac(self._macs[0], delivery_id.encode(), b".", stamp.encode(), b".", body)
        return {
            "webhook-id": delivery_id,
            "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
        }


#: The built-in schemes by name.
SCHEMES: Mapping[str, type[Scheme]] = {
    scheme.name: scheme
    for scheme in (ReaderScheme, StandardWebhooksScheme, GitHubScheme, StripeScheme)
}


def scheme_class(name: str) -> type[Scheme]:
    """The scheme called ``name``; a ConfigError listing the known ones if there is none."""
    try:
        return SCHEMES[name]
    except KeyError:
        known = ", ".join(sorted(SCHEMES))
        raise ConfigError(
            f"[jobwatch.webhook] scheme {name!r} is unknown; known schemes: {known}"
        ) from None
