"""The policy: which transport fits where the code runs, and why.

:func:`choose_transport` is a pure function of a configuration, an environment mapping, a
:class:`Signals` value and the provider's capabilities; only the defaults read the current
process (and build the configured provider). It never picks what the provider cannot serve.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

import attrs

from ._config import Config
from ._errors import ConfigError
from ._registry import blame, build, installed, load
from .abc import Provider, Transport

__all__ = ["Decision", "Signals", "choose_transport"]

_SERVERLESS = (
    ("AWS_LAMBDA_FUNCTION_NAME", "AWS Lambda"),
    ("FUNCTIONS_WORKER_RUNTIME", "Azure Functions"),
    ("K_SERVICE", "Cloud Run / Cloud Functions"),
    ("FUNCTION_TARGET", "Cloud Functions"),
    ("VERCEL", "Vercel"),
    ("NETLIFY", "Netlify"),
)
_SERVICE = (
    ("KUBERNETES_SERVICE_HOST", "Kubernetes"),
    ("INVOCATION_ID", "systemd"),
    ("DYNO", "Heroku"),
    ("SERVER_SOFTWARE", "a web server (SERVER_SOFTWARE)"),
)
_SERVERS = ("uvicorn", "hypercorn", "gunicorn", "daphne", "granian", "waitress", "uwsgi")


@attrs.frozen(kw_only=True)
class Signals:
    """What the policy knows of the process: a TTY, a notebook, a web server."""

    tty: bool = False
    notebook: bool = False
    web_server: bool = False

    @classmethod
    def detect(cls) -> Signals:
        """Read the signals of the current process."""
        return cls(tty=_isatty(), notebook=_in_notebook(), web_server=_under_server())


def _isatty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    ip = get() if callable(get) else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _under_server() -> bool:
    # The server must be the process's entry point: importing uvicorn does not count.
    entry = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    names = {entry.lower(), (getattr(main, "name", "") or "").split(".")[0].lower()}
    return any(server in name for name in names for server in _SERVERS if name)


@attrs.frozen(kw_only=True)
class Decision:
    """The policy's answer: what runs, the safety net (seconds, 0 = off), and why."""

    transports: tuple[str, ...]
    safety_poll: float
    reasons: tuple[str, ...]
    handler_mode: bool = False
    scope: str | None = None


def _webhook_configured(config: Config) -> bool:
    table = config.table("webhook")
    return bool(table.get("secrets") or table.get("allow_unsigned") or table.get("listen"))


def split_transports(text: str, where: str) -> tuple[str, ...]:
    """The names of a comma-separated transport list; ConfigError, naming ``where``, if it
    names none."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ConfigError(
            f"{where} names no transport; give poll, sse, webhook, a comma-separated list, or auto"
        )
    if len(names) > 1:
        _check_list(names, where)
    return names


@attrs.frozen
class _Explicit:
    names: tuple[str, ...]
    reason: str  # for Decision.reasons
    where: str  # for an error: where the choice was written
    environment: bool


def _explicit(config: Config, environ: Mapping[str, str]) -> _Explicit | None:
    override = environ.get("JOBWATCH_TRANSPORT", "").strip()
    if override and override != "auto":
        where = f"JOBWATCH_TRANSPORT={override!r}"
        names = split_transports(override, where)
        return _Explicit(
            names,
            f"JOBWATCH_TRANSPORT={override} overrides the configuration and the table",
            where,
            True,
        )
    if config.transports is not None:
        joined = ", ".join(config.transports)
        written = json.dumps(
            config.transport if isinstance(config.transport, str) else list(config.transport)
        )
        where = f"[jobwatch] transport = {written}"
        with config.naming_source():
            _check_list(config.transports, where)
        return _Explicit(
            config.transports,
            f"transport = {joined} set in the configuration",
            where,
            False,
        )
    return None


def _check_list(names: tuple[str, ...], where: str) -> None:
    """A list of transports names each once, and not auto (which is a choice, not one of them):
    a transport named twice would run twice, doubling its requests."""
    if "auto" in names:
        raise ConfigError(
            f'{where} lists "auto" among transports; "auto" lets the policy choose and '
            'stands alone: write "auto" alone, or name only transports (poll, sse, webhook)'
        )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(
            f"{where} names {', '.join(twice)} more than once; name each transport once"
        )


def check_served(config: Config, where: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise a ConfigError naming ``where`` (a flag, an argument) when ``config``'s transport,
    which ``where`` set, is one the provider cannot serve: the Watcher would blame
    ``[jobwatch] transport`` in the configuration file, which may not say it. Nothing is
    raised where ``environ``'s JOBWATCH_TRANSPORT overrides that transport."""
    written = config.transport if isinstance(config.transport, str) else list(config.transport)
    said = f"[jobwatch] transport = {json.dumps(written)} "
    try:
        choose_transport(
            attrs.evolve(config, source=None), environ=environ or {}, signals=Signals()
        )
    except ConfigError as exc:
        if str(exc).startswith(said):
            raise ConfigError(f"{where} {str(exc).removeprefix(said)}") from None
        # Anything else is the Watcher's to say, naming the file.


