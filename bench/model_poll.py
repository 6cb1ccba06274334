"""Model of ``bench_poll.py``'s polling scenarios in virtual time: no sleeping, no network.

The jobs are the simulator's own: its engine (same seed, same jobs as the bench creates) gives
each job's start, page and completion times. Against each job timeline two clients are
replayed: reader-py's ``wait_for_job`` (a status poll, then ``interval`` seconds of sleep,
until the job is done, then one results request) and jobwatch's :class:`PollSchedule`, driven
with ``now`` values as the poll transport drives it (at most ``MAX_IN_FLIGHT`` polls at once,
each answered ``--latency`` seconds after it is sent, the server reading the job halfway).
When each client begins is drawn as measured in the bench on a busy machine: the Watcher
watches the jobs 0.15-0.57 s after they are created, and each SDK thread begins somewhere in
its first interval.

Each seed is one bench run: per run, the request ratio (jobwatch / SDK) and the difference of
the mean detection delays (jobwatch - SDK), their distribution over the seeds, and the share
of runs meeting the scenario's bounds. Run::

    python bench/model_poll.py                       # scenario c, 1000 seeds, about 10 s
    python bench/model_poll.py --scenario a --seeds 200
    python bench/model_poll.py --sdk-phase start     # SDK polls start with the jobs
    python bench/model_poll.py --added 0 0.05        # jobwatch watches them at once
    python bench/model_poll.py --show 2024 2025      # the bench's seeds, job by job
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import random
import statistics
import time
from collections.abc import Sequence

import attrs
from bench_poll import PAGE_INTERVAL, durations

from jobwatch import JobStatus
from jobwatch.abc import Snapshot
from jobwatch.sim._engine import TIERS, Engine
from jobwatch.transports._schedule import PollSchedule
from jobwatch.transports.poll import MAX_IN_FLIGHT


@attrs.frozen(kw_only=True)
class Scenario:
    """One of bench_poll.py's scenarios without a rate limit: jobs and the SDK's interval,
    and the bounds a run must meet (requests ratio at most, mean delay difference at most)."""

    jobs: int
    lengths: tuple[float, float]
    sdk_interval: float
    max_ratio: float
    max_later: float


SCENARIOS = {
    "a": Scenario(jobs=10, lengths=(10.0, 120.0), sdk_interval=2.0, max_ratio=0.25, max_later=0.0),
    "c": Scenario(jobs=6, lengths=(4.0, 16.0), sdk_interval=1.0, max_ratio=0.35, max_later=0.1),
}


@attrs.frozen(kw_only=True)
class Timeline:
    """One simulated job: when it started, when each page finished (the last one ends it)."""

    job_id: str
    started: float
    pages: tuple[float, ...]

    @property
    def end(self) -> float:
        return self.pages[-1]

    def snapshot(self, at: float) -> Snapshot:
        total = len(self.pages)
        if at < self.started:
            status, done = JobStatus.QUEUED, 0
        else:
            done = bisect.bisect_right(self.pages, at)
            status = JobStatus.COMPLETED if done == total else JobStatus.PROCESSING
        return Snapshot(
            job_id=self.job_id, status=status, raw_status=status.value, completed=done, total=total
        )


def timelines(seed: int, scenario: Scenario) -> list[Timeline]:
    """The jobs bench_poll.py creates for ``seed``, run to their end by the simulator's engine."""
    lengths = durations(scenario.jobs, random.Random(seed), *scenario.lengths)
    engine = Engine(seed=seed, tier=TIERS["enterprise"], page_interval=PAGE_INTERVAL)
    ids = [
        engine.create_job(
            0.0,
            urls=[f"https://example.com/{n}/{k}" for k in range(max(1, round(d / PAGE_INTERVAL)))],
        )
        for n, d in enumerate(lengths)
    ]
    started: dict[str, float] = {}
    pages: dict[str, list[float]] = {job: [] for job in ids}
    while (deadline := engine.next_deadline()) is not None:
        for notice in engine.advance(deadline):
            if notice.kind == "started" and notice.job_id is not None:
                started[notice.job_id] = deadline
            elif notice.kind == "page" and notice.job_id is not None:
                pages[notice.job_id].append(deadline)
    return [Timeline(job_id=j, started=started[j], pages=tuple(pages[j])) for j in ids]


def sdk(job: Timeline, begin: float, interval: float, latency: float) -> tuple[int, float]:
    """reader-py's ``wait_for_job`` from ``begin``: requests made and detection delay."""
    now, requests = begin, 0
    while True:
        requests += 1
        if now + latency / 2 >= job.end:
            return requests + 1, now + 2 * latency - job.end  # + the results request
        now += latency + interval


def jobwatch(
    jobs: Sequence[Timeline], added: Sequence[float], latency: float, rng: random.Random
) -> tuple[int, list[float]]:
    """jobwatch's poll transport over ``jobs``, each watched at its ``added`` time: requests
    made and detection delays."""
    schedule = PollSchedule(interval=2.0, max_interval=30.0, rpm=1000, rng=rng)
    by_id = {job.job_id: job for job in jobs}
    arrivals = sorted(zip(added, by_id, strict=True))
    flying: list[tuple[float, str]] = []
    requests, delays, now = 0, [], arrivals[0][0]
    while arrivals or len(schedule):
        while arrivals and arrivals[0][0] <= now:
            schedule.add(arrivals.pop(0)[1], now)
        while len(flying) < MAX_IN_FLIGHT and (picked := schedule.pick(now)) is not None:
            requests += 1
            heapq.heappush(flying, (now + latency, picked))
        due = schedule.next_due() if len(flying) < MAX_IN_FLIGHT else None
        times = (due, flying[0][0] if flying else None, arrivals[0][0] if arrivals else None)
        now = max(now, min(t for t in times if t is not None))
        while flying and flying[0][0] <= now:
            answered, job_id = heapq.heappop(flying)
            job = by_id[job_id]
            read = answered - latency / 2  # the server reads the job halfway
            snapshot = job.snapshot(read)
            # Reader's answer says when the job started (the simulator's clock is the client's).
            started = job.started if read >= job.started else None
            if schedule.observe(job_id, answered, snapshot, started=started) is None:
                delays.append(answered - job.end)
    return requests, delays


