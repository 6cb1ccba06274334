"""The ``webhook`` transport: receive signed deliveries, record them, then dispatch.

Configured by ``[jobwatch.webhook]`` (see :class:`WebhookOptions`). With ``listen`` set the
transport serves its own receiver with hypercorn; without it, mount
``watcher.asgi_app()`` in your own ASGI server, or run ``jobwatch listen``. Every delivery is
verified (:mod:`._signatures`), decoded by the provider and recorded durably in the store
before it is answered 2xx (:mod:`._receiver`). The signature scheme and the path default to
those of the provider the transport runs with (``run(host)`` reads ``host.provider``).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import attrs
from anyio.abc import TaskStatus

from .._config import Config, Secret
from .._errors import ConfigError
from ..abc import Provider, Scheme, Transport, TransportHost
from ._asgi import ASGIApp, WebhookApp
from ._receiver import Receiver
from ._serve import bind, check_tls, serve_socket
from ._signatures import build_scheme, scheme_class, scheme_spec

__all__ = ["WebhookOptions", "WebhookTransport", "parse_listen"]

log = logging.getLogger("jobwatch.webhook")

_LISTEN = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]+)):(?P<port>[0-9]{1,5})"
)


@attrs.frozen(kw_only=True)
class WebhookOptions:
    """``[jobwatch.webhook]``.

    - ``listen``: ``"HOST:PORT"`` to serve the receiver from the Watcher itself (port 0: any
      free port); leave it out to mount ``watcher.asgi_app()`` in your own server.
    - ``path``: where deliveries arrive; default ``/hooks/<provider name>``.
    - ``scheme``: the signature scheme, by name (``"github"``) or as a table with its name
      and options (``{name = "hmac-sha256", header = "X-Signature"}``); any scheme installed
      under the entry point group ``jobwatch.schemes``. Default: the provider's.
    - ``secrets``: the signing secrets; several while rotating, any one verifies.
    - ``allow_unsigned``: accept deliveries without a signature (never in production).
    - ``tolerance``: seconds a signed timestamp may be off, in both directions.
    - ``max_body``: the largest body accepted, in bytes.
    - ``certfile``, ``keyfile``: PEM files; with both, the ``listen`` server speaks HTTPS.
    """

    listen: str | None = None
    path: str | None = None
    scheme: Any = None  # a name, or a table with its name and options: checked in _check
    secrets: tuple[Secret, ...] = ()
    allow_unsigned: bool = False
    tolerance: float = 300.0
    max_body: int = 1_048_576
    certfile: str | None = None
    keyfile: str | None = None


def parse_listen(value: str, where: str = "[jobwatch.webhook] listen") -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8787"`` for IPv6) as ``(host, port)``; ConfigError if bad,
    naming the value as ``where``."""
    match = _LISTEN.fullmatch(value.strip())
    port = int(match["port"]) if match else -1
    if match is None or not 0 <= port <= 65535:
        raise ConfigError(
            f"{where} must be 'HOST:PORT' (e.g. '127.0.0.1:8787', "
            f"'[::1]:8787', port 0 for any free port), got {value!r}"
        )
    return match["v6"] or match["host"], port


def _check(options: WebhookOptions) -> None:
    if options.path is not None and not options.path.startswith("/"):
        raise ConfigError(f"[jobwatch.webhook] path must begin with '/', got {options.path!r}")
    if options.scheme is not None:
        scheme_spec(options.scheme)
    if not options.tolerance > 0:
        raise ConfigError("[jobwatch.webhook] tolerance must be > 0 seconds")
    if options.max_body <= 0:
        raise ConfigError("[jobwatch.webhook] max_body must be > 0 bytes")
    if not options.secrets and not options.allow_unsigned:
        raise ConfigError(
            "[jobwatch.webhook] secrets is empty: set it to the secret the sender signs its "
            'deliveries with (secrets = ["${MY_WEBHOOK_SECRET}"], say), or allow_unsigned = '
            "true for local testing only"
        )
    if options.listen is not None:
        parse_listen(options.listen)
    if (options.certfile is None) != (options.keyfile is None):
        raise ConfigError("[jobwatch.webhook] certfile and keyfile go together: set both or none")
    if options.certfile is not None:
        try:
            check_tls(options.certfile, options.keyfile)
        except ConfigError as exc:
            raise ConfigError(f"[jobwatch.webhook] certfile/keyfile: {exc}") from None


def _build(options: WebhookOptions, value: object, whose: str = "") -> Scheme | None:
    """The verifier ``value`` names, with the options' secrets; None when there are none
    (an unsigned receiver), once the name is known to be installed."""
    if not options.secrets:
        scheme_class(scheme_spec(value)[0], whose=whose)
        return None
    return build_scheme(
        value, [s.reveal() for s in options.secrets], tolerance=options.tolerance, whose=whose
    )


