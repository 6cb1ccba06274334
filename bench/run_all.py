"""Run every benchmark in turn and print its figures (``make bench``; about 15 minutes).

Each benchmark measures against a baseline in the same run, since these machines are shared
and noisy; docs/benchmarks.md records the figures and what they are compared with.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ("poll transport vs reader-py's wait_for_job", ["bench_poll.py"]),
    (
        "SSE transport vs plain httpx-sse with json.loads",
        [
            "bench_sse.py",
            "--frames",
            "200000",
            "--jobs",
            "10000",
            "--sqlite-frames",
            "30000",
            "--rounds",
            "2",
        ],
    ),
    ("webhook receiver vs a bare HMAC endpoint", ["bench_webhook.py"]),
    ("Redis store vs sqlite store behind receivers", ["bench_redis.py"]),
]


def main() -> int:
    failed = 0
    for title, argv in BENCHES:
        print(f"\n=== {title}: python bench/{' '.join(argv)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]])
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
