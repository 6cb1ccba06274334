"""Benchmark: jobwatch's poll transport beside the official SDK's ``wait_for_job``.

Each scenario runs both clients in one run, in real time, on loopback, each against its own
Reader simulator: the two simulators have the same seed and get the same jobs at the same
moment, so both clients watch identical timelines, and each simulator's request counters and
rate limit see one client only.

(a) 10 jobs of 10 s to 2 min, enterprise tier (no client is rate-limited): requests per client
    and the delay from a job's completion to the client noticing it.
(b) 50 jobs under the Pro tier's 60 requests a minute: 429s, requests, completions reported,
    delays. (The jobs are created directly in the simulators, past the Pro tier's cap of 10
    active jobs, so that 50 run at once.)
(c) 6 short jobs of 4 s to 16 s, enterprise tier, the SDK polling every second
    (``wait_for_job(poll_interval=1)``): the case where a fixed fast poll is hardest to beat.

Run::

    python bench/bench_poll.py                  # every scenario, about 5 minutes
    python bench/bench_poll.py --scenario a --time-scale 4
    python bench/bench_poll.py --scenario c --repeat 2

``--time-scale X`` runs the simulators X times faster and scales both clients with them: the
SDK's 2 s interval becomes 2/X real seconds, jobwatch's intervals shrink by X and its ``rpm``
grows by X (the simulator's 60 s window is 60/X real seconds). Loopback latency does not
scale, so X = 1 is the fair default.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio
import attrs
import trio

import jobwatch
from jobwatch.sim import Simulator, serve
from jobwatch.stores.memory import MemoryStore
from jobwatch.transports.poll import PollOptions, PollTransport

PAGE_INTERVAL = 0.5
SEED = 2024


class StatusCounter:
    """ASGI middleware counting the simulator's answers by status (429s, say)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                with self._lock:
                    self.statuses[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counted)


@attrs.frozen(kw_only=True)
class Outcome:
    name: str
    requests: int
    results_requests: int
    status_429: int
    reported: int
    jobs: int
    delays: tuple[float, ...]

    def line(self) -> str:
        mean = statistics.mean(self.delays) if self.delays else math.nan
        p95 = sorted(self.delays)[int(0.95 * (len(self.delays) - 1))] if self.delays else math.nan
        worst = max(self.delays, default=math.nan)
        return (
            f"{self.name:<10} requests {self.requests:>5} (status polls "
            f"{self.requests - self.results_requests:>5})  429s {self.status_429:>4}  "
            f"reported {self.reported:>2}/{self.jobs}  delay mean {mean:5.2f} s  "
            f"p95 {p95:5.2f} s  max {worst:5.2f} s"
        )


def durations(
    n: int, rng: random.Random, shortest: float = 10.0, longest: float = 120.0
) -> list[float]:
    """Job lengths from ``shortest`` to ``longest`` seconds: evenly spread for up to 10 jobs, at
    random for more."""
    if n <= 10:
        lengths = [shortest + (longest - shortest) * k / max(1, n - 1) for k in range(n)]
        rng.shuffle(lengths)
        return lengths
    return [rng.uniform(shortest, longest) for _ in range(n)]


