"""``jobwatch doctor``: what jobwatch sees and decides, with every secret redacted.

It builds what ``jobwatch watch`` would build — the provider, its base URL, the policy's
decision for that provider, the store and the transports — and fails (exit 1, with one line
saying why) wherever ``watch`` would fail.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import TextIO

import anyio
import attrs
import httpx

from ._api import describe_http_error, missing_prefix, repeated_prefix, user_agent
from ._config import Config, Secret, redact_url
from ._errors import AuthenticationError, JobNotFound, JobwatchError
from ._policy import Decision, Signals, check_names, choose_transport
from ._registry import GROUPS, base, build, installed, load
from .abc import Provider, Request, Response, Store
from .stores.sqlite import SQLiteStore

__all__ = ["doctor"]

_ENV = (
    "JOBWATCH_TRANSPORT",
    "JOBWATCH_CONFIG",
    "CI",
    "AWS_LAMBDA_FUNCTION_NAME",
    "FUNCTIONS_WORKER_RUNTIME",
    "K_SERVICE",
    "FUNCTION_TARGET",
    "VERCEL",
    "NETLIFY",
    "KUBERNETES_SERVICE_HOST",
    "INVOCATION_ID",
    "DYNO",
    "SERVER_SOFTWARE",
)


class _Report:
    """The printed report and the problems that would stop ``jobwatch watch``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.problems: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, file=self.out)

    def problem(self, line: str, what: str) -> None:
        self.say(line)
        self.problems.append(what)

    def verdict(self) -> int:
        if not self.problems:
            self.say("doctor: ok")
            return 0
        more = len(self.problems) - 1
        also = f" (and {more} more problem{'s' * (more > 1)} above)" if more else ""
        self.say(f"doctor: jobwatch watch would fail: {self.problems[0]}{also}")
        return 1


async def doctor(
    config: Config,
    out: TextIO,
    *,
    environ: dict[str, str] | None = None,
    signals: Signals | None = None,
    provider: Provider | None = None,
) -> int:
    """Print the report; returns 0 when ``watch`` would start and the API answers, else 1.

    ``provider``: a ready instance instead of the configured one, as ``Watcher`` takes.
    """
    env = dict(os.environ) if environ is None else environ
    signals = signals or Signals.detect()
    report = _Report(out)
    say = report.say
    say(
        f"configuration file: {config.source}"
        if config.source is not None
        else "configuration file: none found (no --config, JOBWATCH_CONFIG, jobwatch.toml or "
        "[tool.jobwatch] in pyproject.toml); the defaults"
    )
    say("configuration (secrets redacted):")
    say(_indent(json.dumps(config.redacted(), indent=2, default=str)))
    say("environment signals:")
    say(
        f"  stdout is a terminal: {signals.tty}; notebook: {signals.notebook}; "
        f"web server: {signals.web_server}"
    )
    for name in _ENV:
        if env.get(name):
            shown = env[name] if name in ("JOBWATCH_TRANSPORT", "JOBWATCH_CONFIG", "CI") else "set"
            say(f"  {name}: {shown}")
    built = provider if provider is not None else _provider(config, report)
    base_url = decision = None
    if built is not None:
        base_url = _base_url(config, built, report)
        decision = _policy(config, env, signals, built, report)
    _plugins(report)
    _components(config, report, decision, built_provider=provider is None)
    await _store_reachable(config, report)
    if built is not None and base_url is not None:
        await _reachability(config, built, base_url, report)
    return report.verdict()


def _provider(config: Config, report: _Report) -> Provider | None:
    try:
        with config.naming_source():
            provider: Provider = build("provider", config.provider, config)
    except JobwatchError as exc:
        report.problem(f"provider {config.provider}: {exc}", str(exc))
        return None
    return provider


