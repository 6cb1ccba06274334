"""What the command-line tests share: the simulator behind a blocking portal, and ``run``."""

from __future__ import annotations

import anyio.from_thread
import pytest

from jobwatch._cli import main
from jobwatch.sim import Simulator, Step


class Sim:
    """A simulator served on a loopback port from another thread, so that a test can run the
    command (which runs its own event loop) in-process."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, sim: Simulator, url: str):
        self.portal, self.sim, self.url = portal, sim, url

    def job(self, *steps: str, delay: float | None = None) -> str:
        timeline = [Step(kind=s, delay=delay) for s in steps]  # type: ignore[arg-type]
        return self.portal.call(lambda: self.sim.create_job(steps=timeline))

    def cancel(self, job_id: str) -> None:
        self.portal.call(self.sim.cancel_job, job_id)

    def requests(self, endpoint: str = "GET /v1/jobs/{id}") -> int:
        """How many requests of ``endpoint`` the simulator answered so far."""
        counts = self.portal.call(self.sim.request_counts)
        return int(counts.by_endpoint.get(endpoint, 0))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``jobwatch ARGV...`` in-process: its exit code, standard output and error."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def signed(
    secret: str, event: str, body: dict[str, object], delivery: str
) -> tuple[bytes, dict[str, str]]:
    """A Reader webhook delivery signed with ``secret``: its body and headers."""
    import hashlib
    import hmac
    import json
    import time

    raw = json.dumps(body).encode()
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return raw, {
        "content-type": "application/json",
        "x-reader-event": event,
        "x-reader-delivery": delivery,
        "x-reader-timestamp": stamp,
        "x-reader-signature": f"sha256={digest}",
    }
