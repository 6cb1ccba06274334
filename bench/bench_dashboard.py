"""Dashboard relay: 200 ``GET /events`` clients while the Watcher dispatches a flood.

Three processes on loopback:

- ``jobwatch sim`` (Enterprise tier, a large time scale): jobs created through its admin
  route run all their pages at once, so its workspace stream (``GET /v1/events``) sends
  ``job:progress`` frames as fast as it can write them;
- the server (this file, ``--serve``): a ``Watcher`` on that stream (workspace scope, memory
  store) and its ``dashboard_app()`` served by jobwatch's hypercorn server on ``--backend``
  (asyncio, the default of ``jobwatch dashboard``, or trio); it notes the
  monotonic time at which each event is dispatched (an observer after the relay's) and counts
  its writes to ``/events`` clients, and answers their count, those from ``?since=N`` on, the
  writes and its resident memory at ``/_bench``;
- the clients (this file, ``--clients``): N bare HTTP/1.1 connections to ``/events`` in one
  trio process, each counting the ``id:`` lines it reads and noting, for each read, the first
  id in it and when it arrived (one monotonic clock for every process on Linux). A load
  generator on the server's machine takes CPU the server could use: each read is searched
  once, with no copy.

Rounds of the same flood (``--jobs`` jobs of ``--pages`` pages), each run twice: with no
client, then with N clients connected beforehand (alternating, since the machine is shared).
Reported: the Watcher's dispatch rate (over the middle 80 % of a flood's events), each
client's delivery rate over the same events (from the dispatch of the first to the read that
brought the last) and its ratio to the dispatch rate with no client,
the lag from dispatch to a client's read (p50, p99; each event counted with the lag of the
first event of its read, an upper bound), how often and how much the server wrote to each
client, the server's resident memory per connected client (in the first round: later rounds
reuse memory the clients before them freed), and the CPU each process spent, in all and per
event dispatched (which tells a round slowed by other load on the machine, whose processes
spend no more per event, from one whose processes do more work).

    python bench/bench_dashboard.py [--clients 200] [--jobs 20] [--pages 2000] [--rounds 3]
                                    [--flush-interval 0.05] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import anyio
import httpx

# -- the server (child process) -------------------------------------------------------------


def _server_app(sim_url: str, flush_interval: float) -> tuple[Any, Any]:
    import jobwatch

    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": sim_url,
                "api_key": "rdr_sim",
                "transport": "sse",
                "store": "memory",
                "safety_poll": 0,
                "sse": {"scope": "workspace"},
                # Following each job would add one reconcile poll per job to the flood: left out to
                # measure the relay.
                "dashboard": {"follow": False, "flush_interval": flush_interval},
            }
        }
    )
    watcher = jobwatch.Watcher(config)
    dashboard = watcher.dashboard_app()
    times: list[float] = []
    monotonic = time.monotonic

    def note(event: Any, dropped: str | None) -> None:
        if dropped is None:
            times.append(monotonic())

    watcher._pipeline.observers.append(note)
    writes = [0, 0]  # writes to /events clients, and their bytes

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench":
            import psutil

            answer = {
                "count": len(times),
                "rss": psutil.Process().memory_info().rss,
                "relay": dashboard.stats()["relay"],
                "writes": writes,
            }
            since = scope["query_string"].decode().removeprefix("since=")
            if since.isdigit():  # the dispatch times from event `since` on
                answer["times"] = times[int(since) :]
            body = json.dumps(answer).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["path"] == "/events":

            async def counted(message: Any) -> None:
                if message["type"] == "http.response.body":
                    writes[0] += 1
                    writes[1] += len(message.get("body", b""))
                await send(message)

            await dashboard(scope, receive, counted)
            return
        await dashboard(scope, receive, send)

    return watcher, app


async def _serve(sim_url: str, flush_interval: float) -> None:
    from jobwatch.transports._serve import serve_app

    watcher, app = _server_app(sim_url, flush_interval)
    async with watcher, anyio.create_task_group() as tg:
        url = await tg.start(serve_app, app, "127.0.0.1", 0)
        print(url, flush=True)


# -- the clients (child process) -------------------------------------------------------------


async def _client(url: str, reads: list[tuple[int, int, float]], ready: Any) -> None:
    """One /events connection: for each read, (first id in it, ids in it, when)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        tail = b""
        ready()
        monotonic = time.monotonic
        # An id line is "id: EPOCH-N" (one epoch per server process): once the first id has
        # told the epoch, the lines counted are found by all of it, which searches faster.
        # A client does as little as it can (it shares the machine with the server): each
        # read is searched once, and only its first bytes again with the end of the read
        # before (for a line split between them), rather than copied onto that end.
        mark = b"\nid: "
        pending = 0  # ids counted in reads whose first id could not be read whole
        while True:
            data = await stream.receive(1 << 20)
            now = monotonic()
            edge = tail + data[: len(mark) - 1]
            across = edge.count(mark)
            count = pending + across + data.count(mark)
            if count > pending:
                found = tail + data[:256] if across else data
                at = found.index(mark) + 5
                start = found.find(b"-", at) + 1
                end = found.find(b"\n", start)
                if start and end > 0:
                    reads.append((int(found[start:end]), count, now))
                    pending = 0
                    if len(mark) == 5:
                        mark = found[at - 5 : start]
                else:  # the line goes on in the next read
                    pending = count
            tail = edge[-(len(mark) - 1) :] if len(data) < len(mark) - 1 else data[1 - len(mark) :]