class WebhookTransport(Transport):
    """Receives webhook deliveries; the only push transport that needs no open connection.

    Build it with :meth:`from_config`, or from :class:`WebhookOptions`; ``clock`` gives unix
    time for timestamp checks. A scheme named in the options (or as ``default_scheme``, used
    when the options name none) is built at once, so that a bad name, option or secret fails
    here; otherwise :meth:`run` takes the scheme of the provider it runs with, and likewise
    the path. After :meth:`run` has started, :attr:`scheme` and :attr:`path` are the ones in
    use, ``bound_url`` is the base URL the transport's own server listens on (``listen``
    configured) and :attr:`url` the full receiver URL. Counters in ``Watcher.statistics()``:
    ``deliveries`` (recorded), ``duplicates`` (signed content, or an unsigned delivery's id,
    already answered), ``ignored`` (verified, no job event in it), ``rejected`` (any 4xx),
    ``unrecorded`` (503: the store failed).
    """

    name = "webhook"
    push = True

    def __init__(
        self,
        options: WebhookOptions,
        *,
        default_scheme: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        _check(self.options)
        self._chosen = options.scheme if options.scheme is not None else default_scheme
        self.scheme = None if self._chosen is None else _build(options, self._chosen)
        self.path = options.path
        self._clock = clock
        self._app = WebhookApp()
        self.bound_url: str | None = None
        self.receiver: Receiver | None = None

    @classmethod
    def from_config(cls, config: Config) -> WebhookTransport:
        return cls(config.options("webhook", WebhookOptions))

    def scheme_for(self, provider: Provider) -> Scheme | None:
        """The verifier of deliveries about ``provider``'s jobs: the configured scheme, else
        the provider's; None for an unsigned receiver (no secrets)."""
        if self._chosen is not None:
            return self.scheme
        return _build(
            self.options,
            provider.capabilities.webhook_scheme,
            whose=f"the {provider.name} provider's webhook_scheme",
        )

    def path_for(self, provider: Provider) -> str:
        """Where deliveries arrive: the configured path, else ``/hooks/<provider name>``."""
        return self.options.path or f"/hooks/{provider.name}"

    @property
    def url(self) -> str | None:
        """The receiver's full URL once its own server listens, else None."""
        if self.bound_url is None or self.path is None:
            return None
        return self.bound_url + self.path

    def asgi_app(self) -> ASGIApp:
        """The receiver as an ASGI app; it answers 503 until :meth:`run` has started."""
        return self._app

    async def run(
        self, host: TransportHost, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.scheme = self.scheme_for(host.provider)
        self.path = self.path_for(host.provider)
        self.receiver = Receiver(
            host,
            scheme=self.scheme,
            path=self.path,
            max_body=self.options.max_body,
            allow_unsigned=self.options.allow_unsigned,
            clock=self._clock,
            name=self.name,
            dedup_ttl=host.config.dedup_ttl,
        )
        self._warn_unsigned()
        self._app.receiver = self.receiver
        try:
            if self.options.listen is None:
                task_status.started()
                await anyio.sleep_forever()
            else:
                await self._serve(task_status)
        finally:
            self._app.receiver = None

    async def _serve(self, task_status: TaskStatus[None]) -> None:
        assert self.options.listen is not None
        # Bound here, outside the task group, so that a taken port raises a plain ConfigError.
        sock = bind(*parse_listen(self.options.listen))
        async with anyio.create_task_group() as tg:
            self.bound_url = await tg.start(
                functools.partial(
                    serve_socket,
                    self._app,
                    sock,
                    certfile=self.options.certfile,
                    keyfile=self.options.keyfile,
                )
            )
            log.info("webhook receiver listening on %s", self.url)
            task_status.started()

    def _warn_unsigned(self) -> None:
        if not self.options.allow_unsigned:
            return
        if self.scheme is None:
            log.warning(
                "UNSIGNED webhook receiver: [jobwatch.webhook] has no secrets and "
                "allow_unsigned = true, so anyone who can reach %s can inject job "
                "events; configure secrets before exposing it",
                self.path,
            )
        else:
            log.warning(
                "[jobwatch.webhook] allow_unsigned = true: deliveries without a "
                "signature are accepted (signed ones are still verified)"
            )

    def describe(self) -> dict[str, Any]:
        """Non-secret facts for ``jobwatch doctor``."""
        return {
            "listen": self.options.listen,
            "path": self.path or "/hooks/<provider>",
            "scheme": self._scheme_name(),
            "secrets": len(self.options.secrets),
            "allow_unsigned": self.options.allow_unsigned,
        }

    def _scheme_name(self) -> str:
        if self.scheme is not None:
            return self.scheme.name
        chosen = self.options.scheme if self.options.scheme is not None else self._chosen
        return "the provider's" if chosen is None else scheme_spec(chosen)[0]
