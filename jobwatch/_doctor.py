"""``jobwatch doctor``: what jobwatch sees and decides, with every secret redacted."""

from __future__ import annotations

import json
import os
from importlib.metadata import entry_points
from typing import Any, TextIO

import httpx

from ._config import Config
from ._errors import JobwatchError
from ._policy import Signals, choose_transport
from ._registry import GROUPS, base, load
from .abc import Provider

__all__ = ["doctor"]

_ENV = ("JOBWATCH_TRANSPORT", "JOBWATCH_CONFIG", "CI", "AWS_LAMBDA_FUNCTION_NAME",
        "FUNCTIONS_WORKER_RUNTIME", "K_SERVICE", "FUNCTION_TARGET", "VERCEL", "NETLIFY",
        "KUBERNETES_SERVICE_HOST", "INVOCATION_ID", "DYNO", "SERVER_SOFTWARE")


async def doctor(config: Config, out: TextIO, *, environ: dict[str, str] | None = None,
                 signals: Signals | None = None) -> int:
    """Print the report; returns 0 when everything loads and the API answers, else 1."""
    env = dict(os.environ) if environ is None else environ
    signals = signals or Signals.detect()
    ok = True

    def say(line: str = "") -> None:
        print(line, file=out)

    say("configuration (secrets redacted):")
    say(_indent(json.dumps(config.redacted(), indent=2, default=str)))
    say("environment signals:")
    say(f"  stdout is a terminal: {signals.tty}; notebook: {signals.notebook}; "
        f"web server: {signals.web_server}")
    for name in _ENV:
        if env.get(name):
            shown = env[name] if name in ("JOBWATCH_TRANSPORT", "JOBWATCH_CONFIG", "CI") else "set"
            say(f"  {name}: {shown}")
    chosen: tuple[str, ...] = ()
    try:
        decision = choose_transport(config, env, signals)
        chosen = decision.transports
        say(f"policy: transports {', '.join(decision.transports)}; safety net "
            f"{'off' if not decision.safety_poll else f'{decision.safety_poll:g} s'}")
        for reason in decision.reasons:
            say(f"  - {reason}")
    except JobwatchError as exc:
        ok = False
        say(f"policy: error: {exc}")
    say("plugins:")
    for kind, group in GROUPS.items():
        for point in sorted(entry_points(group=group), key=lambda p: p.name):
            try:
                load(kind, point.name, base(kind))
                state = "ok"
            except JobwatchError as exc:
                ok, state = False, f"FAILS: {exc}"
            say(f"  {group}: {point.name} ({point.value}) {state}")
    ok = _components(config, say, chosen) and ok
    ok = await _reachability(config, say) and ok
    return 0 if ok else 1


def _components(config: Config, say: Any, chosen: tuple[str, ...]) -> bool:
    """Build the store, the provider, every transport the policy chose and every component
    whose table is configured: what a Watcher would refuse, doctor reports."""
    wanted = {("store", config.store), ("provider", config.provider),
              *(("transport", name) for name in chosen)}
    for kind, group in GROUPS.items():
        wanted.update((kind, point.name) for point in entry_points(group=group)
                      if point.name in config.tables)
    ok = True
    say("configured components:")
    for kind, name in sorted(wanted, key=lambda pair: (list(GROUPS).index(pair[0]), pair[1])):
        try:
            load(kind, name, base(kind)).from_config(config)
            say(f"  {kind} {name}: options ok")
        except JobwatchError as exc:
            ok = False
            say(f"  {kind} {name}: {exc}")
    return ok


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


async def _reachability(config: Config, say: object) -> bool:
    assert callable(say)
    try:
        provider = load("provider", config.provider, Provider).from_config(config)
    except JobwatchError as exc:
        say(f"reachability: cannot build the provider: {exc}")
        return False
    request = provider.status_request("jobwatch-doctor-probe")
    url = config.base_url.rstrip("/") + request.path
    try:
        async with httpx.AsyncClient(base_url=config.base_url, timeout=10.0,
                                     headers=dict(provider.headers())) as client:
            reply = await client.request(request.method, request.path,
                                         params=dict(request.params))
    except httpx.HTTPError as exc:
        say(f"reachability: GET {url} failed: {type(exc).__name__}: {exc}; check base_url "
            "and the network")
        return False
    refused = "no api_key is set; set [jobwatch] api_key" if config.api_key is None \
        else "the API refused the api_key; check it"
    verdicts = {401: refused,
                404: "the API answered and accepted the key (404 for a probe job is expected)"}
    say(f"reachability: GET {url} -> HTTP {reply.status_code}: "
        f"{verdicts.get(reply.status_code, 'the API answered')}")
    return reply.status_code != 401
