"""The signature scheme seam: how a webhook sender signs its deliveries.

:class:`Scheme` is re-exported as ``jobwatch.abc.Scheme``; the built-in schemes and the
configurable ``hmac-sha256`` live in ``jobwatch.transports._signatures``, a provider's own
scheme in its provider's package. Each is found through the entry point group ``jobwatch.schemes``.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ._errors import ConfigError, WebhookVerificationError

__all__ = ["Scheme"]

_DIGITS = re.compile(r"[0-9]{1,12}")


class Scheme(abc.ABC):
    """One way of signing webhook deliveries. The webhook receiver verifies every delivery
    with one before anything reads its body.

    **Building.** jobwatch builds a scheme from ``[jobwatch.webhook]`` as
    ``cls(secrets, tolerance=..., options=...)``:

    - ``secrets``: the configured secrets, in order. Several are configured while one is
      being rotated; a delivery signed with any one of them verifies. :meth:`sign` uses the
      first. A secret the scheme cannot use is a :class:`~jobwatch.ConfigError` that names
      its index (``secrets[1]``), never its value.
    - ``tolerance``: seconds a signed timestamp may be from now, in both directions.
    - ``options``: an instance of :attr:`options_class`, structured strictly from the inline
      table ``scheme = {name = "...", key = value, ...}`` (an unknown key or a wrong type is
      a ConfigError naming the key). None when :attr:`options_class` is None.

    A subclass that overrides ``__init__`` passes all three on to ``super().__init__``.

    **Verifying.** For each delivery the receiver calls, with header names in lower case
    (a repeated header's values joined by ``", "``) and the raw body bytes:

    1. :meth:`signed` — whether the delivery carries a signature at all; one that does not
       is refused, unless ``allow_unsigned = true``.
    2. :meth:`verify` — raises :class:`~jobwatch.WebhookVerificationError` with
       ``status=401`` when the signature is missing, malformed or matches none of the
       secrets, and with ``status=400`` when a signed timestamp is missing, malformed or
       further than ``tolerance`` from ``now`` (:meth:`check_timestamp` does that part). It
       must raise nothing else for any input, compare signatures in constant time
       (:func:`hmac.compare_digest`), and never put a secret, a received signature or the
       body into a message: messages are sent back to the sender and logged.
    3. :meth:`identity` — only once :meth:`verify` passed: what identifies the signed
       content. The receiver answers a second delivery with the same identity as a
       duplicate, whatever its unsigned headers say.

    :meth:`sign` does what a sender does; tests and benchmarks use it, the receiver never.

    Register a scheme under the entry point group ``jobwatch.schemes`` and run
    :class:`jobwatch.testing.SchemeConformance` on it.
    """

    #: The name ``scheme = "..."`` selects; equal to the entry point's name.
    name: ClassVar[str]
    #: Lower-case names of the headers that carry the signature: a delivery with none of
    #: them is unsigned.
    signature_headers: ClassVar[tuple[str, ...]]
    #: A frozen attrs class of the scheme's own options, or None for a scheme without any.
    options_class: ClassVar[type[Any] | None] = None
    #: Whether :meth:`verify` checks a signed timestamp against :attr:`tolerance`. A delivery
    #: then verifies only within ``tolerance`` of its timestamp, and the receiver remembers
    #: its identity for twice that; without one, for the dedup TTL (``[jobwatch] dedup_ttl``).
    signs_timestamp: bool = False

    def __init__(
        self, secrets: Sequence[str], *, tolerance: float = 300.0, options: Any = None
    ) -> None:
        if not secrets:
            raise ConfigError(f"[jobwatch.webhook] the {self.name} scheme needs a secret")
        for index, secret in enumerate(secrets):
            if not isinstance(secret, str) or not secret:
                raise ConfigError(f"[jobwatch.webhook] secrets[{index}] is empty")
        self.secrets: tuple[str, ...] = tuple(secrets)
        self.tolerance = float(tolerance)
        self.options = self._check_options(options)

    def _check_options(self, options: Any) -> Any:
        kind = self.options_class
        if kind is None:
            if options is not None:
                raise ConfigError(f"[jobwatch.webhook] the {self.name} scheme takes no options")
            return None
        if options is None:
            try:
                return kind()
            except TypeError as exc:
                raise ConfigError(
                    f"[jobwatch.webhook] the {self.name} scheme needs options: {exc}"
                ) from None
        if not isinstance(options, kind):
            raise TypeError(f"options must be a {kind.__name__}, got {type(options).__name__}")
        return options

    def signed(self, headers: Mapping[str, str]) -> bool:
        """Whether the delivery carries any of :attr:`signature_headers`."""
        return any(name in headers for name in self.signature_headers)

    @abc.abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check one delivery signed at about ``now`` (unix seconds); raise
        :class:`~jobwatch.WebhookVerificationError` (401 or 400) if it fails."""

    def identity(self, headers: Mapping[str, str], body: bytes) -> str:
        """What identifies the signed content of a delivery that :meth:`verify` passed.

        Built from signed content only, so that a captured delivery sent again under other
        unsigned headers (another delivery id, another event name) has the same identity,
        while a retry that the sender signs anew may have another one. The default, a digest
        of the body, suits a scheme that signs the body alone; a scheme that signs a
        timestamp too includes it (the same body sent twice, later, is two deliveries), and
        one that signs a delivery id may return that id.
        """
        return hashlib.sha256(body).hexdigest()

    @abc.abstractmethod
    def sign(self, body: bytes, *, now: float, delivery_id: str = "") -> dict[str, str]:
        """The headers (lower-case names) a sender would add to ``body`` at ``now``, signed
        with the first secret; ``delivery_id`` is used by schemes that sign one."""

    def check_timestamp(self, value: str | None, header: str, *, now: float) -> int:
        """Parse a signed unix timestamp (seconds) from ``header`` and check it lies within
        :attr:`tolerance` of ``now``; raises WebhookVerificationError(400) if not."""
        if value is None:
            raise WebhookVerificationError(f"the delivery has no {header} header", status=400)
        if not _DIGITS.fullmatch(value):
            raise WebhookVerificationError(
                f"the {header} header is not a unix time in seconds", status=400
            )
        stamp = int(value)
        if stamp < now - self.tolerance:
            raise WebhookVerificationError(
                f"the {header} is {now - stamp:.0f} s old, more than the tolerance of "
                f"{self.tolerance:g} s: a replay, or a clock that is off",
                status=400,
            )
        if stamp > now + self.tolerance:
            raise WebhookVerificationError(
                f"the {header} is {stamp - now:.0f} s in the future, more than the tolerance "
                f"of {self.tolerance:g} s: check the clocks",
                status=400,
            )
        return stamp