def _base_url(config: Config, provider: Provider, report: _Report) -> str | None:
    caps = provider.capabilities
    streams = [
        scope
        for scope, has in (("job", caps.job_stream), ("workspace", caps.workspace_stream))
        if has
    ]
    report.say(
        f"provider {provider.name}: offers {', '.join(caps.offers())} (streams: "
        f"{', '.join(streams) or 'none'}; webhook scheme: "
        f"{caps.webhook_scheme if caps.webhooks else 'none'}; push channels report "
        f"cancellations: {'yes' if caps.announces_cancellation else 'no'})"
    )
    try:
        with config.naming_source():
            url = provider.resolve_base_url(config)
    except JobwatchError as exc:
        report.problem(f"base URL: {exc}", str(exc))
        return None
    origin = "[jobwatch] base_url" if config.base_url else f"the {provider.name} provider's default"
    report.say(f"base URL: {redact_url(url)} ({origin})")
    return url


def _policy(
    config: Config, env: dict[str, str], signals: Signals, provider: Provider, report: _Report
) -> Decision | None:
    try:
        decision = choose_transport(config, env, signals, provider=provider)
        check_names(decision.transports, installed("transport"))
    except JobwatchError as exc:
        report.problem(f"policy: error: {exc}", str(exc))
        return None
    scope = f" ({decision.scope} scope)" if decision.scope else ""
    safety = f"{decision.safety_poll:g} s" if decision.safety_poll else "off"
    report.say(f"policy: transports {', '.join(decision.transports)}{scope}; safety net {safety}")
    for reason in decision.reasons:
        report.say(f"  - {reason}")
    return decision


def _plugins(report: _Report) -> None:
    report.say("plugins:")
    for kind, group in GROUPS.items():
        failed: set[str] = set()
        for point in sorted(entry_points(group=group), key=lambda p: (p.name, p.value)):
            try:
                load(kind, point.name, base(kind))
                state = "ok"
            except JobwatchError as exc:
                state = f"FAILS: {exc}"
                if point.name not in failed:  # a name two distributions register: said once
                    failed.add(point.name)
                    report.problems.append(f"the {kind} plugin {point.name!r} fails to load: {exc}")
            report.say(f"  {group}: {point.name} ({point.value}) {state}")


def _components(
    config: Config, report: _Report, decision: Decision | None, *, built_provider: bool
) -> None:
    """Build the store, the provider, every transport the policy chose and every component
    whose table is configured: what a Watcher would refuse, doctor reports."""
    chosen = decision.transports if decision is not None else ()
    wanted = {("store", config.store), *(("transport", name) for name in chosen)}
    if built_provider:
        wanted.add(("provider", config.provider))
    for kind, group in GROUPS.items():
        wanted.update(
            (kind, point.name) for point in entry_points(group=group) if point.name in config.tables
        )
    if decision is not None and decision.scope is not None and "scope" not in config.table("sse"):
        config = config.with_table("sse", scope=decision.scope)  # as the Watcher builds it
    report.say("configured components:")
    for kind, name in sorted(wanted, key=lambda pair: (list(GROUPS).index(pair[0]), pair[1])):
        try:
            with config.naming_source():
                build(kind, name, config)
            report.say(f"  {kind} {name}: options ok")
        except JobwatchError as exc:
            report.problem(f"  {kind} {name}: {exc}", f"{kind} {name}: {exc}")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


async def _reachability(config: Config, provider: Provider, base_url: str, report: _Report) -> None:
    say: Callable[[str], None] = report.say
    request = provider.status_request("jobwatch-doctor-probe")
    url = redact_url(base_url.rstrip("/")) + request.path
    carrying = _key_headers(config, provider)
    sent = {**provider.headers(), **request.headers}
    key_sent = any(name.lower() in carrying for name in sent)
    try:
        response = await _probe(base_url, request, provider.headers())
    except httpx.HTTPError as exc:
        why = describe_http_error(exc)
        report.problem(
            f"reachability: {request.method} {url} failed: {why}; check base_url and the network",
            f"the API at {redact_url(base_url)} cannot be reached ({why})",
        )
        return
    said = f"reachability: {request.method} {url} -> HTTP {response.status}"
    # Which answers mean "the key is wrong" is the provider's to say, not a status code's.
    error = provider.error_for(response) if response.status >= 300 else None
    if isinstance(error, AuthenticationError):
        if config.api_key is not None:
            refused = "the API refused the api_key; check it"
        elif key_sent:
            # A provider may read its key from the environment ([auth] env of a described
            # API): the key refused is that one, which its message names.
            refused = f"the API refused the key the provider read from the environment: {error}"
        else:
            refused = f"no api_key is set; set [jobwatch] api_key ({error})"
        report.problem(f"{said}: {refused}", refused)
    elif isinstance(error, JobNotFound):
        await _not_found(provider, base_url, request, said, report, carrying)
    else:
        say(f"{said}: the API answered" + (f" ({error})" if error is not None else ""))