_Served = Provider | type[Provider]


def choose_transport(
    config: Config,
    environ: Mapping[str, str] | None = None,
    signals: Signals | None = None,
    *,
    provider: _Served | None = None,
) -> Decision:
    """Pick the transports for ``config`` in this environment (DESIGN §6), with reasons.

    Only transports ``provider`` can serve are picked (its ``capabilities``); without one, the
    configured provider is built. An explicit choice it cannot serve is a ConfigError.
    """
    env = os.environ if environ is None else environ
    served = provider if provider is not None else _configured_provider(config)
    explicit = _explicit(config, env)
    if explicit is None:
        decision = _table(config, env, signals or Signals.detect(), served)
    else:
        decision = _honour(config, explicit, served)
    return _warn_of_cancellations(decision, config, served)


def _configured_provider(config: Config) -> Provider:
    with config.naming_source():
        provider: Provider = build("provider", config.provider, config)
    return provider


def _honour(config: Config, explicit: _Explicit, provider: _Served) -> Decision:
    caps, names = provider.capabilities, explicit.names
    lacking = {"sse": not (caps.job_stream or caps.workspace_stream), "webhook": not caps.webhooks}
    refused = [name for name in names if lacking.get(name)]
    if refused:
        what = " and ".join(
            {"sse": "no event stream", "webhook": "no webhooks"}[n] for n in refused
        )
        message = (
            f"{explicit.where} asks for {', '.join(refused)}, but the {provider.name} "
            f"provider has {what}; it offers {', '.join(caps.offers())}: choose from "
            'those, or "auto"'
        )
        if explicit.environment:
            raise ConfigError(message)
        with config.naming_source():
            raise ConfigError(message)
    push = any(n != "poll" for n in names)
    reasons, scope = [explicit.reason], None
    if "sse" in names:
        wanted = config.table("sse").get("scope", "job")
        offered = {"job": caps.job_stream, "workspace": caps.workspace_stream}
        if wanted in offered and not offered[wanted]:
            scope = "workspace" if wanted == "job" else "job"
            reasons.append(
                f"the {provider.name} provider has no {wanted} stream: sse uses its {scope} stream"
            )
    return Decision(
        transports=names,
        reasons=tuple(reasons),
        scope=scope,
        safety_poll=config.safety_poll if push and "poll" not in names else 0.0,
    )


def _warn_of_cancellations(decision: Decision, config: Config, provider: _Served) -> Decision:
    # Without a poll of its own, a push-only Watcher learns of a cancellation the provider's
    # push channels do not report only through the safety net.
    if (
        provider.capabilities.announces_cancellation
        or decision.handler_mode
        or config.safety_poll > 0
        or "poll" in decision.transports
    ):
        return decision
    warning = (
        f"warning: the {provider.name} provider's push channels do not report cancelled "
        "jobs, and safety_poll = 0 turns the safety net off: a cancelled job is never "
        "reported; set safety_poll (seconds, e.g. 600) or add poll to transport"
    )
    return attrs.evolve(decision, reasons=(*decision.reasons, warning))


_BUILTIN = ("poll", "sse", "webhook")


def _plugin_choice(config: Config, env: Mapping[str, str], signals: Signals) -> Decision | None:
    for name in installed("transport"):
        if name in _BUILTIN or name not in config.tables:
            continue
        fits = load("transport", name, Transport).fits
        with blame("transport", name, "deciding whether it fits (fits)"):
            reason = fits(config, env, signals)
        if reason:
            return Decision(
                transports=(name,),
                safety_poll=config.safety_poll,
                reasons=(f"the {name} plugin fits: {reason}",),
            )
    return None


def _net(config: Config) -> str:
    """What the reasons say of the safety net a push transport gets."""
    return "safety net on" if config.safety_poll > 0 else "safety net off (safety_poll = 0)"


def _own_scope(config: Config, provider: _Served) -> str | None:
    """The ``[jobwatch.sse] scope`` written in the configuration, where the provider has that
    stream: the Watcher builds the stream transport with it, whatever the table prefers."""
    wanted = config.table("sse").get("scope")
    caps = provider.capabilities
    offered = {"job": caps.job_stream, "workspace": caps.workspace_stream}
    return wanted if isinstance(wanted, str) and offered.get(wanted) else None


def _streams(scope: str) -> str:
    return "one workspace stream" if scope == "workspace" else "a stream per watched job"


def _poll(*reasons: str) -> Decision:
    return Decision(transports=("poll",), safety_poll=0.0, reasons=reasons)


