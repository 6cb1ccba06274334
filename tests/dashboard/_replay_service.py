"""A service that embeds jobwatch's dashboard, as an application would: its one callback
fails (so its events become dead letters) until a file named ``fixed`` exists in the working
directory; each event it handles is printed as ``handled KEY``.

    python _replay_service.py CONFIG
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

import jobwatch
from jobwatch.transports._serve import serve_app


async def main(config_path: str) -> None:
    watcher = jobwatch.Watcher(jobwatch.load_config(config_path))

    def notify(event: jobwatch.JobEvent) -> None:
        if not Path("fixed").exists():
            raise RuntimeError("mail server down")
        print("handled", event.key, flush=True)

    watcher.subscribe(notify, kinds=("completed",), retry=jobwatch.Retry(attempts=1))
    app = watcher.dashboard_app()
    async with anyio.create_task_group() as tg, watcher:
        url = await tg.start(serve_app, app, "127.0.0.1", 0)
        print(f"listening on {url}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], backend="trio")
