"""The built-in webhook signature schemes, and building a scheme from ``[jobwatch.webhook]``.

Each is a :class:`~jobwatch.abc.Scheme` registered under the entry point group
``jobwatch.schemes`` (a provider may register its own API's scheme beside it):

======================  ==================================================================
``standard-webhooks``   ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (space
                        separated ``v1,<base64>``), HMAC-SHA256 of ``"{id}.{ts}.{body}"``,
                        ``whsec_``-prefixed base64 secrets
``github``              ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the body (no
                        timestamp)
``stripe``              ``Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]``, HMAC-SHA256 of
                        ``"{t}.{body}"``
``hmac-sha256``         configured: one header (``header``, optional ``prefix``, ``hex`` or
                        ``base64``) over the body or over timestamp + ``separator`` + body
======================  ==================================================================

Comparisons are constant-time, and no message repeats a secret or a received signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs

from .._config import structure
from .._errors import ConfigError, WebhookVerificationError
from .._registry import UnknownPlugin, load
from .._scheme import Scheme

__all__ = [
    "MAX_SIGNATURE_HEADER",
    "GitHubScheme",
    "HMACOptions",
    "HMACSHA256Scheme",
    "StandardWebhooksScheme",
    "StripeScheme",
    "build_scheme",
    "scheme_class",
]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: The longest signature header read, in characters. A header may carry any number of
#: signatures (as the reference libraries accept), but no more than fit in this.
MAX_SIGNATURE_HEADER = 16_384
_WHERE = "[jobwatch.webhook] scheme"


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


def _bounded(value: str, header: str) -> str:
    if len(value) > MAX_SIGNATURE_HEADER:
        raise _reject(f"the {header} header is longer than {MAX_SIGNATURE_HEADER} characters")
    return value


class _HMACScheme(Scheme):
    """A scheme signed with HMAC-SHA256 keyed by each secret."""

    def __init__(
        self, secrets: Sequence[str], *, tolerance: float = 300.0, options: Any = None
    ) -> None:
        super().__init__(secrets, tolerance=tolerance, options=options)
        self._macs = tuple(
            hmac.new(self.key(secret, index), digestmod=hashlib.sha256)
            for index, secret in enumerate(self.secrets)
        )

    def key(self, secret: str, index: int) -> bytes:
        """The HMAC key of one configured secret: its UTF-8 bytes."""
        return secret.encode("utf-8", "surrogatepass")

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


@attrs.frozen(kw_only=True)
class HMACOptions:
    """The options of ``scheme = {name = "hmac-sha256", ...}``.

    - ``header``: the header that carries the signature, e.g. ``"X-Signature"``.
    - ``prefix``: text before the digest in that header, e.g. ``"sha256="``.
    - ``encoding``: ``"hex"`` or ``"base64"`` (standard alphabet) digest.
    - ``signed``: ``"body"``, or ``"timestamp+body"`` for timestamp + ``separator`` + body.
    - ``timestamp_header``: the header with the signed unix time in seconds (with
      ``"timestamp+body"`` only); checked against ``[jobwatch.webhook] tolerance``.
    - ``separator``: what joins timestamp and body (default ``"."``).
    """

    header: str
    prefix: str = ""
    encoding: Literal["hex", "base64"] = "hex"
    signed: Literal["body", "timestamp+body"] = "body"
    timestamp_header: str | None = None
    separator: str = "."

    def check(self) -> HMACOptions:
        """Self, once the combination is valid; a ConfigError naming the key if not."""
        for key in ("header", "timestamp_header"):
            value = getattr(self, key)
            if value is not None and not _TOKEN.fullmatch(value):
                raise ConfigError(f"{_WHERE}.{key} must be a header name, got {value!r}")
        timed = self.signed == "timestamp+body"
        if timed and self.timestamp_header is None:
            raise ConfigError(
                f'{_WHERE}.timestamp_header is required with signed = "timestamp+body"'
            )
        if not timed and self.timestamp_header is not None:
            raise ConfigError(
                f'{_WHERE}.timestamp_header is used only with signed = "timestamp+body"'
            )
        if not self.prefix.isascii() or not self.separator.isascii():
            raise ConfigError(f"{_WHERE}: prefix and separator must be ASCII text")
        return self


class HMACSHA256Scheme(_HMACScheme):
    """HMAC-SHA256 in one header, configured by :class:`HMACOptions`.

    Schemes that are a fixed configuration of it (``github``, a provider's own) set :attr:`fixed`
    and take no options.
    """

    name = "hmac-sha256"
    signature_headers: ClassVar[tuple[str, ...]] = ()  # configured: see signed()
    options_class: ClassVar[type[Any] | None] = HMACOptions
    #: A subclass's fixed configuration, or None to take it from ``options``.
    fixed: ClassVar[HMACOptions | None] = None

    def __init__(
        self, secrets: Sequence[str], *, tolerance: float = 300.0, options: Any = None
    ) -> None:
        super().__init__(secrets, tolerance=tolerance, options=options)
        settings: HMACOptions = (self.fixed or self.options).check()
        self._settings = settings
        self._header = settings.header.lower()
        self._stamp = (
            None if settings.timestamp_header is None else settings.timestamp_header.lower()
        )
        self.signs_timestamp = self._stamp is not None
        self._separator = settings.separator.encode("ascii")

    def signed(self, headers: Mapping[str, str]) -> bool:
        return self._header in headers

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        signature = self._signature(headers.get(self._header))
        if self._stamp is None:
            self._match([signature], body)
            return
        raw = headers.get(self._stamp)
        self.check_timestamp(raw, self._settings.timestamp_header or "", now=now)
        assert raw is not None  # checked above
        self._match([signature], raw.encode("ascii"), self._separator, body)

    def _signature(self, value: str | None) -> bytes:
        header, prefix = self._settings.header, self._settings.prefix
        if value is None:
            raise _reject(f"the delivery has no {header} header; is the webhook's secret set?")
        text = _bounded(value, header).strip()
        if self._settings.encoding == "hex":
            if text.startswith(prefix) and _HEX64.fullmatch(text, len(prefix)):
                return bytes.fromhex(text[len(prefix) :])
            raise _reject(f"the {header} header is not {prefix!r} and 64 hex digits")
        if text.startswith(prefix):
            try:
                digest = base64.b64decode(text[len(prefix) :], validate=True)
            except (binascii.Error, ValueError):
                digest = b""
            if len(digest) == 32:
                return digest
        raise _reject(f"the {header} header is not {prefix!r} and the base64 of 32 bytes")

    def identity(self, headers: Mapping[str, str], body: bytes) -> str:
        if self._stamp is None:
            return _digest(body)
        return _digest(headers[self._stamp].encode("ascii"), self._separator, body)

    def sign(self, body: bytes, *, now: float, delivery_id: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        parts = [body]
        if self._stamp is not None:
            stamp = str(int(now))
            out[self._stamp] = stamp
            parts = [stamp.encode(), self._separator, body]
        digest = _hmac(self._macs[0], *parts)
        text = (
            digest.hex()
            if self._settings.encoding == "hex"
            else base64.b64encode(digest).decode("ascii")
        )
        out[self._header] = self._settings.prefix + text
        return out


class GitHubScheme(HMACSHA256Scheme):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex>`` over the body; there is no timestamp."""

    name = "github"
    signature_headers = ("x-hub-signature-256",)
    options_class = None
    fixed = HMACOptions(header="X-Hub-Signature-256", prefix="sha256=")


class StripeScheme(_HMACScheme):
    """Stripe: ``Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`` over ``"{t}.{body}"``."""

    name = "stripe"
    signature_headers = ("stripe-signature",)
    signs_timestamp = True

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        value = headers.get("stripe-signature")
        if value is None:
            raise _reject("the delivery has no Stripe-Signature header")
        stamps, signatures = self._parse(value)
        if len(stamps) != 1:
            raise WebhookVerificationError(
                "the Stripe-Signature header needs exactly one t= timestamp", status=400
            )
        self.check_timestamp(stamps[0], "Stripe-Signature timestamp", now=now)
        self._match(signatures, stamps[0].encode("ascii"), b".", body)

    def identity(self, headers: Mapping[str, str], body: bytes) -> str:
        stamps, _ = self._parse(headers["stripe-signature"])  # verified: exactly one t=
        return _digest(stamps[0].encode("ascii"), b".", body)

    @staticmethod
    def _parse(value: str) -> tuple[list[str], list[bytes]]:
        stamps: list[str] = []
        signatures: list[bytes] = []
        for item in _bounded(value, "Stripe-Signature").split(","):
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


class StandardWebhooksScheme(_HMACScheme):
    """Standard Webhooks (standardwebhooks.com): ``v1,<base64>`` over ``"{id}.{ts}.{body}"``.

    Secrets are base64, optionally prefixed with ``whsec_``; the signature header may carry
    several space-separated signatures (the sender's own rotation), any one of which may match.
    The delivery id is signed, so it is the delivery's identity.
    """

    name = "standard-webhooks"
    signature_headers = ("webhook-signature",)
    signs_timestamp = True
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
        self.check_timestamp(raw, "webhook-timestamp", now=now)
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

    def identity(self, headers: Mapping[str, str], body: bytes) -> str:
        return headers["webhook-id"]  # signed, and stable across the sender's retries

    @staticmethod
    def _parse(value: str) -> list[bytes]:
        signatures: list[bytes] = []
        for item in _bounded(value, "webhook-signature").split():
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

    def sign(self, body: bytes, *, now: float, delivery_id: str = "") -> dict[str, str]:
        delivery_id = delivery_id or "msg_jobwatch"
        stamp = str(int(now))
        digest = _hmac(self._macs[0], delivery_id.encode(), b".", stamp.encode(), b".", body)
        return {
            "webhook-id": delivery_id,
            "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
        }


# -- building a scheme from the configuration -----------------------------------------------


def scheme_class(name: str, *, whose: str = "") -> type[Scheme]:
    """The scheme registered as ``name``; a ConfigError listing the installed ones if none.

    ``whose`` says where the name came from in the message (a provider's default, say).
    """
    try:
        kind: type[Scheme] = load("scheme", name, Scheme)
    except UnknownPlugin as exc:
        raise UnknownPlugin(f"{whose or _WHERE}: {exc}") from None
    return kind


def scheme_spec(value: object, *, where: str = _WHERE) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{name = "...", option = ...}`` as ``(name, options)``."""
    if isinstance(value, str) and value:
        return value, {}
    if isinstance(value, Mapping):
        name = value.get("name")
        if isinstance(name, str) and name:
            return name, {k: v for k, v in value.items() if k != "name"}
    raise ConfigError(
        f'{where} must be a scheme name (scheme = "github") or a table with its name and '
        f'options (scheme = {{name = "hmac-sha256", header = "X-Signature"}}), got {value!r}'
    )


def build_scheme(
    value: object, secrets: Sequence[str], *, tolerance: float, whose: str = ""
) -> Scheme:
    """The scheme ``value`` names (see :func:`scheme_spec`), built with its options."""
    name, table = scheme_spec(value, where=whose or _WHERE)
    kind = scheme_class(name, whose=whose)
    options = None
    if kind.options_class is not None:
        options = structure(table, kind.options_class, _WHERE)
    elif table:
        raise ConfigError(
            f"{_WHERE}: the {name} scheme takes no options, got {', '.join(sorted(table))}"
        )
    return kind(secrets, tolerance=tolerance, options=options)