def _table(config: Config, env: Mapping[str, str], signals: Signals, provider: _Served) -> Decision:
    plugin = _plugin_choice(config, env, signals)
    if plugin is not None:
        return plugin
    caps, who = provider.capabilities, f"the {provider.name} provider"
    configured = _webhook_configured(config)
    hook = configured and caps.webhooks
    # A configured webhook the provider cannot decode is said once, where it would have won.
    unserved = (
        (f"[jobwatch.webhook] is configured, but {who} receives no webhooks",)
        if configured and not caps.webhooks
        else ()
    )
    for var, platform in _SERVERLESS:
        if env.get(var):
            where = f"{var} is set: serverless on {platform}"
            if hook:
                return Decision(
                    transports=("webhook",),
                    safety_poll=0.0,
                    handler_mode=True,
                    reasons=(f"{where}; webhook in handler mode, no server and no stream",),
                )
            if not caps.webhooks:
                return _poll(
                    where,
                    f"warning: {who} receives no webhooks, so polling "
                    "instead; a function learns of a job only while it runs",
                )
            return _poll(
                where,
                "warning: no [jobwatch.webhook] is configured, so polling "
                "instead; configure webhook secrets for serverless use",
            )
    if signals.notebook:
        return _poll("running in a notebook kernel: poll")
    service = next((f"{var} is set: {what}" for var, what in _SERVICE if env.get(var)), None)
    if service is None and signals.web_server:
        service = "running under an ASGI/WSGI server"
    if service is not None:
        return _service(config, service, provider, hook, unserved)
    ci = _in_ci(env)
    if signals.tty and not ci:
        return _terminal(config, provider)
    why = "CI is set" if ci else "not a terminal, service or notebook"
    return _poll(f"{why}: poll")


def _in_ci(env: Mapping[str, str]) -> bool:
    """Whether ``CI`` says this runs in continuous integration: set, and not to a word that
    turns it off (``CI=false`` or ``CI=0``, as a developer writes it to act as at a terminal)."""
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _service(
    config: Config, service: str, provider: _Served, hook: bool, unserved: tuple[str, ...]
) -> Decision:
    caps, who = provider.capabilities, f"the {provider.name} provider"
    if hook:
        return Decision(
            transports=("webhook",),
            safety_poll=config.safety_poll,
            reasons=(
                f"{service}: a long-running service with a webhook configured: webhook, "
                f"{_net(config)}",
            ),
        )
    own = _own_scope(config, provider)
    if own is not None:
        return _configured_scope(
            config, own, f"{service}: a long-running service without a webhook", *unserved
        )
    if caps.workspace_stream:
        return Decision(
            transports=("sse",),
            safety_poll=config.safety_poll,
            scope="workspace",
            reasons=(
                f"{service}: a long-running service without a webhook: one "
                f"workspace stream, {_net(config)}",
                *unserved,
            ),
        )
    if caps.job_stream:
        return Decision(
            transports=("sse",),
            safety_poll=config.safety_poll,
            scope="job",
            reasons=(
                f"{service}: a long-running service without a webhook",
                *unserved,
                f"{who} has per-job streams only: a stream per "
                f"watched job instead of one workspace stream, {_net(config)}",
            ),
        )
    advice = (
        "configure [jobwatch.webhook] to be told instead of asking"
        if caps.webhooks
        else "it receives no webhooks either"
    )
    return _poll(
        f"{service}: a long-running service",
        *unserved,
        f"{who} has no event stream: poll ({advice})",
    )


def _configured_scope(config: Config, own: str, *reasons: str) -> Decision:
    """Streams of the scope ``[jobwatch.sse] scope`` names, after ``reasons``."""
    return Decision(
        transports=("sse",),
        safety_poll=config.safety_poll,
        scope=own,
        reasons=(*reasons, f'[jobwatch.sse] scope = "{own}": {_streams(own)}, {_net(config)}'),
    )


def _terminal(config: Config, provider: _Served) -> Decision:
    caps, who = provider.capabilities, f"the {provider.name} provider"
    where = "stdout is a terminal and CI is not set"
    own = _own_scope(config, provider)
    if own is not None:
        return _configured_scope(config, own, f"{where}: a stream, falling back to polling")
    if caps.job_stream:
        return Decision(
            transports=("sse",),
            safety_poll=config.safety_poll,
            scope="job",
            reasons=(f"{where}: a stream per job, falling back to polling, {_net(config)}",),
        )
    if caps.workspace_stream:
        return Decision(
            transports=("sse",),
            safety_poll=config.safety_poll,
            scope="workspace",
            reasons=(
                f"{where}: a stream, falling back to polling",
                f"{who} has a workspace stream only: one stream for every job, {_net(config)}",
            ),
        )
    return _poll(f"{where}, but {who} has no event stream: poll")


def check_names(names: tuple[str, ...], installed: list[str]) -> None:
    """Raise ConfigError for a transport name that is not installed."""
    for name in names:
        if name not in installed:
            raise ConfigError(
                f"unknown transport {name!r}; installed transports are {', '.join(installed)}"
            )
