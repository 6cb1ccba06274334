"""The ``jobwatch`` command: watch, listen, doctor, sim and demo (DESIGN §7).

Events go to standard output. An error is one line on standard error, ``jobwatch: error:
...``, and the library's warnings are lines ``jobwatch: warning: ...`` there, each said once;
nothing the command reports itself (a job that cannot be watched, an API that does not answer)
is said twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

import anyio
import trio

from . import __version__
from ._api import missing_prefix, repeated_prefix
from ._blocking import explain_timeout
from ._config import Config, Secret, load_config, redact_url
from ._errors import (
    AuthenticationError,
    ConfigError,
    InvalidJobId,
    JobNotFound,
    JobwatchError,
    NetworkError,
    PluginError,
    WatchTimeout,
    leaves,
)
from ._events import EventKind, JobEvent
from ._policy import check_names, check_served, split_transports
from ._registry import installed
from ._watcher import DEFAULT_TIMEOUT, Watcher, check_job_id
from .abc import Provider

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_TIMEOUT = 0, 1, 2, 3, 4
#: Standard output closed by its reader (`jobwatch watch JOB | head -1`): the code a shell
#: gives a command that SIGPIPE stopped (128 + 13).
EXIT_OUTPUT_CLOSED = 141

#: Requests in a row that got no answer, from an API that never answered, before ``watch``
#: says the API cannot be reached (a wrong base_url) instead of retrying for the timeout.
UNREACHABLE_AFTER = 3
#: Seconds without an answer or a failure, after which ``watch`` asks the API itself.
PROBE_AFTER = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobwatch", description="Watch long-running jobs of web APIs."
    )
    parser.add_argument("--version", action="version", version=f"jobwatch {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors, and the library's log"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    watch = sub.add_parser("watch", help="watch jobs until they finish")
    watch.add_argument("jobs", nargs="+", metavar="JOB_ID")
    _common(watch)
    watch.add_argument("--transport", help="poll, sse, webhook or a comma-separated list")
    watch.add_argument(
        "--timeout",
        type=_positive(float),
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for each job (default 3600)",
    )

    listen = sub.add_parser("listen", help="run the webhook receiver and print each event")
    _common(listen)
    listen.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to serve on (default: [jobwatch.webhook] listen, "
        "else 127.0.0.1:8787; port 0: any free port)",
    )
    listen.add_argument("--certfile", help="TLS certificate (PEM)")
    listen.add_argument("--keyfile", help="TLS private key (PEM)")
    _backend(
        listen,
        "trio",
        "trio; asyncio records 40-80 %% more deliveries a second, see docs/benchmarks.md",
    )

    doctor = sub.add_parser("doctor", help="show configuration, environment and policy")
    _source(doctor)

    sub.add_parser("sim", help="run the local Reader simulator (jobwatch sim --help)")

    inbox = sub.add_parser(
        "inbox", help="the store's dead letters and undelivered events: list, show, replay, drop"
    )
    _inbox_options(inbox, argparse.SUPPRESS)
    actions = inbox.add_subparsers(
        dest="action",
        metavar="{list,show,replay,drop}",
        required=True,
        parser_class=_InboxActionParser,
    )
    for action, about in (
        ("list", "every dead letter and undelivered event"),
        ("show", "one event, with why it failed"),
        (
            "replay",
            "put a dead letter back in the inbox: the next Watcher "
            "on this store dispatches it when it starts",
        ),
        ("drop", "forget an event for good"),
    ):
        parsed = actions.add_parser(action, help=about)
        if action != "list":
            parsed.add_argument(
                "key", metavar="KEY", help="the event's key (one that begins with - after --)"
            )
        _inbox_options(parsed, argparse.SUPPRESS)

    dashboard = sub.add_parser("dashboard", help="serve the live dashboard and SSE relay")
    _source(dashboard)
    dashboard.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to serve on (default: [jobwatch.dashboard] listen, "
        "else 127.0.0.1:8788; port 0: any free port)",
    )
    _backend(
        dashboard,
        "asyncio",
        "asyncio: it writes to many clients with a third less CPU than trio, see docs/dashboard.md",
    )

    providers = sub.add_parser("providers", help="installed providers and what each offers")
    providers.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="print this preset's TOML description, to copy and adapt",
    )

    demo = sub.add_parser("demo", help="watch a job on the built-in simulator (no account)")
    group = demo.add_mutually_exclusive_group()
    group.add_argument("--transport", help="poll, sse or webhook (default: the policy's choice)")
    group.add_argument(
        "--compare",
        action="store_true",
        help="watch one job with every transport at once and compare them",
    )
    demo.add_argument(
        "--pages",
        type=_positive(int),
        default=50,
        help="pages in the demo job (with --provider: its requests, jobs or output tokens)",
    )
    demo.add_argument(
        "--provider",
        default="reader",
        metavar="NAME",
        help="the API: reader (default), or openai-batch, github-actions or "
        "replicate, watched on a fake of that API",
    )
    demo.add_argument(
        "--time-scale", type=_positive(float), default=5.0, help="simulated seconds per real second"
    )
    # --debug after the command too (`jobwatch watch JOB --debug`): SUPPRESS keeps a command
    # that is not given it from overwriting the one given before the command.
    for command in (*sub.choices.values(), *actions.choices.values()):
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks on errors, and the library's log",
        )
    return parser


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` greater than zero."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="F", help="configuration file")
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="the API's address, over the configuration and JOBWATCH_BASE_URL "
        "(e.g. the address `jobwatch sim` prints)",
    )


class _InboxActionParser(argparse.ArgumentParser):
    """The parser of an inbox action: an error in one that takes a KEY says how to give a
    key that begins with - (an event of a job whose id does), which would be read as an
    option."""

    def error(self, message: str) -> NoReturn:
        if any(action.dest == "key" for action in self._actions):
            message += f"\n  (a KEY that begins with - goes after --: {self.prog} -- KEY)"
        super().error(message)


def _inbox_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # Before or after the action (`inbox --config F list`, `inbox list --json`): SUPPRESS
    # keeps an action's parser from overwriting what was given before it.
    parser.add_argument("--config", metavar="F", default=default, help="configuration file")
    parser.add_argument(
        "--json", action="store_true", default=default, help="print JSON (one object per line)"
    )


def _backend(parser: argparse.ArgumentParser, default: str, why: str) -> None:
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default=default,
        help=f"the event loop to serve on (default {why})",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    _source(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object per event")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="with --json: include each event's payload as the API sent it (data)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = [a for a in argv[:2] if a != "--debug"][:1]
    if command == ["sim"]:
        # The simulator has its own options and --help; hand it the rest untouched.
        from .sim import main as sim_main

        return sim_main(argv[argv.index("sim") + 1 :])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "watch": _watch_command,
        "listen": _listen_command,
        "doctor": _doctor_command,
        "demo": _demo_command,
        "dashboard": _dashboard_command,
        "providers": _providers_command,
        "inbox": _inbox_command,
    }
    with _warnings(args.debug):
        try:
            if getattr(args, "raw", False) and not args.json:
                raise ConfigError(
                    "--raw adds each event's payload to the lines of --json; give --json too"
                )
            return commands[args.command](args)
        except KeyboardInterrupt:
            print("jobwatch: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return _output_closed()
        except JobwatchError as exc:
            return _fail(args, exc)
        except BaseExceptionGroup as group:
            if any(isinstance(e, KeyboardInterrupt) for e in leaves(group)):
                # Ctrl-C inside a task group (the demo's simulator) arrives wrapped.
                print("jobwatch: interrupted", file=sys.stderr)
                return 130
            if any(isinstance(e, BrokenPipeError) for e in leaves(group)):
                return _output_closed()
            inner = _first_jobwatch_error(group)
            if inner is None:
                raise
            return _fail(args, inner)


def _output_closed() -> int:
    """Standard output was closed by its reader (`jobwatch watch JOB | head -1` has its
    line): stop quietly, as a command that SIGPIPE stops does. What is still buffered for it
    goes nowhere, or Python would say it could not flush it on the way out."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process)
        pass
    return EXIT_OUTPUT_CLOSED


