"""Decode cost of the generic provider beside the hand-written Reader provider.

The generic provider is given a description of Reader's own wire format (below), so both
decode the same bytes into the same events: a status response (``GET /v1/jobs/{id}``: the
success envelope, counts, timestamps, one result page) and a frame of the job's stream
(``event: progress``). Each round times every provider on the same payloads, in turns, so
that a busy machine slows them alike: the figures are the median round's cost per decode and
the fastest round's, and the ratio generic / Reader of each round, their median (and that of
the fastest rounds).

A third row decodes with the generic provider whose paths all go through JMESPath's tree
interpreter (the fast path for plain field chains turned off), to show what that path buys.

    python bench/bench_providers.py [--rounds 30] [--calls 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import attrs

import jobwatch
from jobwatch.abc import Provider, Response
from jobwatch.providers import _paths
from jobwatch.providers.generic import GenericProvider
from jobwatch.providers.reader import ReaderProvider

#: Reader's API, described for the generic provider.
READER = {
    "api": "Reader",
    "base_url": "https://api.reader.dev",
    "auth": {"style": "header", "header": "x-api-key"},
    "job": {
        "get": "GET /v1/jobs/{id}?limit=1",
        "root": "data",
        "error": "error",
        "started_at": "startedAt",
        "ended_at": "completedAt",
    },
    "status": {
        "path": "status",
        "map": {
            word: word for word in ("queued", "processing", "completed", "failed", "cancelled")
        },
    },
    "progress": {"kind": "counts", "done": "completed", "total": "total"},
    "stream": {
        "url": "GET /v1/jobs/{id}/stream",
        "events": {
            "progress": "status",
            "done": "status",
            "page": {"kind": "page", "id": "url"},
            "error": {"kind": "page_failed", "id": "url", "error": "error"},
        },
    },
}
JOB = "job_9fba2"
VARIANTS = 64  # distinct payloads, each with its own count, cycled through


def _status_bodies() -> list[Response]:
    bodies = []
    for n in range(VARIANTS):
        data = {
            "id": JOB,
            "status": "processing",
            "mode": "batch",
            "completed": n,
            "total": 100,
            "creditsUsed": n,
            "error": None,
            "results": [
                {
                    "url": f"https://example.com/page-{n}",
                    "markdown": "# Page\n" * 8,
                    "proxyMode": "standard",
                    "credits": 1,
                    "metadata": {"duration": 410, "statusCode": 200},
                }
            ],
            "startedAt": "2026-04-04T12:00:00Z",
            "completedAt": None,
            "createdAt": "2026-04-04T11:59:58Z",
        }
        body = {
            "success": True,
            "data": data,
            "pagination": {"total": 100, "skip": 0, "limit": 1, "hasMore": True},
        }
        bodies.append(Response(status=200, body=json.dumps(body).encode()))
    return bodies


def _frames() -> list[str]:
    return [
        json.dumps({"status": "processing", "completed": n, "total": 100}) for n in range(VARIANTS)
    ]


def _interpreted(provider: GenericProvider) -> GenericProvider:
    """The same provider with every path read by JMESPath's interpreter (no fast path)."""

    def slow(path: _paths.Path) -> _paths.Path:
        import jmespath

        return attrs.evolve(path, get=_paths._searcher(jmespath.compile(path.text)))

    d = provider.description
    job = attrs.evolve(
        d.job,
        root=slow(d.job.root) if d.job.root else None,
        error=tuple(slow(p) for p in d.job.error),
        started_at=slow(d.job.started_at) if d.job.started_at else None,
        ended_at=slow(d.job.ended_at) if d.job.ended_at else None,
    )
    status = attrs.evolve(d.status, path=slow(d.status.path) if d.status.path else None)
    progress = attrs.evolve(
        d.progress,
        done=tuple(slow(p) for p in d.progress.done),
        total=tuple(slow(p) for p in d.progress.total),
    )
    slow_provider = GenericProvider(attrs.evolve(d, job=job, status=status, progress=progress))
    slow_provider._status_field = slow_provider._count_fields = None  # no dict lookups either
    return slow_provider


def _per_call(run: Callable[[], None], calls: int) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / calls * 1e6


def _status_loop(provider: Provider, bodies: list[Response], calls: int) -> Callable[[], None]:
    def run() -> None:
        decode, previous = provider.decode_status, None
        for i in range(calls):
            previous, _ = decode(JOB, bodies[i % VARIANTS], previous, source="poll")

    return run


def _frame_loop(provider: Provider, frames: list[str], calls: int) -> Callable[[], None]:
    def run() -> None:
        decode = provider.decode_stream_event
        for i in range(calls):
            decode(JOB, "progress", frames[i % VARIANTS], source="sse")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"provider": "generic", "api_key": "k", "generic": READER}}, environ={}
    )
    generic = GenericProvider.from_config(config)
    providers: dict[str, Provider] = {
        "reader (hand-written)": ReaderProvider(config),
        "generic, Reader described": generic,
        "generic, JMESPath interpreter only": _interpreted(generic),
    }
    bodies, frames = _status_bodies(), _frames()
    _check_same_events(providers, bodies, frames)
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, provider in providers.items():
            for what, loop in (
                ("status", _status_loop(provider, bodies, args.calls)),
                ("frame", _frame_loop(provider, frames, args.calls)),
            ):
                results.setdefault((name, what), []).append(_per_call(loop, args.calls))
    _report(providers, results, args)


def _check_same_events(
    providers: dict[str, Provider], bodies: list[Response], frames: list[str]
) -> None:
    """Every provider makes the same events of the same payloads (else the race is unfair)."""

    def seen(provider: Provider) -> Any:
        polled = [
            e.to_dict()
            for b in bodies[:3]
            for e in provider.decode_status(JOB, b, None, source="poll")[1]
        ]
        streamed = [
            e.to_dict()
            for f in frames[:3]
            for e in provider.decode_stream_event(JOB, "progress", f, source="sse")
        ]
        for event in polled + streamed:
            event.pop("data")
        return polled, streamed

    first, *others = (seen(p) for p in providers.values())
    if any(other != first for other in others):
        raise SystemExit("the providers disagree about the events of the same payloads")


def _report(
    providers: dict[str, Provider],
    results: dict[tuple[str, str], list[float]],
    args: argparse.Namespace,
) -> None:
    base = next(iter(providers))
    print(
        f"decode cost, µs per call, over {args.rounds} rounds of {args.calls:,} calls: the "
        "median round (the fastest); ratio to Reader: the median of the rounds' ratios "
        "(of the fastest rounds)\n"
    )
    print(f"{'provider':<36} {'status response':>27} {'stream frame':>27}")
    for name in providers:
        cells = []
        for what in ("status", "frame"):
            ours, theirs = results[name, what], results[base, what]
            ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
            cells.append(
                f"{statistics.median(ours):5.2f} ({min(ours):4.2f}) "
                f"{ratio:4.2f}× ({min(ours) / min(theirs):4.2f}×)"
            )
        print(f"{name:<36} {cells[0]:>27} {cells[1]:>27}")


if __name__ == "__main__":
    main()