@attrs.frozen(kw_only=True)
class Run:
    """One modelled bench run: both clients' requests and detection delays."""

    seed: int
    sdk_requests: int
    sdk_delays: tuple[float, ...]
    requests: int
    delays: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return self.requests / self.sdk_requests

    @property
    def later(self) -> float:
        return statistics.mean(self.delays) - statistics.mean(self.sdk_delays)


def run(seed: int, scenario: Scenario, args: argparse.Namespace) -> Run:
    """The bench run of ``seed``, modelled."""
    jobs = timelines(seed, scenario)
    # The jitter's seed and the SDK's phases vary with the run, not only with the timelines.
    rng = random.Random(f"{args.rng}/{seed}")
    sdk_runs = [
        sdk(
            job,
            args.sdk_start
            if args.sdk_phase == "start"
            else rng.uniform(0.0, scenario.sdk_interval),
            scenario.sdk_interval,
            args.latency,
        )
        for job in jobs
    ]
    # The Watcher starts (0.15-0.45 s in the bench) and polls each job as it is watched.
    began = rng.uniform(*args.added)
    added = [began + rng.uniform(0.0, args.spread) for _ in jobs]
    requests, delays = jobwatch(jobs, added, args.latency, rng)
    return Run(
        seed=seed,
        sdk_requests=sum(r for r, _ in sdk_runs),
        sdk_delays=tuple(d for _, d in sdk_runs),
        requests=requests,
        delays=tuple(delays),
    )


def quantiles(values: Sequence[float]) -> str:
    """Mean, 5th, 50th and 95th percentiles, on one line."""
    ordered = sorted(values)
    at = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.05, 0.5, 0.95)]
    return (
        f"mean {statistics.mean(values):+.3f}  p5 {at[0]:+.3f}  p50 {at[1]:+.3f}  p95 {at[2]:+.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="c")
    parser.add_argument("--seeds", type=int, default=1000, help="runs (seeds 0, 1, ...)")
    parser.add_argument("--latency", type=float, default=0.005, help="seconds per request")
    parser.add_argument(
        "--sdk-phase",
        choices=("start", "random"),
        default="random",
        help="random: each SDK wait begins up to one interval after its job is created (as in"
        " the bench, whose threads start 0.3-0.6 s late); start: with its job",
    )
    parser.add_argument("--sdk-start", type=float, default=0.005, help="SDK's first poll")
    parser.add_argument(
        "--added",
        type=float,
        nargs=2,
        default=(0.15, 0.45),
        help="jobwatch starts watching between these seconds after the jobs are created...",
    )
    parser.add_argument("--spread", type=float, default=0.12, help="...over this many seconds")
    parser.add_argument("--rng", type=int, default=0, help="seed of the jitter and phases")
    parser.add_argument("--show", type=int, nargs="*", default=[], help="seeds to detail")
    args = parser.parse_args()
    scenario = SCENARIOS[args.scenario]
    began = time.perf_counter()
    for seed in args.show:
        one = run(seed, scenario, args)
        mean, sdk_mean = statistics.mean(one.delays), statistics.mean(one.sdk_delays)
        print(
            f"seed {seed}: requests {one.requests}/{one.sdk_requests} = {one.ratio:.2f}x, mean "
            f"delay {mean:.2f} s vs {sdk_mean:.2f} s ({one.later:+.2f} s); jobwatch delays "
            + " ".join(f"{d:.2f}" for d in one.delays)
        )
    runs = [run(seed, scenario, args) for seed in range(args.seeds)]
    if not runs:
        return
    ratio_ok = [r.ratio <= scenario.max_ratio for r in runs]
    later_ok = [r.later <= scenario.max_later for r in runs]
    both = sum(a and b for a, b in zip(ratio_ok, later_ok, strict=True))
    per_job = sum(r.requests for r in runs) / (len(runs) * scenario.jobs)
    print(
        f"scenario {args.scenario}: {len(runs)} runs of {scenario.jobs} jobs, latency "
        f"{args.latency * 1000:g} ms, SDK phase {args.sdk_phase}\n"
        f"  requests ratio       {quantiles([r.ratio for r in runs])}  "
        f"(<= {scenario.max_ratio}: {sum(ratio_ok) / len(runs):.1%}; {per_job:.2f} polls a job)\n"
        f"  mean delay, jobwatch {quantiles([statistics.mean(r.delays) for r in runs])}\n"
        f"  mean delay, SDK      {quantiles([statistics.mean(r.sdk_delays) for r in runs])}\n"
        f"  difference           {quantiles([r.later for r in runs])}  "
        f"(<= {scenario.max_later:+}: {sum(later_ok) / len(runs):.1%})\n"
        f"  both bounds met in {both / len(runs):.1%} of runs"
        f"  ({time.perf_counter() - began:.1f} s)"
    )


if __name__ == "__main__":
    main()
