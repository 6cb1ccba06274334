"""A sqlite-backed webhook receiver in a process of its own (run as a script).

    python receiver_node.py BACKEND DB RECORD GENERATION [NOFILE]

It serves ``jobwatch listen``'s receiver through the public API on ``127.0.0.1:0`` with the
``reader`` scheme and the secret ``SECRET`` below, prints ``listening on URL`` (deliveries go
to URL + ``PATH``), and appends ``GENERATION JOB_ID KIND KEY`` to the file RECORD for each
event its callback receives (a line at a time, written before the callback returns: a SIGKILL
loses none that were written). With NOFILE the process may open at most that many files.
SIGTERM stops it cleanly.
"""

from __future__ import annotations

import resource
import signal
import sys
from typing import TextIO

import anyio

from jobwatch import Config, JobEvent, Watcher

SECRET = "whsec-receiver-node-secret"
PATH = "/hooks"


def config(db: str) -> Config:
    return Config.from_mapping(
        {
            "jobwatch": {
                "transport": "webhook",
                "store": "sqlite",
                "safety_poll": 0,
                "sqlite": {"path": db},
                "webhook": {
                    "listen": "127.0.0.1:0",
                    "path": PATH,
                    "secrets": [SECRET],
                    "scheme": "reader",
                },
            }
        }
    )


async def serve(db: str, record: TextIO, generation: str) -> None:
    watcher = Watcher(config(db))

    def handled(event: JobEvent) -> None:
        record.write(f"{generation} {event.job_id} {event.kind} {event.key}\n")

    watcher.subscribe(handled)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with watcher:
            print(f"listening on {watcher.bound_url('webhook')}", flush=True)
            async for _ in signals:
                return


def main(argv: list[str]) -> None:
    backend, db, record_path, generation, *rest = argv
    if rest:
        limit = int(rest[0])
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    with open(record_path, "a", buffering=1) as record:
        anyio.run(serve, db, record, generation, backend=backend)


if __name__ == "__main__":
    main(sys.argv[1:])
