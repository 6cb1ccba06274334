"""The webhook receiver's request handling, shared by the ASGI app, the server and serverless.

:meth:`Receiver.handle` takes one request — method, path, headers, body — and returns the
:class:`Reply` to send. It checks, in this order, and answers:

=====  =======================================================================
404    the path is not the receiver's
405    the method is not POST
413    the body is larger than ``max_body``
415    the content type is not JSON
401    the signature is missing or wrong
400    the signed timestamp is stale, in the future or malformed; the body does
       not decode, or nests deeper than ``MAX_DEPTH`` levels
503    the events could not be recorded (the store failed): the sender retries
200    the events are durably recorded (``{"ok": true, "duplicate": ...}``), or the
       delivery is of an event the provider has no job event for (``{"ok": true,
       "ignored": true}``, logged at INFO and counted as ``ignored``)
=====  =======================================================================

A delivery is a duplicate when its identity was recorded lately: the scheme's
:meth:`~jobwatch.abc.Scheme.identity` of the signed content, or, for an unsigned delivery
only, the delivery id the provider read. Identities are claims in the store
(:meth:`~jobwatch.abc.Store.claim`), beside the dedup keys, so that they hold across restarts
and across receivers sharing the store. A delivery's identity goes to the sink with its events
(``deliver(events, claim=...)``), and the store claims it as it records them, in the same
transaction where it can. Nothing is dispatched before it is recorded, nothing that failed a
check is dispatched, and no input makes it answer a 5xx or raise. Failed verifications are
logged at WARNING, the first at once and then at most one a minute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import anyio

from .._compat import takes_keyword
from .._errors import DecodeError, WebhookVerificationError
from .._pipeline import claim_recorded
from ..abc import EventSink, Scheme

__all__ = [
    "MAX_DEPTH",
    "Receiver",
    "Reply",
    "VerificationFailures",
    "nests_deeper",
    "normalize_headers",
]

log = logging.getLogger("jobwatch.webhook")

#: A recorded delivery's identity is kept this much longer than its signature could be
#: accepted again (twice the tolerance), for clocks that differ between receivers.
_CLAIM_MARGIN = 60.0
_JSON_TYPES = ("application/json",)
#: Seconds a thin delivery's status request may take before its own events are recorded.
THIN_DELIVERY_DEADLINE = 10.0
#: The deepest nesting of JSON a delivery may carry. Far beyond what job APIs send, and far
#: below what would exhaust Python's recursion limit when a store encodes the event: a
#: delivery that could not be stored would be answered 503 on every retry.
MAX_DEPTH = 100
# A JSON string (possessive, so that an unterminated one costs one pass), a bracket, or a
# lone quote.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]|"', re.S)
#: Seconds between two warnings about failed verifications.
_WARN_EVERY = 60.0


class Reply(NamedTuple):
    """What to answer: HTTP status, headers (lower-case names) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _reply(status: int, payload: Mapping[str, object], *extra: tuple[str, str]) -> Reply:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, (("content-type", "application/json"), *extra), body)


def _error(status: int, message: str, *extra: tuple[str, str]) -> Reply:
    return _reply(status, {"ok": False, "error": message}, *extra)


#: The answers to an accepted delivery, built once: one of them is sent for nearly every request.
_RECORDED = _reply(200, {"ok": True, "duplicate": False})
_DUPLICATE = _reply(200, {"ok": True, "duplicate": True})
_IGNORED = _reply(200, {"ok": True, "ignored": True})