def _first_jobwatch_error(group: BaseExceptionGroup) -> JobwatchError | None:
    return next((e for e in leaves(group) if isinstance(e, JobwatchError)), None)


def _fail(args: argparse.Namespace, exc: JobwatchError) -> int:
    if args.debug:
        raise exc
    print(f"jobwatch: error: {_one_line(str(exc))}", file=sys.stderr)
    if isinstance(exc, ConfigError | PluginError | InvalidJobId):
        return EXIT_USAGE
    return EXIT_FAILED


_RETRIES = re.compile(r"\s*(;|—|--)\s*jobwatch retries[^;]*$")


def _one_line(message: str) -> str:
    # The command has given up by the time it prints an error: a promise to retry is false.
    return _RETRIES.sub("", " ".join(message.split()))


def _load(
    args: argparse.Namespace, transport: str | None = None, *, check_file: bool = True
) -> tuple[Config, dict[str, str]]:
    """The configuration with the command line's and the environment's overrides, and the
    environment the Watcher's policy reads. ``check_file``: a transport the file names that
    is not installed is a ConfigError here (doctor reports it among its findings instead)."""
    environ = dict(os.environ)
    config = load_config(args.config)
    _warn_of_other_providers(config)
    for value, where in (
        (environ.get("JOBWATCH_BASE_URL"), "JOBWATCH_BASE_URL"),
        (args.base_url, "--base-url"),
    ):
        if value:
            try:
                config = config.replace(base_url=value)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    if environ.get("JOBWATCH_API_KEY"):
        try:
            config = config.replace(api_key=Secret(environ["JOBWATCH_API_KEY"]))
        except ConfigError as exc:
            raise ConfigError(f"JOBWATCH_API_KEY: {exc}") from None
    if transport is not None:
        names = _transports(transport, f"--transport {transport!r}")
        config = config.replace(transport=names[0] if len(names) == 1 else names)
        environ.pop("JOBWATCH_TRANSPORT", None)  # the flag is the more specific choice
        check_served(config, f"--transport {transport!r}")
    else:
        chosen = environ.get("JOBWATCH_TRANSPORT", "").strip()
        if chosen and chosen != "auto":
            _transports(chosen, f"JOBWATCH_TRANSPORT={chosen!r}")
        elif config.transports and check_file:
            # Checked here, where the file can be named; the Watcher would say only the name.
            with config.naming_source():
                try:
                    check_names(config.transports, installed("transport"))
                except ConfigError as exc:
                    raise ConfigError(f"[jobwatch] transport: {exc}") from None
    return config, environ


