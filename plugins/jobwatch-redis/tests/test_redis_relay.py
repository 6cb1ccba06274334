"""The relay transport: publish on receivers, consume on workers, claim from dead workers."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import attrs
import pytest
import redis
from jobwatch_redis import RedisOptions, RedisStore, RelayOptions, RelayTransport

from jobwatch import Config, ConfigError, JobEvent, Watcher
from jobwatch.abc import Transport
from jobwatch.stores.memory import MemoryStore
from jobwatch.testing import ScriptedTransport, TransportConformance, make_event

pytestmark = pytest.mark.redis

CONFIG = Config.from_mapping({"jobwatch": {"transport": "relay"}})


class TestRelayConformance(TransportConformance):
    reports_from_api = False  # it relays what other processes received

    @pytest.fixture
    def transport(self) -> Transport:
        return RelayTransport()


def _relay(redis_url: str, prefix: str, **kw: object) -> RelayTransport:
    return RelayTransport(RelayOptions(url=redis_url, stream=f"{prefix}:events", group="g", **kw))  # type: ignore[arg-type]


def _events(jobs: int = 3, pages: int = 4) -> list[JobEvent]:
    out = [
        make_event("page", f"j{j}", url=f"https://e/{j}/{p}")
        for j in range(jobs)
        for p in range(pages)
    ]
    return out + [make_event("completed", f"j{j}") for j in range(jobs)]


async def _publish(redis_url: str, prefix: str, events: Sequence[JobEvent]) -> Watcher:
    """A receiver: scripted events through a Watcher on the redis store, relayed."""
    store = RedisStore(RedisOptions(url=redis_url, prefix=prefix, owner="pub"))
    relay = _relay(redis_url, prefix)
    async with Watcher(
        CONFIG, transports=[ScriptedTransport(events), relay], store=store
    ) as watcher:
        await _until(lambda: _decided(watcher) >= len(events))
        with anyio.fail_after(10):
            while await store.pending_keys():  # noqa: ASYNC110 - polls Redis
                await anyio.sleep(0.01)
    assert relay.role == "publish"
    return watcher


def _decided(watcher: Watcher) -> int:
    stats = watcher.statistics()
    return stats.events_out + sum(stats.dropped.values())


def _stream_length(redis_url: str, prefix: str) -> int:
    return int(redis.Redis.from_url(redis_url).xlen(f"{prefix}:events"))


async def _until(check: object, seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        # polls Redis and counters, which have no event to wait on
        while not check():  # type: ignore[operator]  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_workers_handle_each_relayed_event_once(redis_url: str, prefix: str) -> None:
    events = _events()
    await _publish(redis_url, prefix, events)
    assert _stream_length(redis_url, prefix) == len(events)
    handled: list[tuple[str, str]] = []

    async def worker(name: str) -> None:
        relay = _relay(redis_url, prefix, consumer=name, block=0.1, timeout=1.0)
        async with Watcher(CONFIG, transports=[relay], store=MemoryStore()) as watcher:
            watcher.subscribe(lambda e: handled.append((name, e.key)))
            await _until(lambda: len(handled) >= len(events))
            await _until(lambda: _pending(redis_url, prefix) == 0)
            assert relay.role == "consume"

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker, "w1")
        tg.start_soon(worker, "w2")
    keys = sorted(key for _, key in handled)
    assert keys == sorted(e.key + "#1" for e in events)


def _pending(redis_url: str, prefix: str) -> int:
    info = redis.Redis.from_url(redis_url).xpending(f"{prefix}:events", "g")
    return int(info["pending"])


@pytest.mark.anyio
async def test_a_replayed_inbox_publishes_nothing_twice(redis_url: str, prefix: str) -> None:
    events = _events(jobs=1, pages=3)
    await _publish(redis_url, prefix, events)
    # The receiver "crashed" after publishing, before its inbox was acknowledged.
    client = redis.Redis.from_url(redis_url)
    for n, event in enumerate(events):
        recorded = attrs.evolve(event, key=event.key + "#1")
        client.hset(f"{prefix}:inbox:pub", recorded.key, recorded.to_json())
        client.zadd(f"{prefix}:order:pub", {recorded.key: n})
    watcher = await _publish(redis_url, prefix, [])
    assert watcher.statistics().transports["relay"]["republish_skipped"] == len(events), (
        watcher.statistics()
    )
    assert _stream_length(redis_url, prefix) == len(events)


@pytest.mark.anyio
async def test_entries_of_a_dead_worker_are_claimed(redis_url: str, prefix: str) -> None:
    events = _events(jobs=2, pages=2)
    await _publish(redis_url, prefix, events)
    client = redis.Redis.from_url(redis_url)
    client.xgroup_create(f"{prefix}:events", "g", id="0")
    # "ghost" reads everything and dies before acknowledging anything.
    client.xreadgroup("g", "ghost", {f"{prefix}:events": ">"}, count=100)
    assert _pending(redis_url, prefix) == len(events)
    handled: list[str] = []
    relay = _relay(redis_url, prefix, consumer="alive", claim_idle=0.3, block=0.1, timeout=1.0)
    async with Watcher(CONFIG, transports=[relay], store=MemoryStore()) as watcher:
        watcher.subscribe(lambda e: handled.append(e.key))
        await _until(lambda: len(handled) == len(events) and _pending(redis_url, prefix) == 0)
        assert watcher.statistics().transports["relay"]["claimed"] == len(events)
    assert sorted(handled) == sorted(e.key + "#1" for e in events)


@pytest.mark.anyio
async def test_ack_waits_for_slow_callbacks(redis_url: str, prefix: str) -> None:
    await _publish(redis_url, prefix, [make_event("completed", "j1")])
    release = anyio.Event()
    relay = _relay(redis_url, prefix, consumer="slow", claim_idle=0.3, block=0.1, timeout=1.0)
    async with Watcher(CONFIG, transports=[relay], store=MemoryStore()) as watcher:

        async def slow(event: JobEvent) -> None:
            await release.wait()

        watcher.subscribe(slow)
        await anyio.sleep(0.8)  # well past claim_idle: the claim is renewed meanwhile
        assert _pending(redis_url, prefix) == 1
        info = redis.Redis.from_url(redis_url).xpending_range(f"{prefix}:events", "g", "-", "+", 10)
        assert [i["consumer"] for i in info] == [b"slow"]
        release.set()
        await _until(lambda: _pending(redis_url, prefix) == 0)


@pytest.mark.anyio
async def test_malformed_entries_are_acknowledged_not_delivered(
    redis_url: str, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.xadd(f"{prefix}:events", {"event": "{not json"})
    client.xadd(f"{prefix}:events", {"key": "x"})
    good = make_event("completed", "j5")
    client.xadd(f"{prefix}:events", {"key": good.key, "event": good.to_json()})
    handled: list[str] = []
    relay = _relay(redis_url, prefix, consumer="w", block=0.1, timeout=1.0)
    async with Watcher(CONFIG, transports=[relay], store=MemoryStore()) as watcher:
        watcher.subscribe(lambda e: handled.append(e.key))
        await _until(lambda: handled and _pending(redis_url, prefix) == 0)
        assert watcher.statistics().transports["relay"]["malformed"] == 2
    assert handled == ["j5:terminal#1"]


@pytest.mark.anyio
async def test_consumer_keeps_retrying_while_redis_is_unreachable() -> None:
    relay = RelayTransport(RelayOptions(url="redis://127.0.0.1:1/0", timeout=0.3, block=0.1))
    async with Watcher(CONFIG, transports=[relay], store=MemoryStore()) as watcher:
        await _until(lambda: watcher.statistics().reconnects >= 2)


def test_options_come_from_the_relay_table() -> None:
    config = Config.from_mapping(
        {
            "jobwatch": {
                "transport": "relay",
                "relay": {
                    "stream": "s",
                    "group": "g",
                    "consumer": "c",
                    "claim_idle": 5,
                    "role": "consume",
                },
            }
        }
    )
    relay = RelayTransport.from_config(config)
    assert (relay.consumer, relay.options.claim_idle, relay.options.role) == ("c", 5.0, "consume")
    with pytest.raises(ConfigError, match=r"\[jobwatch.relay\]"):
        RelayTransport.from_config(Config.from_mapping({"jobwatch": {"relay": {"role": "x"}}}))
    with pytest.raises(ConfigError, match="timeout must be longer"):
        RelayTransport(RelayOptions(block=5.0, timeout=1.0))
    assert "-" in RelayTransport().consumer  # hostname-pid by default


def test_a_worker_switches_to_the_relay_in_toml_alone(tmp_path: object) -> None:
    from pathlib import Path

    from jobwatch import load_config

    path = Path(str(tmp_path)) / "jobwatch.toml"
    path.write_text(
        '[jobwatch]\ntransport = "relay"\nstore = "memory"\n[jobwatch.relay]\nstream = "s"\n'
    )
    watcher = Watcher(load_config(path))
    assert watcher.decision.transports == ("relay",)
