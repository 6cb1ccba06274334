"""A worker: act on every job that a fleet's webhook receivers relay to it over Redis.

Needs the ``jobwatch-redis`` plugin (``pip install -e plugins/jobwatch-redis``) and this
``jobwatch.toml``; the receivers run ``transport = ["webhook", "relay"]`` (docs/scaling.md)::

    [jobwatch]
    transport = "relay"   # alone, the relay consumes what the receivers publish
    store = "memory"      # the Redis stream is the worker's durable inbox

    [jobwatch.relay]
    url = "redis://127.0.0.1:6379/0"

Start as many workers as you like: each event goes to one of them, and an event a dead worker
held is taken over by another. Stop one with Ctrl-C.
"""

from __future__ import annotations

import contextlib

import trio

import jobwatch


async def main() -> None:
    async with jobwatch.Watcher(jobwatch.load_config()) as watcher:

        @watcher.on("completed", "failed", "cancelled")
        async def finished(event: jobwatch.JobEvent) -> None:
            # Acknowledged to the stream only once this returns: if the worker dies first,
            # another worker gets the event.
            print(f"{event.job_id} {event.kind.value}", flush=True)

        print("worker: waiting for events", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