def _warn_of_other_providers(config: Config) -> None:
    """A provider's table that nothing reads, because ``provider`` names another: the
    usual slip after copying a preset (`jobwatch providers NAME > jobwatch.toml`)."""
    unread = sorted(set(config.tables) & set(installed("provider")) - {config.provider})
    if not unread or config.source is None:
        return
    top = "tool.jobwatch" if Path(config.source).name == "pyproject.toml" else "jobwatch"
    tables = ", ".join(f"[{top}.{name}]" for name in unread)
    print(
        f"jobwatch: warning: {config.source} has {tables}, but provider = "
        f'"{config.provider}", which does not read it; set provider = "{unread[0]}" '
        f"under [{top}] to watch that API",
        file=sys.stderr,
        flush=True,
    )


def _transports(text: str, where: str) -> tuple[str, ...]:
    """The transport names of a flag or variable; a ConfigError names where they came from."""
    names = split_transports(text, where)
    try:
        check_names(names, installed("transport"))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return names


# -- warnings on standard error ------------------------------------------------------------


class _Warnings(logging.Handler):
    """The library's warnings as ``jobwatch: warning: ...`` lines, each said once; ``mutes``
    drop what the command reports in its own words.

    :meth:`hold` keeps warnings back until :meth:`end_hold`, which says them, or drops them
    and all that follow (the command is giving up with an error that says it all).
    """

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.said: set[str] = set()
        self.mutes: list[Callable[[logging.LogRecord], bool]] = []
        self.held: list[logging.LogRecord] | None = None
        self.dropping = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.dropping or any(mute(record) for mute in self.mutes):
            return
        if self.held is not None:
            self.held.append(record)
            return
        self._say(record)

    def hold(self) -> None:
        if self.held is None:
            self.held = []

    def end_hold(self, *, say: bool) -> None:
        held, self.held = self.held or [], None
        if not say:
            self.dropping = True
        elif not self.dropping:
            for record in held:
                self._say(record)

    def _say(self, record: logging.LogRecord) -> None:
        text = _one_line(record.getMessage())
        if text in self.said:
            return
        self.said.add(text)
        print(f"jobwatch: {record.levelname.lower()}: {text}", file=sys.stderr, flush=True)


_handler: _Warnings | None = None


