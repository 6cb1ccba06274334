"""Serving the simulator: `serve`, `running` and the ``jobwatch sim`` entry point `main`."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import anyio.abc
import trio

from .._errors import ConfigError, leaves
from ..transports._serve import serve_app
from ._engine import TIERS
from ._faults import Faults
from ._simulator import Simulator

__all__ = ["main", "running", "serve"]


async def serve(
    simulator: Simulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `simulator` over HTTP on `host`:`port` until cancelled.

    Runs hypercorn (its trio or asyncio flavour, whichever loop is running) and the
    simulator's clock. Reports ``http://HOST:PORT`` through `task_status` once the socket
    listens; with ``port=0`` that is the port the system chose.
    """
    async with anyio.create_task_group() as tg:
        await tg.start(simulator.run)
        url = await tg.start(partial(serve_asgi, simulator.app, host=host, port=port))
        task_status.started(url)


async def serve_asgi(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve any ASGI `app` with hypercorn until cancelled; report ``http://HOST:PORT``."""
    await serve_app(app, host, port, task_status=task_status)


@asynccontextmanager
async def running(
    simulator: Simulator, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve `simulator` for the duration of the block; yield its base URL::

    async with running(Simulator(time_scale=100)) as url:
        ...  # e.g. httpx.AsyncClient(base_url=url, headers={"x-api-key": "rdr_sim"})
    """
    async with anyio.create_task_group() as tg:
        url = await tg.start(partial(serve, simulator, host=host, port=port))
        try:
            yield url
        finally:
            tg.cancel_scope.cancel()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobwatch sim", description="Run the local Reader API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 = any free port")
    parser.add_argument("--api-key", default="rdr_sim", help="the accepted key (default rdr_sim)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--tier", default="pro", choices=list(TIERS), help="plan (default pro)")
    parser.add_argument(
        "--faults",
        default="",
        type=_faults,
        help="fault spec, e.g. 'drop_sse_after=5,webhook_dup_p=0.3' (see docs/simulator.md)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second (default 1)",
    )
    parser.add_argument(
        "--page-interval",
        type=float,
        default=0.5,
        help="mean simulated seconds per page (default 0.5)",
    )
    parser.add_argument(
        "--page-failure-p",
        type=float,
        default=0.0,
        help="probability that a page fails (default 0)",
    )
    parser.add_argument(
        "--job-failure-p",
        type=float,
        default=0.0,
        help="probability that a whole job fails (default 0)",
    )
    return parser


def _faults(spec: str) -> Faults:
    try:
        return Faults.parse(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """``jobwatch sim``: serve a simulator until Ctrl-C or SIGTERM; print ``listening on URL``
    first."""
    args = _parser().parse_args(argv)
    try:
        simulator = Simulator(
            api_key=args.api_key,
            seed=args.seed,
            tier=args.tier,
            faults=args.faults,
            time_scale=args.time_scale,
            page_interval=args.page_interval,
            page_failure_p=args.page_failure_p,
            job_failure_p=args.job_failure_p,
        )
    except ValueError as exc:
        print(f"jobwatch sim: error: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_main, simulator, args.host, args.port)
    except BaseException as exc:  # noqa: B036 - Ctrl-C arrives wrapped in exception groups
        return _exit_code(exc, args.host, args.port)
    return 0


def _exit_code(exc: BaseException, host: str, port: int) -> int:
    errors = leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in errors):
        # Ctrl-C decides; a connection reset while serving stops with it is no failure.
        return 0
    # An address that cannot be bound is a usage error (exit 2), as for `jobwatch listen`: the
    # server says why, and what to do.
    refused = [leaf for leaf in errors if isinstance(leaf, ConfigError)]
    if refused:
        print(f"jobwatch sim: error: {refused[0]} (--host {host} --port {port})", file=sys.stderr)
        return 2
    raise exc


async def _main(simulator: Simulator, host: str, port: int) -> None:
    # Ctrl-C and SIGTERM arrive as messages, not as a KeyboardInterrupt raised inside whatever
    # task runs (a connection's, deep in the server): the server then stops as it would when
    # cancelled.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with running(simulator, host=host, port=port) as url:
            print(f"listening on {url}", flush=True)
            async for _ in signals:
                return
