"""One process of a test fleet: a webhook receiver or a relay worker (run as a script).

    python fleet_node.py receiver REDIS_URL PREFIX STREAM OWNER SECRET
    python fleet_node.py consumer REDIS_URL PREFIX STREAM NAME [HANG_AFTER]

A receiver prints ``listening on URL``; a consumer prints ``ready``. A consumer writes the key of
each event it handles as a line of ``handled-NAME.txt`` in the folder ``$FLEET_DIR`` (a file,
not Redis: a count kept in a Redis that restarts could itself be applied twice); with HANG_AFTER it
handles that many events, then sets ``{PREFIX}:hung`` and hangs inside its next callback (the
test kills it there). SIGTERM stops either cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

import anyio
import redis
from jobwatch_redis import RelayTransport

from jobwatch import Config, JobEvent, Watcher
from jobwatch.transports.webhook import WebhookTransport


def receiver_config(url: str, prefix: str, stream: str, owner: str, secret: str) -> Config:
    return Config.from_mapping(
        {
            "jobwatch": {
                "transport": ["webhook", "relay"],
                "store": "redis",
                "safety_poll": 0,
                "redis": {
                    "url": url,
                    "prefix": prefix,
                    "owner": owner,
                    # Longer than Redis is away in the restart test: a receiver that cannot
                    # renew its lease for 0.8 x lease stops (another may adopt its inbox).
                    "lease": 10.0,
                    "record_deadline": 1.0,
                    "timeout": 0.5,
                },
                "relay": {"url": url, "stream": stream, "group": "g", "timeout": 2.0},
                "webhook": {"listen": "127.0.0.1:0", "secrets": [secret], "scheme": "reader"},
            }
        }
    )


def consumer_config(url: str, stream: str, name: str) -> Config:
    # The worker's whole difference from a receiver is this table: no code changes.
    return Config.from_mapping(
        {
            "jobwatch": {
                "transport": "relay",
                "store": "memory",
                "safety_poll": 0,
                "relay": {
                    "url": url,
                    "stream": stream,
                    "group": "g",
                    "consumer": name,
                    "claim_idle": 1.0,
                    "block": 0.2,
                    "timeout": 2.0,
                    "batch": 5,
                },
            }
        }
    )


async def _until_terminated() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def receiver(url: str, prefix: str, stream: str, owner: str, secret: str) -> None:
    config = receiver_config(url, prefix, stream, owner, secret)
    webhook = WebhookTransport.from_config(config)
    async with Watcher(config, transports=[webhook, RelayTransport.from_config(config)]):
        print(f"listening on {webhook.url}", flush=True)
        await _until_terminated()


async def consumer(
    url: str, prefix: str, stream: str, name: str, hang_after: int, record: TextIO
) -> None:
    client = redis.Redis.from_url(url)
    handled = 0

    async def on_event(event: JobEvent) -> None:
        nonlocal handled
        if hang_after and handled >= hang_after:
            client.set(f"{prefix}:hung", event.key)
            await anyio.sleep_forever()
        handled += 1
        record.write(f"{event.key}\n")  # a line at a time, flushed

    async with Watcher(consumer_config(url, stream, name)) as watcher:
        watcher.subscribe(on_event)
        print("ready", flush=True)
        await _until_terminated()


def main(argv: list[str]) -> None:
    role, *given = argv
    run: Any = receiver if role == "receiver" else consumer
    args: list[Any] = given
    if role == "consumer":
        record = Path(os.environ["FLEET_DIR"], f"handled-{given[3]}.txt").open("a", buffering=1)
        args = [*given[:4], int(given[4]) if len(given) > 4 else 0, record]
    anyio.run(run, *args, backend="trio")


if __name__ == "__main__":
    main(sys.argv[1:])