async def _clients(url: str, count: int) -> None:
    """Read until standard input closes, then print every client's reads as JSON."""
    reads: list[list[tuple[int, int, float]]] = [[] for _ in range(count)]
    connected = 0

    def ready() -> None:
        nonlocal connected
        connected += 1
        if connected == count:
            print("connected", flush=True)

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(_client, url, reads[n], ready)
        await anyio.to_thread.run_sync(sys.stdin.read)
        tg.cancel_scope.cancel()
    print(json.dumps(reads), flush=True)


# -- the orchestrator (this process) -------------------------------------------------------------


class _Child:
    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


class _Cpu:
    """The CPU time the children spend from now on."""

    def __init__(self, *children: _Child) -> None:
        import psutil

        self.processes = [psutil.Process(c.process.pid) for c in children]
        self.start = [self._used(p) for p in self.processes]
        self.began = time.monotonic()

    @staticmethod
    def _used(process: Any) -> tuple[float, int]:
        times = process.cpu_times()
        return float(times.user + times.system), process.num_ctx_switches().involuntary

    def share(self, events: int) -> str:
        """Each child's CPU time per second since creation, and per event of the ``events``
        dispatched meanwhile (and how often a second the system took the CPU from it while
        it could run: other load)."""
        now = [self._used(p) for p in self.processes]
        seconds = time.monotonic() - self.began
        return " / ".join(
            f"{(cpu - cpu0) / seconds:.2f}, {(cpu - cpu0) / events * 1e6:.0f} us/event "
            f"({(cs - cs0) / seconds:.0f} preempted/s)"
            for (cpu, cs), (cpu0, cs0) in zip(now, self.start, strict=True)
        )


def _listening(child: _Child) -> str:
    line = child.line()
    return line.removeprefix("listening on ")


def _flood(sim: httpx.Client, jobs: int, pages: int) -> None:
    urls = [f"https://example.com/p{n}" for n in range(pages)]
    for _ in range(jobs):
        sim.post("/_sim/jobs", json={"urls": urls, "pageInterval": 0.001}).raise_for_status()


def _count(server: httpx.Client) -> int:
    """How many events the server has dispatched."""
    return int(server.get("/_bench").json()["count"])


def _wait_for(server: httpx.Client, start: int, events: int, quiet: float = 1.0) -> list[float]:
    """Wait until ``start + events`` events are dispatched (or none for ``quiet`` s); the
    dispatch times from event ``start`` on."""
    last, changed = start, time.monotonic()
    while True:
        time.sleep(0.1)
        count = server.get("/_bench").json()["count"]
        if count != last:
            last, changed = count, time.monotonic()
        if count - start >= events or time.monotonic() - changed > quiet:
            times: list[float] = server.get(f"/_bench?since={start}").json()["times"]
            return times


def _middle(times: list[float]) -> tuple[int, int, float]:
    """The middle 80 % of a round's events: first index, last index, dispatch rate."""
    low, high = len(times) // 10, len(times) * 9 // 10
    return low, high, (high - low) / (times[high] - times[low])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _alone(
    sim: httpx.Client, server: httpx.Client, args: argparse.Namespace, children: list[_Child]
) -> tuple[float, str]:
    """A flood with no client: the dispatch rate, and the CPU the processes spent."""
    cpu = _Cpu(*children)
    start = _count(server)
    _flood(sim, args.jobs, args.pages)
    times = _wait_for(server, start, args.jobs * args.pages)
    return _middle(times)[2], cpu.share(len(times))