def sim_seconds(iso: str, epoch: float) -> float:
    """Simulated seconds of a timestamp of simulators whose time zero is ``epoch``."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - epoch


async def scenario(
    name: str,
    tier: str,
    rpm: int,
    n_jobs: int,
    scale: float,
    lengths_range: tuple[float, float] = (10.0, 120.0),
    sdk_interval: float = 2.0,
    seed: int = SEED,
) -> tuple[Outcome, Outcome]:
    rng = random.Random(seed)
    lengths = durations(n_jobs, rng, *lengths_range)
    # Time zero is now, on the wall clock, as for a real API: its times (a job's startedAt)
    # are the client's.
    epoch = time.time()
    sims = {
        who: Simulator(
            seed=seed, tier=tier, time_scale=scale, epoch=epoch, page_interval=PAGE_INTERVAL
        )
        for who in ("sdk", "jobwatch")
    }
    counters = {}
    for who, sim in sims.items():
        counters[who] = StatusCounter(sim.app)
        sim.app = counters[who]  # served in place of the bare app
    print(
        f"\n== scenario {name}: {n_jobs} jobs of {min(lengths):.0f}-{max(lengths):.0f} s, "
        f"tier {tier} ({rpm} rpm), time scale {scale:g}, SDK interval {sdk_interval:g} s"
    )
    async with anyio.create_task_group() as tg:
        urls = {who: await tg.start(serve, sim) for who, sim in sims.items()}
        # Real time (perf_counter) of each simulator's time zero.
        zero = {who: time.perf_counter() - sim.now() / scale for who, sim in sims.items()}
        jobs = {
            who: [
                sim.create_job(
                    urls=[
                        f"https://example.com/{n}/{k}"
                        for k in range(max(1, round(d / PAGE_INTERVAL)))
                    ]
                )
                for n, d in enumerate(lengths)
            ]
            for who, sim in sims.items()
        }
        assert jobs["sdk"] == jobs["jobwatch"]
        seen: dict[str, dict[str, float]] = {"sdk": {}, "jobwatch": {}}
        async with anyio.create_task_group() as clients:
            clients.start_soon(run_sdk, urls["sdk"], jobs["sdk"], scale, seen["sdk"], sdk_interval)
            clients.start_soon(
                run_jobwatch, urls["jobwatch"], jobs["jobwatch"], scale, rpm, seen["jobwatch"]
            )
        tg.cancel_scope.cancel()
    sdk, ours = (
        report(who, sims[who], counters[who], jobs[who], seen[who], zero[who], scale, epoch)
        for who in ("sdk", "jobwatch")
    )
    mean = statistics.mean
    print(
        f"jobwatch/sdk: requests {ours.requests / sdk.requests:.2f}x, mean delay "
        f"{mean(ours.delays) - mean(sdk.delays):+.2f} s"
    )
    return sdk, ours


def report(
    who: str,
    sim: Simulator,
    counter: StatusCounter,
    jobs: list[str],
    seen: dict[str, float],
    zero: float,
    scale: float,
    epoch: float,
) -> Outcome:
    delays = []
    results = 0
    for job_id in jobs:
        detail = sim.job(job_id)
        if job_id in seen and detail["completedAt"]:
            ended = zero + sim_seconds(detail["completedAt"], epoch) / scale
            delays.append((seen[job_id] - ended) * scale)  # in simulated seconds
        if who == "sdk" and job_id in seen:  # wait_for_job then fetched every result page
            results += max(1, math.ceil(len(detail["results"]) / 100))
    outcome = Outcome(
        name=who,
        requests=sim.request_counts().total,
        results_requests=results if who == "sdk" else 0,
        status_429=counter.statuses[429],
        reported=len(seen),
        jobs=len(jobs),
        delays=tuple(delays),
    )
    print(outcome.line())
    return outcome


async def run_sdk(
    url: str, jobs: list[str], scale: float, seen: dict[str, float], interval: float = 2.0
) -> None:
    import reader_py

    def wait(job_id: str) -> None:
        client = reader_py.ReaderClient(api_key="rdr_sim", base_url=url)
        try:
            # reader-py annotates poll_interval as int; it sleeps any number of seconds.
            client.wait_for_job(
                job_id,
                poll_interval=interval / scale,  # type: ignore[arg-type]
                timeout=900,
            )
            seen[job_id] = time.perf_counter()
        except Exception as exc:  # the SDK gives up (429s after its retries, ...)
            print(f"   sdk: job {job_id}: {type(exc).__name__}: {exc}")

    limiter = anyio.CapacityLimiter(len(jobs))
    async with anyio.create_task_group() as tg:
        for job_id in jobs:
            tg.start_soon(_in_thread, wait, job_id, limiter)


async def _in_thread(
    fn: Callable[[str], None], job_id: str, limiter: anyio.CapacityLimiter
) -> None:
    await anyio.to_thread.run_sync(fn, job_id, limiter=limiter)


async def run_jobwatch(
    url: str, jobs: list[str], scale: float, rpm: int, seen: dict[str, float]
) -> None:
    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "rdr_sim",
                "base_url": url,
                "transport": "poll",
                "store": "memory",
                "poll": {
                    "interval": 2.0 / scale,
                    "max_interval": 30.0 / scale,
                    "rpm": int(rpm * scale),
                },
            }
        }
    )
    transport = PollTransport(config.options("poll", PollOptions))
    async with jobwatch.Watcher(config, transports=[transport], store=MemoryStore()) as w:
        await anyio.sleep(0.01)  # let start-up finish before the jobs are watched

        async def one(job_id: str) -> None:
            try:
                await w.wait(job_id, timeout=900)
                seen[job_id] = time.perf_counter()
            except jobwatch.JobwatchError as exc:
                print(f"   jobwatch: job {job_id}: {exc}")

        async with anyio.create_task_group() as tg:
            for job_id in jobs:
                tg.start_soon(one, job_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=("a", "b", "c", "all"), default="all")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each scenario (another seed each: other job timelines)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    for run in range(args.repeat):
        seed = SEED + run
        if args.scenario in ("a", "all"):
            trio.run(
                scenario, "a", "enterprise", 1000, 10, args.time_scale, (10.0, 120.0), 2.0, seed
            )
        if args.scenario in ("b", "all"):
            trio.run(scenario, "b", "pro", 60, 50, args.time_scale, (10.0, 120.0), 2.0, seed)
        if args.scenario in ("c", "all"):
            trio.run(scenario, "c", "enterprise", 1000, 6, args.time_scale, (4.0, 16.0), 1.0, seed)
    print(f"\n(wall time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