def _key_headers(config: Config, provider: Provider) -> frozenset[str]:
    """The names (lower case) of the headers that carry the API key, in the provider's own
    headers or on its status request (a described API sends its key with each request)."""
    probe = "jobwatch-doctor-probe-key"
    try:
        keyed = type(provider).from_config(config.replace(api_key=Secret(probe)))
        sent = {**keyed.headers(), **keyed.status_request("jobwatch-doctor-probe").headers}
    except JobwatchError:
        return frozenset()
    return frozenset(name.lower() for name, value in sent.items() if probe in value)


def _without(headers: Mapping[str, str], names: frozenset[str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() not in names}


async def _probe(base_url: str, request: Request, headers: Mapping[str, str]) -> Response:
    async with httpx.AsyncClient(
        base_url=base_url, timeout=10.0, headers={"user-agent": user_agent(), **headers}
    ) as client:
        reply = await client.request(
            request.method, request.path, params=dict(request.params), headers=dict(request.headers)
        )
    return Response(status=reply.status_code, headers=dict(reply.headers), body=reply.content)


async def _not_found(
    provider: Provider,
    base_url: str,
    request: Request,
    said: str,
    report: _Report,
    carrying: frozenset[str],
) -> None:
    """The probe job is not found: the key counts as accepted only if the API refuses the
    same request without it; a base_url repeating the API's path prefix is a problem."""
    try:
        bare_request = attrs.evolve(request, headers=_without(request.headers, carrying))
        # Without a known key header, none of the provider's own headers is sent.
        static = _without(provider.headers(), carrying) if carrying else {}
        bare = await _probe(base_url, bare_request, static)
        checked = isinstance(provider.error_for(bare), AuthenticationError)
    except httpx.HTTPError:
        checked = False
    if checked:
        report.say(
            f"{said}: the API answered and accepted the key (a probe job is not found, as expected)"
        )
    else:
        report.say(
            f"{said}: the API answered, but the key was not checked (it answers the "
            "same without one)"
        )
    repeated = repeated_prefix(base_url, request.path)
    if repeated is not None:
        problem = (
            f"base_url {redact_url(base_url)} ends in {repeated}, which the "
            f"{provider.name} provider adds itself (requests go to "
            f"{repeated}{request.path}); remove {repeated} from base_url"
        )
        report.problem(f"  {problem}", problem)
    missing = missing_prefix(base_url, provider.default_base_url)
    if missing is not None:
        problem = (
            f"base_url {redact_url(base_url)} lacks {missing}, which the {provider.name} "
            f"provider's base URL ({redact_url(provider.default_base_url or '')}) has "
            f"(requests go to {redact_url(base_url.rstrip('/'))}"
            f"{request.path.replace('jobwatch-doctor-probe', '...')}); add {missing} to base_url"
        )
        report.problem(f"  {problem}", problem)


async def _store_reachable(config: Config, report: _Report) -> None:
    """Open a store that lives on a server (Redis, say) and close it again: a server that is
    down is a problem. A local store is not opened (that would create its file)."""
    try:
        with config.naming_source():
            store: Store = build("store", config.store, config)
    except JobwatchError:
        return  # said among the components
    if not store.shared or isinstance(store, SQLiteStore):
        return  # in this process, or in a file that opening would create
    try:
        with anyio.move_on_after(5.0) as waited:
            await store.open()
            await store.aclose()
    except JobwatchError as exc:
        report.problem(
            f"store {config.store}: cannot be opened: {exc}",
            f"the store {config.store} cannot be opened: {exc}",
        )
        return
    if waited.cancelled_caught:
        report.say(f"store {config.store}: still opening after 5 s (see the warning above)")
        with anyio.CancelScope(shield=True):
            await store.aclose()
    else:
        report.say(f"store {config.store}: opened and closed")