def _shared(
    sim: httpx.Client,
    server: httpx.Client,
    url: str,
    args: argparse.Namespace,
    children: list[_Child],
) -> dict[str, Any]:
    """A flood with the clients connected: rates, lags, memory and CPU."""
    rss_idle = server.get("/_bench").json()["rss"]
    clients = _Child(
        [sys.executable, __file__, "--client-process", "--url", url, "--clients", str(args.clients)]
    )
    try:
        assert clients.line() == "connected"
        time.sleep(1.0)
        rss_connected = server.get("/_bench").json()["rss"]
        before = _count(server)
        writes_before = server.get("/_bench").json()["writes"]
        cpu = _Cpu(*children, clients)
        _flood(sim, args.jobs, args.pages)
        times = _wait_for(server, before, args.jobs * args.pages)
        share = cpu.share(len(times))
        seconds = time.monotonic() - cpu.began
        writes_after = server.get("/_bench").json()["writes"]
        time.sleep(2.0)  # the clients read what is still on its way
        bench = server.get("/_bench").json()
        out, _ = clients.process.communicate("", timeout=120)
    finally:
        if clients.process.poll() is None:
            clients.process.kill()
    reads: list[list[list[float]]] = json.loads(out.strip().splitlines()[-1])
    low, high, rate = _middle(times)
    first, last = before + low + 1, before + high + 1  # event ids of the middle 80 %
    per_client, lags = [], []
    for client in reads:
        inside = [(n, count, at) for n, count, at in client if first <= n <= last]
        if inside and inside[-1][2] > times[low]:
            # The events read, over the time from the dispatch of the first to the read of
            # the last: a client that falls behind and catches up in a burst is not counted
            # faster than it kept up (ids are not counted by difference: a resynced client
            # skips to a snapshot).
            received = sum(count for _, count, _ in inside)
            per_client.append(received / (inside[-1][2] - times[low]))
        for n, count, at in inside:
            lags += [at - times[int(n) - 1 - before]] * int(count)
    writes, written = (writes_after[0] - writes_before[0], writes_after[1] - writes_before[1])
    return {
        "rate": rate,
        "writes": writes / seconds / args.clients,
        "write_size": written / max(writes, 1),
        "per_client": per_client,
        "lags": lags,
        "cpu": share,
        "memory": (rss_connected - rss_idle) / args.clients,
        "rss": bench["rss"],
        "relay": bench["relay"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", metavar="SIM_URL", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--client-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the server's event loop (jobwatch dashboard --backend; default asyncio, as there)",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=0.05,
        help="[jobwatch.dashboard] flush_interval (default 0.05 s)",
    )
    args = parser.parse_args()
    if args.serve:
        if os.environ.get("BENCH_PROFILE"):
            import cProfile
            import signal

            profile = cProfile.Profile()

            def stop(*_: object) -> None:
                profile.disable()
                profile.dump_stats(os.environ["BENCH_PROFILE"])
                os._exit(0)

            signal.signal(signal.SIGTERM, stop)
            profile.enable()
        anyio.run(_serve, args.serve, args.flush_interval, backend=args.backend)
        return 0
    if args.client_process:
        anyio.run(_clients, args.url, args.clients, backend="trio")
        return 0

    sim_child = _Child(
        [
            sys.executable,
            "-m",
            "jobwatch",
            "sim",
            "--port",
            "0",
            "--tier",
            "enterprise",
            "--time-scale",
            "1000",
        ]
    )
    sim_url = _listening(sim_child)
    server_child = _Child(
        [
            sys.executable,
            __file__,
            "--serve",
            sim_url,
            "--flush-interval",
            str(args.flush_interval),
            "--backend",
            args.backend,
        ]
    )
    server_url = server_child.line()
    print(
        f"flood: {args.jobs} jobs x {args.pages} pages through the simulator's workspace "
        f"stream, per round; {args.clients} clients; flush_interval {args.flush_interval} s; "
        f"server on {args.backend}"
    )
    print(
        "CPU: share of one core during a flood and CPU time per event dispatched (sim / "
        "server / clients), and how often a second the system took the CPU from each while "
        "it could run"
    )
    ratios, lags, memory = [], [], []
    try:
        with (
            httpx.Client(base_url=sim_url, headers={"x-api-key": "rdr_sim"}, timeout=60) as sim,
            httpx.Client(base_url=server_url, timeout=60) as server,
        ):
            time.sleep(1.0)  # the workspace stream opens
            start = _count(server)
            _flood(sim, 2, 200)  # warm-up
            _wait_for(server, start, 400)
            children = [sim_child, server_child]
            for number in range(1, args.rounds + 1):
                alone, cpu_alone = _alone(sim, server, args, children)
                shared = _shared(sim, server, server_url, args, children)
                median = statistics.median(shared["per_client"])
                ratios.append(median / alone)
                lags += shared["lags"]
                memory.append(shared["memory"])
                print(
                    f"round {number}: no client {alone:6.0f} events/s dispatched  [CPU {cpu_alone}]"
                )
                print(
                    f"         {args.clients} clients {shared['rate']:6.0f} events/s dispatched, "
                    f"per client median {median:.0f}, slowest {min(shared['per_client']):.0f} "
                    f"({len(shared['per_client'])} clients): {median / alone:.2f}x  "
                    f"[CPU {shared['cpu']}]"
                )
                print(
                    f"         {shared['writes']:.1f} writes/s per client, "
                    f"{shared['write_size'] / 1024:.0f} KiB each; "
                    f"lag p50 {_percentile(shared['lags'], 0.5) * 1000:.0f} ms, "
                    f"p99 {_percentile(shared['lags'], 0.99) * 1000:.0f} ms; "
                    f"{shared['memory'] / 1024:.1f} KiB per client; relay "
                    f"{json.dumps(shared['relay'])}"
                )
    finally:
        server_child.stop()
        sim_child.stop()
    print(
        f"per client against no client: median {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}x' for r in ratios)}); lag p50 "
        f"{_percentile(lags, 0.5) * 1000:.0f} ms, p99 {_percentile(lags, 0.99) * 1000:.0f} ms; "
        f"server memory {memory[0] / 1024:.1f} KiB per connected client (round 1: later "
        "rounds reuse what the clients before them freed)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