def normalize_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers with lower-case names; a repeated header's values joined by ``", "``."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (``application/json`` or a ``+json`` type)."""
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def nests_deeper(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``body`` opens more than ``limit`` arrays and objects inside one
    another (strings skipped); in time linear in the body, without recursion."""
    # Nearly every body has fewer brackets than the limit, and then nothing can be deeper.
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(body):
        char = body[match.start()]
        if char == 0x22:  # a string, skipped whole; a lone quote: not JSON, the decoder says so
            if match.end() - match.start() == 1:
                return False
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class VerificationFailures:
    """Counts deliveries that failed verification, and says when to warn about them: at the
    first failure, then at most once every ``interval`` seconds, with the count since.

    Receivers that take turns (one per serverless invocation) share one.
    """

    def __init__(self, interval: float = _WARN_EVERY) -> None:
        self.interval = interval
        self.total = 0
        self._unreported = 0
        self._quiet_until: float | None = None

    def failed(self, now: float) -> int | None:
        """Count one failure at ``now``; the failures to report now, or None to stay quiet."""
        self.total += 1
        self._unreported += 1
        if self._quiet_until is not None and now < self._quiet_until:
            return None
        count, self._unreported = self._unreported, 0
        self._quiet_until = now + self.interval
        return count


class Receiver:
    """Checks, verifies, decodes and records webhook deliveries for one
    :class:`~jobwatch.abc.EventSink` (it uses the sink's ``provider``, ``deliver`` and
    ``count``).

    ``scheme`` verifies signatures (None: accept unsigned deliveries, which takes
    ``allow_unsigned``); with ``allow_unsigned`` and a scheme, a delivery that carries no
    signature header at all is accepted and one that carries a wrong signature is not.
    ``path`` None accepts any path (a serverless platform has routed already). ``clock`` gives
    unix time for the signatures' timestamp window and the warnings' pace. The identity of a
    recorded delivery is claimed in the sink's store for as long as its signature could be
    accepted again: twice the scheme's tolerance where it signs a timestamp, else
    ``dedup_ttl`` seconds. ``failures`` counts failed verifications; receivers that take turns
    (one per serverless invocation) share it.
    """

    def __init__(
        self,
        host: EventSink | None,
        *,
        scheme: Scheme | None,
        path: str | None,
        max_body: int = 1_048_576,
        allow_unsigned: bool = False,
        clock: Callable[[], float] = time.time,
        name: str = "webhook",
        dedup_ttl: float = 7 * 86400.0,
        failures: VerificationFailures | None = None,
    ) -> None:
        if scheme is None and not allow_unsigned:
            raise ValueError("a receiver without a signature scheme needs allow_unsigned=True")
        self.host = host
        self.scheme = scheme
        self.path = path
        self.max_body = max_body
        self.allow_unsigned = allow_unsigned
        self._clock = clock
        self._name = name
        self._remember_for = (
            dedup_ttl
            if scheme is None or not scheme.signs_timestamp
            else 2 * scheme.tolerance + _CLAIM_MARGIN
        )
        self.failures = VerificationFailures() if failures is None else failures

    async def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
    ) -> Reply:
        """Answer one request; never raises for any input (cancellation aside)."""
        fields = normalize_headers(headers)
        checked = self.check(method, path, fields, len(body))
        if checked is not None:
            return self.rejected(checked)
        return await self.accept(fields, body)

    async def accept(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """Verify, decode and record a request that passed :meth:`check`.

        ``headers`` have lower-case names (:func:`normalize_headers`).
        """
        refusal = self.refusal(headers, body)
        if refusal is not None:
            return self.rejected(refusal)
        return await self.record(headers, body)

    def check(
        self, method: str, path: str, headers: Mapping[str, str], length: int | None
    ) -> Reply | None:
        """The early answers (404, 405, 413, 415) that need no body, or None to go on."""
        if self.path is not None and path != self.path:
            return _error(404, f"no webhook receiver at {path!r}")
        if method != "POST":  # methods are case-sensitive: "post" is not POST
            return _error(405, "webhook deliveries are POST requests", ("allow", "POST"))
        if length is not None and length > self.max_body:
            return _error(413, f"the body is larger than max_body ({self.max_body} bytes)")
        if not is_json(headers.get("content-type")):
            return _error(415, "webhook deliveries must have Content-Type: application/json")
        return None

    def refusal(self, headers: Mapping[str, str], body: bytes) -> Reply | None:
        """The answer (401 or 400) to a request whose signature fails, or None to go on."""
        try:
            self.verify(headers, body)
        except WebhookVerificationError as exc:
            self._failed(exc)
            return _error(exc.status, str(exc))
        return None

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Check the signature; raise WebhookVerificationError (401 or 400) if it fails."""
        scheme = self.scheme
        if scheme is None:
            return
        if self.allow_unsigned and not scheme.signed(headers):
            return
        try:
            scheme.verify(headers, body, now=self._clock())
        except WebhookVerificationError:
            raise
        except Exception as exc:  # a plugin scheme's bug: refuse, never answer 5xx
            log.exception("the %s scheme failed on a delivery", scheme.name)
            raise WebhookVerificationError(
                f"the {scheme.name} scheme could not check the signature: {type(exc).__name__}"
            ) from None

    def _failed(self, exc: WebhookVerificationError) -> None:
        count = self.failures.failed(self._clock())
        if count is None:
            return
        scheme = "none" if self.scheme is None else self.scheme.name
        log.warning(
            "%d webhook deliveries failed verification with the %s scheme since the last "
            "warning (%d in all); the last was answered %d: %s. Check that [jobwatch.webhook] "
            "secrets holds the secret the sender signs with, that the sender signs with the "
            "%s scheme, and that the clocks of both agree (tolerance %s s)",
            count,
            scheme,
            self.failures.total,
            exc.status,
            exc,
            scheme,
            "-" if self.scheme is None else f"{self.scheme.tolerance:g}",
        )

    def rejected(self, reply: Reply) -> Reply:
        """Count and log a refused delivery; returns ``reply``."""
        self._count("rejected")
        log.info("webhook delivery rejected with %d: %s", reply.status, reply.body.decode())
        return reply

    async def record(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """Decode and record a request that passed :meth:`check` and :meth:`refusal`."""
        host = self.host
        if host is None:
            return _error(503, "the webhook receiver is not running yet; retry later")
        if nests_deeper(body):
            return self.rejected(
                _error(
                    400,
                    f"the body nests JSON deeper than {MAX_DEPTH} levels, more than jobwatch "
                    "records",
                )
            )
        try:
            delivery = host.provider.decode_webhook(headers, body, source=self._name)
        except DecodeError as exc:
            return self.rejected(_error(400, str(exc)))
        except Exception as exc:  # a provider's bug on odd input is still the input's fault
            log.exception("the %s provider failed to decode a webhook", host.provider.name)
            return self.rejected(_error(400, f"the delivery could not be decoded: {exc!r}"))
        if not delivery.events and not delivery.reconcile:
            self._count("ignored")
            log.info(
                "webhook event %r ignored: the %s provider has no job event for it",
                delivery.event_name,
                host.provider.name,
            )
            return _IGNORED
        ident = self._identity(headers, body, delivery.delivery_id)
        if ident is not None:
            try:
                seen = await host.store.claimed(ident)
            except Exception as exc:  # the sender must retry: nothing is recorded yet
                return self._unrecorded(exc)
            if seen:
                self._count("duplicates")
                log.info("webhook delivery %s was recorded before; a duplicate", ident)
                return _DUPLICATE
        # No deadline here: cut short between recording and queueing, an event would wait in
        # the inbox for the next start, and the sender's retry would be dropped as a duplicate.
        try:
            if delivery.reconcile:  # a thin delivery: the job's snapshot, counts and all, first
                # ... within a deadline: a rate-limited API must not hold the sender's request
                # (it would time out and retry); the delivery's own events are the fallback.
                with anyio.move_on_after(THIN_DELIVERY_DEADLINE) as scope:
                    await host.reconcile(delivery.reconcile, reason="thin webhook delivery")
                if scope.cancelled_caught:
                    log.info(
                        "the status request of a thin webhook delivery took over %g s; "
                        "recording the delivery's own events",
                        THIN_DELIVERY_DEADLINE,
                    )
            if delivery.events:
                if ident is not None and takes_keyword(host.deliver, "claim"):
                    # Claimed with the events, in their transaction where the store can: once
                    # recorded, never before (a delivery answered 503 must not be taken for a
                    # duplicate when the sender retries it).
                    await host.deliver(delivery.events, claim=(ident, self._remember_for))
                    ident = None
                else:
                    await host.deliver(delivery.events)
        except Exception as exc:  # the sender must retry: the delivery was not recorded
            return self._unrecorded(exc)
        if ident is not None:  # no events of its own (a thin delivery), or an older sink
            await claim_recorded(host.store, (ident, self._remember_for))
        self._count("deliveries")
        return _RECORDED

    def _unrecorded(self, exc: Exception) -> Reply:
        log.warning("could not record a webhook delivery, answering 503: %s", exc)
        self._count("unrecorded")
        return _error(503, "the delivery could not be recorded; retry later")

    def _identity(
        self, headers: Mapping[str, str], body: bytes, delivery_id: str | None
    ) -> str | None:
        """What makes a delivery the same as another: its signed content when it is signed
        (an unsigned header could name any delivery), else the delivery id it names."""
        scheme = self.scheme
        if scheme is None or not scheme.signed(headers):
            return None if delivery_id is None else f"delivery:unsigned:{delivery_id}"
        try:
            return f"delivery:{scheme.name}:{scheme.identity(headers, body)}"
        except Exception:  # a plugin scheme's bug: the body is signed content too
            log.exception("the %s scheme failed to identify a verified delivery", scheme.name)
            return f"delivery:{scheme.name}:body:{hashlib.sha256(body).hexdigest()}"

    def _count(self, name: str) -> None:
        if self.host is not None:
            self.host.count(self._name, name)
