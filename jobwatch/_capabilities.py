"""What an API offers: the streams, webhooks and signals a provider declares."""

from __future__ import annotations

import attrs

__all__ = ["Capabilities"]


@attrs.frozen(kw_only=True)
class Capabilities:
    """What an API offers; the policy, the transports and ``jobwatch doctor`` ask this
    instead of assuming one API's shape.

    - ``job_stream`` / ``workspace_stream``: a per-job / a workspace-wide event stream exists
      (the policy never picks ``sse`` for a provider with neither).
    - ``stream_event_ids``: the streams send ``id:`` and resume from ``Last-Event-ID``.
    - ``webhooks``: the provider decodes webhook deliveries (``decode_webhook``); the policy
      never picks ``webhook`` for a provider without them.
    - ``webhook_scheme``: the signature scheme its webhook deliveries use.
    - ``announces_cancellation``: push channels report cancelled jobs; if not, push transports
      need the safety net (``safety_poll``) to learn of a cancellation.
    """

    job_stream: bool = False
    workspace_stream: bool = False
    stream_event_ids: bool = False
    webhooks: bool = False
    webhook_scheme: str = "standard-webhooks"
    announces_cancellation: bool = True

    def offers(self) -> tuple[str, ...]:
        """The built-in transports these capabilities can serve, in their usual order."""
        streams = self.job_stream or self.workspace_stream
        return ("poll", *(("sse",) if streams else ()), *(("webhook",) if self.webhooks else ()))
