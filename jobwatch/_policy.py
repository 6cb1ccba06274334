"""The policy: which transport fits where the code runs, and why.

:func:`choose_transport` is a pure function of a configuration, an environment mapping and a
:class:`Signals` value; only the defaults read the current process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import attrs

from ._config import Config
from ._errors import ConfigError

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
        raise ConfigError(f"{where} names no transport; give poll, sse, webhook, a "
                          "comma-separated list, or auto")
    return names


def _explicit(config: Config, environ: Mapping[str, str]) -> tuple[tuple[str, ...], str] | None:
    override = environ.get("JOBWATCH_TRANSPORT", "").strip()
    if override and override != "auto":
        names = split_transports(override, f"JOBWATCH_TRANSPORT={override!r}")
        return names, f"JOBWATCH_TRANSPORT={override} overrides the configuration and the table"
    if config.transports is not None:
        joined = ", ".join(config.transports)
        return config.transports, f"transport = {joined} set in the configuration"
    return None


def choose_transport(
    config: Config, environ: Mapping[str, str] | None = None, signals: Signals | None = None
) -> Decision:
    """Pick the transports for ``config`` in this environment (DESIGN §6), with reasons."""
    env = os.environ if environ is None else environ
    explicit = _explicit(config, env)
    if explicit is not None:
        names, reason = explicit
        push = any(n != "poll" for n in names)
        safety = config.safety_poll if push and "poll" not in names else 0.0
        return Decision(transports=names, safety_poll=safety, reasons=(reason,))
    return _table(config, env, signals or Signals.detect())


_BUILTIN = ("poll", "sse", "webhook")


def _plugin_choice(config: Config, env: Mapping[str, str], signals: Signals) -> Decision | None:
    from ._registry import installed, load
    from .abc import Transport

    for name in installed("transport"):
        if name in _BUILTIN or name not in config.tables:
            continue
        reason = load("transport", name, Transport).fits(config, env, signals)
        if reason:
            return Decision(transports=(name,), safety_poll=config.safety_poll,
                            reasons=(f"the {name} plugin fits: {reason}",))
    return None


def _table(config: Config, env: Mapping[str, str], signals: Signals) -> Decision:
    plugin = _plugin_choice(config, env, signals)
    if plugin is not None:
        return plugin
    hook = _webhook_configured(config)
    for var, platform in _SERVERLESS:
        if env.get(var):
            if hook:
                return Decision(transports=("webhook",), safety_poll=0.0, handler_mode=True,
                                reasons=(f"{var} is set: serverless on {platform}; webhook in "
                                         "handler mode, no server and no stream",))
            return Decision(transports=("poll",), safety_poll=0.0, reasons=(
                f"{var} is set: serverless on {platform}",
                "warning: no [jobwatch.webhook] is configured, so polling instead; configure "
                "webhook secrets for serverless use"))
    if signals.notebook:
        return Decision(transports=("poll",), safety_poll=0.0,
                        reasons=("running in a notebook kernel: poll",))
    service = next((f"{var} is set: {what}" for var, what in _SERVICE if env.get(var)), None)
    if service is None and signals.web_server:
        service = "running under an ASGI/WSGI server"
    if service is not None:
        if hook:
            return Decision(transports=("webhook",), safety_poll=config.safety_poll,
                            reasons=(f"{service}: a long-running service with a webhook "
                                     "configured: webhook, safety net on",))
        return Decision(transports=("sse",), safety_poll=config.safety_poll, scope="workspace",
                        reasons=(f"{service}: a long-running service without a webhook: one "
                                 "workspace stream, safety net on",))
    if signals.tty and not env.get("CI"):
        return Decision(transports=("sse",), safety_poll=config.safety_poll, scope="job",
                        reasons=("stdout is a terminal and CI is not set: a stream per job, "
                                 "falling back to polling",))
    why = "CI is set" if env.get("CI") else "not a terminal, service or notebook"
    return Decision(transports=("poll",), safety_poll=0.0, reasons=(f"{why}: poll",))


def check_names(names: tuple[str, ...], installed: list[str]) -> None:
    """Raise ConfigError for a transport name that is not installed."""
    for name in names:
        if name not in installed:
            raise ConfigError(
                f"unknown transport {name!r}; installed transports are {', '.join(installed)}"
            )
