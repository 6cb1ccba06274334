"""Wait for a Reader job from a script: print its progress, then how it ended.

    python wait_for_job.py JOB_ID

Reads ``jobwatch.toml`` from the working directory::

    [jobwatch]
    api_key = "${READER_API_KEY}"
    store = "memory"   # a script keeps no state between runs

Exit status 0 when the job completed, 1 when it failed or was cancelled, 2 for a wrong command
line or a jobwatch error (its message says what to do).
"""

from __future__ import annotations

import sys

import jobwatch


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python wait_for_job.py JOB_ID", file=sys.stderr)
        return 2
    job_id = argv[0]
    try:
        for event in jobwatch.iter_events(job_id, timeout=3600):
            if event.kind == "progress":
                print(f"{job_id}: {event.completed}/{event.total} pages")
            elif event.terminal:
                reason = f": {event.error}" if event.error else ""
                print(f"{job_id}: {event.kind.value}{reason}")
                return 0 if event.kind == "completed" else 1
    except jobwatch.JobwatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1  # not reached: the events end with the terminal one


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
