"""Reader's webhook signature scheme, registered as ``reader`` in ``jobwatch.schemes``.

``X-Reader-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"{X-Reader-Timestamp}.{body}"``
keyed with the webhook's secret (UTF-8): the ``hmac-sha256`` scheme in a fixed configuration.
Reader signs neither ``X-Reader-Event`` nor ``X-Reader-Delivery``.
"""

from __future__ import annotations

from ..transports._signatures import HMACOptions, HMACSHA256Scheme

__all__ = ["ReaderScheme"]


class ReaderScheme(HMACSHA256Scheme):
    """Reader: ``X-Reader-Signature: sha256=<hex>`` over ``"{X-Reader-Timestamp}.{body}"``."""

    name = "reader"
    signature_headers = ("x-reader-signature",)
    options_class = None
    fixed = HMACOptions(
        header="X-Reader-Signature",
        prefix="sha256=",
        signed="timestamp+body",
        timestamp_header="X-Reader-Timestamp",
    )
