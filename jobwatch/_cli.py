"""The ``jobwatch`` command: watch, listen, doctor, sim and demo (DESIGN §7)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import anyio
import trio

from ._config import Config, load_config
from ._errors import ConfigError, JobwatchError, PluginError, WatchTimeout, leaves
from ._events import EventKind, JobEvent
from ._policy import split_transports
from ._watcher import DEFAULT_TIMEOUT, Watcher

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_TIMEOUT = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobwatch", description="Watch long-running jobs of web APIs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    watch = sub.add_parser("watch", help="watch jobs until they finish")
    watch.add_argument("jobs", nargs="+", metavar="JOB_ID")
    _common(watch)
    watch.add_argument("--transport", help="poll, sse, webhook or a comma-separated list")
    watch.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT,
                       help="seconds to wait for each job (default 3600)")

    listen = sub.add_parser("listen", help="run the webhook receiver and print each event")
    _common(listen)
    listen.add_argument("--listen", metavar="HOST:PORT",
                        help="address to serve on (default: [jobwatch.webhook] listen, "
                             "else 127.0.0.1:8787)")
    listen.add_argument("--certfile", help="TLS certificate (PEM)")
    listen.add_argument("--keyfile", help="TLS private key (PEM)")

    doctor = sub.add_parser("doctor", help="show configuration, environment and policy")
    doctor.add_argument("--config", metavar="F", help="configuration file")

    sub.add_parser("sim", help="run the local Reader simulator (jobwatch sim --help)")

    demo = sub.add_parser("demo", help="watch a job on the built-in simulator (no account)")
    group = demo.add_mutually_exclusive_group()
    group.add_argument("--transport", help="poll, sse or webhook (default: the policy's choice)")
    group.add_argument("--compare", action="store_true",
                       help="watch one job with every transport at once and compare them")
    demo.add_argument("--pages", type=_positive(int), default=50, help="pages in the demo job")
    demo.add_argument("--time-scale", type=_positive(float), default=5.0,
                      help="simulated seconds per real second")
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


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="F", help="configuration file")
    parser.add_argument("--json", action="store_true", help="print one JSON object per event")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = [a for a in argv[:2] if a != "--debug"][:1]
    if command == ["sim"]:
        # The simulator has its own options and --help; hand it the rest untouched.
        from .sim import main as sim_main

        return sim_main(argv[argv.index("sim") + 1:])
    args = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "watch": _watch_command, "listen": _listen_command, "doctor": _doctor_command,
        "demo": _demo_command,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("jobwatch: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, PluginError) as exc:
        return _fail(args, exc, EXIT_USAGE)
    except JobwatchError as exc:
        return _fail(args, exc, EXIT_FAILED)
    except BaseExceptionGroup as group:
        inner = _first_jobwatch_error(group)
        if inner is None:
            raise
        code = EXIT_USAGE if isinstance(inner, ConfigError | PluginError) else EXIT_FAILED
        return _fail(args, inner, code)


def _first_jobwatch_error(group: BaseExceptionGroup) -> JobwatchError | None:
    return next((e for e in leaves(group) if isinstance(e, JobwatchError)), None)


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    if args.debug:
        raise exc
    print(f"jobwatch: error: {exc}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace, transport: str | None = None) -> Config:
    config = load_config(args.config)
    if transport is not None:
        names = split_transports(transport, f"--transport {transport!r}")
        config = config.replace(transport=names[0] if len(names) == 1 else names)
    return config


# -- watch -----------------------------------------------------------------------------------


class _Outcomes:
    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}

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
    config = _load(args, args.transport)
    return trio.run(_watch, config, args.jobs, args.timeout, _renderer(args.json))


async def _watch(config: Config, jobs: list[str], deadline: float, renderer: Any,
                 watcher: Watcher | None = None) -> int:
    """Watch ``jobs``; returns the exit code. ``watcher``: one already running, else one is
    made from ``config`` for the duration."""
    if watcher is None:
        async with Watcher(config) as running:
            return await _watch(config, jobs, deadline, renderer, running)
    outcomes = _Outcomes()
    with renderer:
        async with anyio.create_task_group() as tg:
            for job_id in jobs:
                tg.start_soon(_watch_one, watcher, job_id, deadline, renderer, outcomes)
    return outcomes.exit_code()


async def _watch_one(watcher: Watcher, job_id: str, deadline: float, renderer: Any,
                     outcomes: _Outcomes) -> None:
    renderer.begin(job_id)
    try:
        with anyio.fail_after(deadline):
            async for event in watcher.watch(job_id):
                renderer.event(event)
                if event.terminal:
                    outcomes.kinds[job_id] = event.kind.value
    except (TimeoutError, WatchTimeout):
        outcomes.kinds[job_id] = "timeout"
        renderer.problem(job_id, f"no terminal state within {deadline:g} s", "timeout")
    except JobwatchError as exc:
        outcomes.kinds[job_id] = "error"
        renderer.problem(job_id, str(exc), "error")


def _renderer(as_json: bool, out: TextIO | None = None) -> Any:
    stream = out or sys.stdout
    if as_json:
        return _JsonRenderer(stream)
    if stream.isatty():
        try:
            return _RichRenderer(stream)
        except ImportError:
            pass
    return _PlainRenderer(stream)


class _JsonRenderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __enter__(self) -> _JsonRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.flush()

    def begin(self, job_id: str) -> None:
        pass

    def event(self, event: JobEvent) -> None:
        print(event.to_json(), file=self.out, flush=True)

    def problem(self, job_id: str, message: str, kind: str) -> None:
        print(json.dumps({"job_id": job_id, "error": kind, "message": message}),
              file=self.out, flush=True)


def _describe(event: JobEvent) -> str:
    parts = [f"{event.job_id or 'workspace'}", event.kind.value]
    if event.completed is not None:
        parts.append(f"{event.completed}/{event.total if event.total is not None else '?'}")
    if event.status is not None:
        parts.append(event.status.value)
    url = event.data.get("url")
    if isinstance(url, str) and event.kind in (EventKind.PAGE, EventKind.PAGE_FAILED):
        parts.append(url)
    return "  ".join(parts) + f"  (via {event.source})"


class _PlainRenderer(_JsonRenderer):
    def event(self, event: JobEvent) -> None:
        print(_describe(event), file=self.out, flush=True)

    def problem(self, job_id: str, message: str, kind: str) -> None:
        print(f"{job_id}  {kind}  {message}", file=self.out, flush=True)


class _RichRenderer:
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=Console(file=out),
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def begin(self, job_id: str) -> None:
        self.tasks[job_id] = self.progress.add_task(job_id, total=None, status="waiting",
                                                    rate="")

    def event(self, event: JobEvent) -> None:
        task = self.tasks.get(event.job_id or "")
        if task is None:
            return
        fields: dict[str, Any] = {"status": event.status.value if event.status else
                                  event.kind.value}
        if event.total is not None:
            fields["total"] = event.total
        if event.completed is not None:
            fields["completed"] = event.completed
            elapsed = self.progress.tasks[task].elapsed or 0.0
            if elapsed > 0:
                fields["rate"] = f"{event.completed / elapsed:.1f} pages/s"
        if event.kind is EventKind.PAGE_FAILED:
            self.progress.console.print(f"[yellow]{_describe(event)}[/yellow]")
        self.progress.update(task, **fields)

    def problem(self, job_id: str, message: str, kind: str) -> None:
        task = self.tasks.get(job_id)
        if task is not None:
            self.progress.update(task, status=kind)
        self.progress.console.print(f"[red]{job_id}: {message}[/red]")


# -- listen ----------------------------------------------------------------------------------


def _listen_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    names = config.transports or ("webhook",)
    if "webhook" not in names:
        names = ("webhook", *names)
    config = config.replace(transport=names)
    if args.listen is not None:
        from .transports.webhook import parse_listen

        parse_listen(args.listen, "--listen")  # named as the flag it came from, not the file
    listen = args.listen or config.table("webhook").get("listen") or "127.0.0.1:8787"
    config = config.with_table("webhook", listen=listen)
    if args.certfile or args.keyfile:
        config = config.with_table("webhook", certfile=args.certfile, keyfile=args.keyfile)
    renderer = _renderer(args.json)
    trio.run(_listen, config, renderer)
    return EXIT_OK


async def _listen(config: Config, renderer: Any, *, task_status: Any = None) -> None:
    watcher = Watcher(config)
    watcher.subscribe(renderer.event)
    async with watcher:
        url = watcher.bound_url("webhook")
        print(f"listening on {url}", flush=True)
        if task_status is not None:
            task_status.started(url)
        await anyio.sleep_forever()


# -- doctor ----------------------------------------------------------------------------------


def _doctor_command(args: argparse.Namespace) -> int:
    from ._doctor import doctor

    config = load_config(args.config)
    return trio.run(doctor, config, sys.stdout)


# -- demo ----------------------------------------------------------------------------


def _demo_command(args: argparse.Namespace) -> int:
    from ._demo import demo

    return trio.run(demo, args.transport, args.compare, args.pages, args.time_scale, sys.stdout)