@contextmanager
def _warnings(debug: bool) -> Iterator[_Warnings]:
    global _handler
    logger = logging.getLogger("jobwatch")
    handler, level = _Warnings(logging.DEBUG if debug else logging.WARNING), logger.level
    logger.addHandler(handler)
    if debug:
        logger.setLevel(logging.DEBUG)
    _handler = handler
    try:
        yield handler
    finally:
        _handler = None
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def _muted(mute: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    handler = _handler
    if handler is None:
        yield
        return
    handler.mutes.append(mute)
    try:
        yield
    finally:
        handler.mutes.remove(mute)


def _end_hold(*, say: bool) -> None:
    if _handler is not None:
        _handler.end_hold(say=say)


def _reported_by_watch(jobs: Sequence[str]) -> Callable[[logging.LogRecord], bool]:
    """What ``watch`` says itself: the end of a job it watches, and a refused key (it gives
    up with that error)."""
    watched = set(jobs)

    def mute(record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("stopped watching job") and args[:1] and args[0] in watched:
            return True
        return any(isinstance(a, AuthenticationError) for a in args)

    return mute


# -- watch -----------------------------------------------------------------------------------


class _GiveUp(JobwatchError):
    """Watching cannot go on for any job (the key is refused, the API cannot be reached)."""


class _Outcomes:
    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.errors: dict[str, JobwatchError] = {}

    def exit_code(self) -> int:
        values = set(self.kinds.values())
        if "timeout" in values:
            return EXIT_TIMEOUT
        if values & {"failed", "error"}:
            return EXIT_FAILED
        if "cancelled" in values:
            return EXIT_CANCELLED
        return EXIT_OK


def _watch_command(args: argparse.Namespace) -> int:
    for job_id in args.jobs:
        check_job_id(job_id)  # InvalidJobId: a usage error
    jobs = list(dict.fromkeys(args.jobs))  # a job named twice is watched (and shown) once
    config, environ = _load(args, args.transport)
    if not _configures_store(config):
        # A watch from a terminal needs no state between runs, and must not leave a
        # database in whatever folder it was started in.
        config = config.replace(store="memory")
    renderer = _renderer(args.json, raw=args.raw)
    return trio.run(_watch_fresh, config, jobs, args.timeout, renderer, environ)


def _configures_store(config: Config) -> bool:
    """Whether the configuration names a store, or has the table of the one it uses."""
    if config.store in config.tables:
        return True
    if config.source is None:
        return False
    try:
        document = tomllib.loads(Path(config.source).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True  # read a moment ago; keep what it asked for
    if Path(config.source).name == "pyproject.toml":
        document = document.get("tool", {})
    table = document.get("jobwatch", {})
    return isinstance(table, Mapping) and "store" in table


async def _watch_fresh(
    config: Config, jobs: list[str], deadline: float, renderer: Any, environ: Mapping[str, str]
) -> int:
    watcher = Watcher(config, environ=environ)
    _warn_if_no_receiver(config, watcher)
    if _handler is not None:
        # Until the API first answers, what is said may be only that it does not: held back,
        # and dropped if watch gives up saying so (_give_up_if_unreachable).
        _handler.hold()
    try:
        with _muted(_reported_by_watch(jobs)):  # until the Watcher has stopped
            async with watcher:
                return await _watch(config, jobs, deadline, renderer, watcher)
    finally:
        _end_hold(say=True)


def _warn_if_no_receiver(config: Config, watcher: Watcher) -> None:
    """Webhooks alone, with no address to receive them on: nothing will arrive, and a job's
    end waits for a safety poll (or forever, with safety_poll = 0)."""
    if watcher.decision.transports != ("webhook",) or config.table("webhook").get("listen"):
        return
    net = watcher.decision.safety_poll
    then = f"a safety poll after {net:g} s of silence" if net else "nothing (safety_poll = 0)"
    print(
        "jobwatch: warning: the webhook transport receives nothing here: [jobwatch.webhook] "
        f"listen is not set, so no receiver runs, and a job's end is seen only through {then}; "
        "set listen to an address the API's webhooks reach, or watch with --transport poll",
        file=sys.stderr,
        flush=True,
    )


async def _watch(
    config: Config, jobs: list[str], deadline: float, renderer: Any, watcher: Watcher | None = None
) -> int:
    """Watch ``jobs``; returns the exit code. ``watcher``: one already running, else one is
    made from ``config`` for the duration."""
    if watcher is None:
        return await _watch_fresh(config, jobs, deadline, renderer, os.environ)
    outcomes = _Outcomes()
    with renderer, _muted(_reported_by_watch(jobs)):
        async with anyio.create_task_group() as guard:
            guard.start_soon(_give_up_if_unreachable, watcher, jobs[0])
            async with anyio.create_task_group() as tg:
                for job_id in jobs:
                    tg.start_soon(_watch_one, watcher, job_id, deadline, renderer, outcomes)
            guard.cancel_scope.cancel()
    _hint_if_none_found(watcher, jobs, outcomes)
    return outcomes.exit_code()


async def _watch_one(
    watcher: Watcher, job_id: str, deadline: float, renderer: Any, outcomes: _Outcomes
) -> None:
    renderer.begin(job_id)
    try:
        with anyio.fail_after(deadline):
            async for event in watcher.watch(job_id):
                renderer.event(event)
                if event.terminal:
                    outcomes.kinds[job_id] = event.kind.value
    except (TimeoutError, WatchTimeout):
        outcomes.kinds[job_id] = "timeout"
        timeout = WatchTimeout(f"no terminal state within {deadline:g} s", job_id=job_id)
        renderer.problem(job_id, _one_line(str(explain_timeout(timeout, watcher))), "timeout")
    except AuthenticationError as exc:
        # The key is refused for every job: one error, not a line per job.
        raise _GiveUp(_without_job(exc, job_id) + _key_origin(watcher, job_id)) from None
    except JobwatchError as exc:
        outcomes.kinds[job_id] = "error"
        outcomes.errors[job_id] = exc
        renderer.problem(job_id, _one_line(_without_job(exc, job_id)), "error")


def _key_origin(watcher: Watcher, job_id: str) -> str:
    """Where the refused key came from, when it was not the file's ``api_key``: the
    provider's message can only point at the file."""
    config = watcher.config
    if config.api_key is None:
        if _sends_a_key_of_its_own(watcher, job_id):
            return ""  # read by the provider itself ([auth] env): its message names it
        return "; [jobwatch] api_key is not set, nor JOBWATCH_API_KEY: set one of them"
    return _key_override(config)


def _key_override(config: Config) -> str:
    """Said of a refused key that JOBWATCH_API_KEY gave, not the file's ``api_key``."""
    if config.api_key is not None and config.api_key.reveal() == os.environ.get("JOBWATCH_API_KEY"):
        return "; the key sent is JOBWATCH_API_KEY's, which overrides [jobwatch] api_key"
    return ""


@contextmanager
def _naming_the_key(config: Config) -> Iterator[None]:
    """A refused key that ended the Watcher is said with where it came from, as ``watch``
    says it of a job."""
    try:
        yield
    except (AuthenticationError, BaseExceptionGroup) as exc:
        error = _first_jobwatch_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        hint = _key_override(config)
        if not isinstance(error, AuthenticationError) or not hint:
            raise
        raise AuthenticationError(
            f"{error}{hint}", status=error.status, code=error.code, request_id=error.request_id
        ) from None


def _sends_a_key_of_its_own(watcher: Watcher, job_id: str) -> bool:
    """Whether the provider sent a key though ``api_key`` is not set (a description's
    ``[auth] env``): the headers that carry a key given as api_key are in its request."""
    probe = "jobwatch-probe-key"

    def sent(provider: Provider) -> dict[str, str]:
        return {**provider.headers(), **provider.status_request(job_id).headers}

    try:
        keyed = type(watcher.provider).from_config(watcher.config.replace(api_key=Secret(probe)))
    except JobwatchError:
        return False
    carrying = {name for name, value in sent(keyed).items() if probe in value}
    return bool(carrying & sent(watcher.provider).keys())


def _without_job(exc: JobwatchError, job_id: str) -> str:
    """The error's message without the job id it begins with (the line names the job)."""
    return str(exc).removeprefix(f"job {job_id}: ")


async def _give_up_if_unreachable(watcher: Watcher, job_id: str) -> None:
    """Raise _GiveUp once UNREACHABLE_AFTER requests in a row got no answer from an API that
    never answered; return as soon as it answers.

    The transports' own requests usually settle it. Where they make none for a while (a
    stream that keeps failing to connect backs off before it falls back to polling), status
    requests for ``job_id`` find out, a second apart.
    """
    api = watcher._api

    def unsettled() -> bool:
        return not api.answered and api.failures_in_a_row < UNREACHABLE_AFTER

    # The counters are the API client's, changed by whichever task makes a request; looking
    # at them ten times a second costs nothing and needs no hook in the client.
    with anyio.move_on_after(PROBE_AFTER):
        while unsettled():  # noqa: ASYNC110
            await anyio.sleep(0.1)
    while unsettled():
        try:
            await api.request(watcher.provider.status_request(job_id))
        except NetworkError:
            await anyio.sleep(1.0)
    if api.answered:
        _end_hold(say=True)
        return
    _end_hold(say=False)
    raise _GiveUp(
        f"the API does not answer: {api.failures_in_a_row} requests in a row got no "
        f"answer, the last: {_one_line(str(api.last_failure))}; check base_url "
        f"({redact_url(api.base_url)}) and the network"
    )


def _hint_if_none_found(watcher: Watcher, jobs: Sequence[str], outcomes: _Outcomes) -> None:
    """Every job "not found", and a base_url with a path: say what base_url may be wrong."""
    if not jobs or not all(isinstance(outcomes.errors.get(j), JobNotFound) for j in jobs):
        return
    base_url = watcher._api.base_url
    base = redact_url(base_url).rstrip("/")
    path = watcher.provider.status_request(jobs[0]).path
    repeated = repeated_prefix(base_url, path)
    if repeated is not None:
        hint = (
            f"base_url {base} ends in {repeated}, which the {watcher.provider.name} "
            f"provider adds itself (requests went to {base}{path}); remove {repeated} "
            "from base_url"
        )
    else:
        # The provider's own base URL may have a path (OpenAI's /v1): one that has it is
        # right, one that lacks it asks for paths the API does not serve.
        default = watcher.provider.default_base_url
        missing = missing_prefix(base_url, default)
        own = urlsplit(base_url).path.strip("/")
        if missing is not None:
            hint = (
                f"no job was found, and base_url {base} lacks {missing}, which the "
                f"{watcher.provider.name} provider's base URL ({redact_url(default or '')}) "
                f"has (requests went to {base}{path}); add {missing} to base_url"
            )
        elif own and own != urlsplit(default or "").path.strip("/"):
            hint = (
                f"no job was found, and base_url {base} has a path (requests went to "
                f"{base}{path}); check that base_url is the API's root"
            )
        else:
            return
    print(f"jobwatch: hint: {hint}", file=sys.stderr, flush=True)


# -- rendering -------------------------------------------------------------------------------


def _renderer(as_json: bool, out: TextIO | None = None, *, raw: bool = False) -> Any:
    stream = out or sys.stdout
    if as_json:
        return _JsonRenderer(stream, raw=raw)
    if stream.isatty():
        try:
            return _RichRenderer(stream)
        except ImportError:
            pass
    return _PlainRenderer(stream)


class _JsonRenderer:
    """NDJSON: one event per line, with the field names of JobEvent; ``data`` (the payload
    as the API sent it, often large) only when ``raw``."""

    def __init__(self, out: TextIO, *, raw: bool = False) -> None:
        self.out = out
        self.raw = raw

    def __enter__(self) -> _JsonRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.flush()

    def begin(self, job_id: str) -> None:
        pass

    def event(self, event: JobEvent) -> None:
        fields = event.to_dict()
        if not self.raw:
            del fields["data"]
        print(json.dumps(fields, separators=(",", ":"), default=str), file=self.out, flush=True)

    def problem(self, job_id: str, message: str, kind: str) -> None:
        print(
            json.dumps({"job_id": job_id, "error": kind, "message": message}),
            file=self.out,
            flush=True,
        )


def _describe(event: JobEvent) -> str:
    parts = [f"{event.job_id or 'workspace'}", event.kind.value]
    if event.completed is not None:
        parts.append(f"{event.completed}/{event.total if event.total is not None else '?'}")
    if event.status is not None:
        parts.append(event.status.value)
    url = event.data.get("url")
    if isinstance(url, str) and event.kind in (EventKind.PAGE, EventKind.PAGE_FAILED):
        parts.append(url)
    if event.error and event.kind in (EventKind.FAILED, EventKind.PAGE_FAILED):
        parts.append(f"error: {_one_line(event.error)}")
    return "  ".join(parts) + f"  (via {event.source})"


class _PlainRenderer(_JsonRenderer):
    """One line per event; a progress event that shows nothing new (the count the job's
    ``started`` line already showed) is left out."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.shown: dict[str | None, tuple[Any, ...]] = {}

    def event(self, event: JobEvent) -> None:
        state = (event.completed, event.total, event.status)
        if event.kind in (EventKind.STARTED, EventKind.PROGRESS):
            if event.kind is EventKind.PROGRESS and self.shown.get(event.job_id) == state:
                return
            self.shown[event.job_id] = state
        print(_describe(event), file=self.out, flush=True)

    def problem(self, job_id: str, message: str, kind: str) -> None:
        print(f"{job_id}  {kind}  {message}", file=self.out, flush=True)


class _RichRenderer:
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.escape = escape  # messages and API text may hold brackets rich would parse
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(file=out),
        )
        self.tasks: dict[str, Any] = {}
        #: Per job, the first count seen and when: the rate counts only what was done since
        #: (a job half done before the watch began is not half done in its first second).
        self.first: dict[str, tuple[int, float]] = {}

    def __enter__(self) -> _RichRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def begin(self, job_id: str) -> None:
        self.tasks[job_id] = self.progress.add_task(job_id, total=None, status="waiting", rate="")

    def event(self, event: JobEvent) -> None:
        task = self.tasks.get(event.job_id or "")
        if task is None:
            return
        fields: dict[str, Any] = {
            "status": event.status.value if event.status else event.kind.value
        }
        if event.total is not None:
            fields["total"] = event.total
        if event.completed is not None:
            fields["completed"] = event.completed
            now = self.progress.get_time()
            count, since = self.first.setdefault(event.job_id or "", (event.completed, now))
            if now > since and event.completed > count:
                fields["rate"] = f"{(event.completed - count) / (now - since):.1f}/s"
        if event.kind is EventKind.PAGE_FAILED:
            self.progress.console.print(f"[yellow]{self.escape(_describe(event))}[/yellow]")
        elif event.kind is EventKind.FAILED and event.error:
            self.progress.console.print(
                f"[red]{self.escape(f'{event.job_id}: failed: {_one_line(event.error)}')}[/red]"
            )
        self.progress.update(task, **fields)

    def problem(self, job_id: str, message: str, kind: str) -> None:
        task = self.tasks.get(job_id)
        if task is not None:
            self.progress.update(task, status=kind)
        self.progress.console.print(f"[red]{self.escape(f'{job_id}: {message}')}[/red]")


# -- listen ----------------------------------------------------------------------------------


def _listen_command(args: argparse.Namespace) -> int:
    config, environ = _load(args)
    names = config.transports or ("webhook",)
    if "webhook" not in names:
        names = ("webhook", *names)
    config = config.replace(transport=names)
    if args.listen is not None:
        from .transports.webhook import parse_listen

        parse_listen(args.listen, "--listen")  # named as the flag it came from, not the file
    as_loaded = config  # where the address came from, before the default fills it in
    listen = args.listen or config.table("webhook").get("listen") or "127.0.0.1:8787"
    config = config.with_table("webhook", listen=listen)
    if args.certfile or args.keyfile:
        _check_tls_flags(args.certfile, args.keyfile)
        config = config.with_table("webhook", certfile=args.certfile, keyfile=args.keyfile)
    renderer = _renderer(args.json, raw=args.raw)
    with _naming_address(args.listen, as_loaded, "webhook"):
        anyio.run(_listen, config, renderer, environ, backend=args.backend)
    return EXIT_OK


@contextmanager
def _naming_address(flag: str | None, config: Config, table: str) -> Iterator[None]:
    """An address that cannot be listened on is said with where it came from, so that the
    user knows what to change."""
    try:
        yield
    except (ConfigError, BaseExceptionGroup) as exc:
        error = _first_jobwatch_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if not (isinstance(error, ConfigError) and str(error).startswith("cannot listen on ")):
            raise
        if flag is not None:
            where = "the address of --listen"
        elif config.table(table).get("listen") and config.source is not None:
            where = f"the address of [jobwatch.{table}] listen in {config.source}"
        else:
            where = (
                f"the default address: --listen HOST:PORT or [jobwatch.{table}] listen sets another"
            )
        raise ConfigError(f"{error} ({where})") from None


def _check_tls_flags(certfile: str | None, keyfile: str | None) -> None:
    """The flags' certificate and key, checked as the flags (the receiver would name the
    configuration file's [jobwatch.webhook], which may not mention them)."""
    from .transports._serve import check_tls

    if not (certfile and keyfile):
        raise ConfigError("--certfile and --keyfile go together: give both, or neither")
    try:
        check_tls(certfile, keyfile)
    except ConfigError as exc:
        raise ConfigError(f"--certfile/--keyfile: {exc}") from None


async def _listen(
    config: Config,
    renderer: Any,
    environ: Mapping[str, str] | None = None,
    *,
    task_status: Any = None,
) -> None:
    """Serve until SIGTERM or SIGINT (what systemd, Kubernetes and Ctrl-C send): then stop
    accepting, let deliveries in flight finish, close the store (a Redis lease is given
    back), and return."""
    from .transports._serve import stop_on_signal

    watcher = Watcher(config, environ=environ)
    closed = anyio.Event()

    async def show(event: JobEvent) -> None:
        # The Watcher would take the closed pipe for a failing callback (retried, then a
        # dead letter) and go on serving a reader that is gone: it stops listen instead.
        # The event no one read is not handled: it waits here until listen stops, and stays
        # in the store's inbox for the next listen (so do those queued behind it).
        try:
            renderer.event(event)
        except BrokenPipeError:
            closed.set()
            await anyio.sleep_forever()

    async def stop_when_closed(scope: anyio.CancelScope) -> None:
        await closed.wait()
        scope.cancel()

    watcher.subscribe(show)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            doing = "stopping after the deliveries in flight"
            tg.start_soon(stop_on_signal, signals, tg.cancel_scope, doing)
            tg.start_soon(stop_when_closed, tg.cancel_scope)
            async with watcher:
                url = watcher.bound_url("webhook")
                print(f"listening on {url}", flush=True)
                if task_status is not None:
                    task_status.started(url)
                await anyio.sleep_forever()
    if closed.is_set():
        raise BrokenPipeError("standard output was closed by its reader")


# -- dashboard -------------------------------------------------------------------------------


def _dashboard_command(args: argparse.Namespace) -> int:
    from ._dashboard import serve_dashboard

    config, environ = _load(args)
    with _naming_address(args.listen, config, "dashboard"), _naming_the_key(config):
        anyio.run(serve_dashboard, config, args.listen, environ, backend=args.backend)
    return EXIT_OK


# -- doctor ----------------------------------------------------------------------------------


def _doctor_command(args: argparse.Namespace) -> int:
    from ._doctor import doctor

    config, environ = _load(args, check_file=False)
    return trio.run(lambda: doctor(config, sys.stdout, environ=environ))


def _inbox_command(args: argparse.Namespace) -> int:
    from ._inbox import inbox

    config = load_config(getattr(args, "config", None))
    trio.run(
        lambda: inbox(
            config,
            args.action,
            getattr(args, "key", None),
            as_json=getattr(args, "json", False),
            out=sys.stdout,
        )
    )
    return EXIT_OK


def _providers_command(args: argparse.Namespace) -> int:
    from .providers._catalog import describe, listing

    if args.name is None:
        print("\n".join(listing()))
    else:
        sys.stdout.write(describe(args.name))
    return EXIT_OK


# -- demo ----------------------------------------------------------------------------


def _demo_command(args: argparse.Namespace) -> int:
    from ._demo import demo

    if args.transport is not None:
        # Said before the simulator starts, and named as the flag it came from.
        where = f"--transport {args.transport!r}"
        if len(_transports(args.transport, where)) > 1:
            raise ConfigError(
                f"{where}: the demo watches with one transport; --compare watches one job "
                "with poll, sse and webhook at once"
            )
    return trio.run(
        _interruptible,
        demo,
        args.transport,
        args.compare,
        args.pages,
        args.time_scale,
        sys.stdout,
        args.provider,
    )


async def _interruptible(run: Callable[..., Any], *args: Any) -> int:
    """``await run(*args)``, whose exit code it returns, or 130 after Ctrl-C. The signal
    cancels it: a KeyboardInterrupt raised wherever it landed could leave tasks half
    started, whose coroutines Python then warns about on the way out."""
    code = 130
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def run_then_stop() -> None:
                nonlocal code
                code = await run(*args)
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_then_stop)
            async for _ in signals:
                print("jobwatch: interrupted", file=sys.stderr, flush=True)
                nursery.cancel_scope.cancel()
                break
    return code
