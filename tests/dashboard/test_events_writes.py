"""When ``GET /events`` writes to its clients: at shared ticks, one write per client a tick,
the same bytes for clients at the same position; pings and statistics on an idle stream; a
client leaving in the middle. The ASGI app is driven directly, under trio's MockClock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio
import trio.testing

from jobwatch._dashboard import PING_INTERVAL, DashboardApp, DashboardOptions
from jobwatch._relay import Relay
from jobwatch.testing import make_event

FLUSH = 0.05


class Client:
    """One ``/events`` request to the app: what it was sent, and when."""

    def __init__(self, app: DashboardApp, query: bytes = b"", *, write_time: float = 0.0) -> None:
        self.app = app
        self.query = query
        self.write_time = write_time
        self.writes: list[tuple[float, bytes]] = []
        self.left = trio.Event()
        self.ended = trio.Event()

    async def run(self) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/events",
            "query_string": self.query,
            "headers": [(b"host", b"127.0.0.1")],
            "server": ("127.0.0.1", 8788),
        }
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.left.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                self.writes.append((trio.current_time(), message["body"]))
                await trio.sleep(self.write_time)

        try:
            await self.app(scope, receive, send)
        finally:
            self.ended.set()

    def ids(self) -> list[int]:
        """The numbers of the events it was sent (snapshots left out)."""
        return self.numbers(b"".join(data for _, data in self.writes))

    @staticmethod
    def numbers(written: bytes) -> list[int]:
        blocks = written.split(b"\n\n")
        return [
            int(line.rsplit(b"-", 1)[1])
            for block in blocks
            if b"event: snapshot" not in block
            for line in block.splitlines()
            if line.startswith(b"id: ")
        ]


def dashboard(**options: Any) -> tuple[Relay, DashboardApp]:
    relay = Relay(epoch="e1")
    return relay, DashboardApp(relay, DashboardOptions(flush_interval=FLUSH, **options))


def publish(relay: Relay, n: int) -> None:
    relay.observe(make_event("progress", "job_1", completed=n, total=1000), None)


def run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_every_client_is_written_to_at_the_same_ticks_with_the_same_bytes() -> None:
    relay, app = dashboard()
    clients = [Client(app) for _ in range(3)]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for client in clients:  # connected at different moments
                nursery.start_soon(client.run)
                await trio.sleep(0.013)
            start = trio.current_time()
            for n in range(1, 61):  # an event every 5 ms for 0.3 s
                publish(relay, n)
                await trio.sleep(0.005)
            await trio.sleep(1.0)
            for client in clients:
                client.left.set()
            nursery.cancel_scope.cancel()
        for client in clients:
            assert client.ids() == list(range(1, 61))  # after its snapshot: every event, once
        # After the snapshot, the writes of every client are the same writes, at the same
        # moments, made of the same bytes: joined once for all.
        later = [[w for w in client.writes if w[0] >= start] for client in clients]
        assert len({tuple(at for at, _ in writes) for writes in later}) == 1
        for writes in zip(*later, strict=True):
            assert all(data is writes[0][1] for _, data in writes)
        moments = [at for at, _ in later[0]]
        assert all(b - a >= FLUSH - 1e-9 for a, b in zip(moments, moments[1:], strict=False))
        assert len(moments) <= 0.3 / FLUSH + 2  # one write a tick, not one an event

    run(main)


def test_when_writes_take_long_the_ticks_spread_out() -> None:
    relay, app = dashboard()
    clients = [Client(app, write_time=0.03) for _ in range(3)]  # a busy process

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(client.run)
            await trio.sleep(1.0)
            start = trio.current_time()
            for n in range(1, 201):  # an event every 5 ms for 1 s
                publish(relay, n)
                await trio.sleep(0.005)
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        for client in clients:
            assert client.ids() == list(range(1, 201))
            moments = [at for at, _ in client.writes if at >= start]
            # flush_interval after the writes are done, rather than after the tick: fewer and
            # larger writes.
            assert all(b - a >= 0.08 - 1e-9 for a, b in zip(moments, moments[1:], strict=False))
            assert len(moments) <= 1.0 / 0.08 + 2

    run(main)


def test_a_slow_client_alone_gets_each_event_within_a_write_and_a_tick() -> None:
    relay, app = dashboard()
    client = Client(app, write_time=0.5)  # a slow network: each write takes half a second
    published: dict[int, float] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            await trio.sleep(1.0)
            for n in range(1, 601):  # an event every 5 ms for 3 s
                published[n] = trio.current_time()
                publish(relay, n)
                await trio.sleep(0.005)
            await trio.sleep(3.0)
            nursery.cancel_scope.cancel()
        assert client.ids() == list(range(1, 601))
        for at, data in client.writes:
            for n in Client.numbers(data):
                assert at - published[n] <= 0.5 + 0.5 + FLUSH + 1e-9

    run(main)


def test_the_first_event_after_a_quiet_spell_goes_at_once() -> None:
    relay, app = dashboard()
    client = Client(app)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            await trio.sleep(5.5)  # (between two of the ticks that come once a second)
            published = trio.current_time()
            publish(relay, 1)
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        assert [at for at, data in client.writes if b"id: e1-1" in data] == [published]

    run(main)


def test_an_idle_stream_gets_statistics_each_second_and_a_ping_when_quiet() -> None:
    relay, app = dashboard()
    plain, watching = Client(app), Client(app, b"stats=1")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(plain.run)
            nursery.start_soon(watching.run)
            await trio.sleep(PING_INTERVAL + 1.5)
            nursery.cancel_scope.cancel()
        stats = [at for at, data in watching.writes if b"event: stats" in data]
        assert len(stats) >= PING_INTERVAL  # about one a second
        assert all(1.0 - 1e-9 <= b - a <= 2.0 for a, b in zip(stats, stats[1:], strict=False))
        pings = [at for at, data in plain.writes if data == b": ping\n\n"]
        assert len(pings) == 1 and PING_INTERVAL <= pings[0] <= PING_INTERVAL + 1.5

    run(main)


def test_when_the_client_keeping_time_leaves_another_takes_over() -> None:
    relay, app = dashboard()
    first, second = Client(app), Client(app)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(second.run)
            await trio.testing.wait_all_tasks_blocked()
            first.left.set()  # it waits for the next tick for both of them
            await first.ended.wait()
            publish(relay, 1)
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        assert second.ids() == [1]

    run(main)


def test_closing_ends_every_stream_at_once() -> None:
    relay, app = dashboard()
    clients = [Client(app) for _ in range(3)]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(client.run)
            await trio.testing.wait_all_tasks_blocked()
            closed = trio.current_time()
            app.close()
            with trio.fail_after(1):
                for client in clients:
                    await client.ended.wait()
            assert trio.current_time() - closed <= FLUSH
        assert relay.clients == set()

    run(main)
