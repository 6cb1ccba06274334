"""A fake of OpenAI's Batch API: ``GET /v1/batches/{id}``, the output and error files a batch
names (``GET /v1/files/{id}/content``), and thin, signed account webhooks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..transports._signatures import StandardWebhooksScheme
from ._fake_api import FakeAPI, FakeFaults, FakeStep, SlidingWindow
from ._http import FakeError, Reply, Request, Route
from ._http import bearer as _bearer
from ._webhooks import Outgoing, whsec

__all__ = ["OpenAIBatchFake"]

STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)
#: Terminal statuses and the webhook event each sends.
_EVENTS = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}
_USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"


class OpenAIBatchFake(FakeAPI):
    """OpenAI's Batch API on loopback: batches follow scripted timelines in simulated time.

    Serve it with `running_fake`; point the ``openai-batch`` provider at `base_url` with
    `api_key` (or use `config`). Create batches with `create_batch`; set `webhook_url` to
    receive the project's webhooks (``batch.completed``, ``batch.failed``,
    ``batch.cancelled``, ``batch.expired``), thin bodies signed with Standard Webhooks and
    `webhook_secret`, retried after `webhook_retries` on any answer but 2xx. A batch that
    ends names an output file of the requests that completed and an error file of those that
    failed (JSONL, a line per request, keyed by ``custom_id``: ``request-1`` and on).

    Args:
        api_key: the only key accepted (``Authorization: Bearer``); any other gets 401.
        seed: seed of ids, secrets and fault dice.
        time_scale: simulated seconds per real second (ignored when `clock` is given).
        clock: a callable returning simulated seconds, e.g. ``jobwatch.sim.ManualClock()``.
        faults: the faults to inject.
        rpm: requests per minute allowed; past it, 429 with ``retry-after`` and
            ``x-ratelimit-*-requests``. None = no limit.
        webhook_url: where the project's webhooks go; None = nowhere (set it any time).
        webhook_secret: a ``whsec_`` secret; None = a seeded one.
        webhook_retries: simulated seconds before each retry of a failed delivery.
        webhook_timeout: real seconds a delivery attempt may take.
        epoch: Unix time of simulated time zero; None = now.
    """

    provider = "openai-batch"
    prefix = "/v1"
    statuses = STATUSES

    def __init__(
        self,
        *,
        api_key: str = "sk-fake-openai",
        seed: int = 0,
        time_scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        faults: FakeFaults | None = None,
        rpm: int | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_retries: Sequence[float] = (5.0, 30.0, 120.0, 600.0),
        webhook_timeout: float = 10.0,
        epoch: float | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            seed=seed,
            time_scale=time_scale,
            clock=clock,
            faults=faults,
            epoch=epoch,
            webhook_timeout=webhook_timeout,
        )
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret or whsec(self.rng.randbytes(24))
        self.webhook_retries = tuple(webhook_retries)
        self._window = None if rpm is None else SlidingWindow(rpm)
        self._files: dict[str, bytes] = {}
        self._schemes = {
            forged: StandardWebhooksScheme([secret])
            for forged, secret in ((False, self.webhook_secret), (True, whsec(b"forged-" * 4)))
        }

    # -- jobs ----------------------------------------------------------------------------

    def create_batch(
        self,
        *,
        outcome: str = "completed",
        total: int = 10,
        failed: int = 0,
        steps: Sequence[FakeStep] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Create a batch in ``validating`` and return its id.

        It follows `steps`, or else a default timeline that ends in `outcome`
        (``completed``, ``failed``, ``expired`` or ``cancelled``) with `total` requests of
        which `failed` fail. A step's ``status`` also sets the matching ``*_at`` timestamp.
        """
        steps = self.timeline(outcome, total, failed) if steps is None else steps
        self.check_steps(steps)
        self.pump()
        now = self.now()
        batch_id = f"batch_{self.rng.getrandbits(128):032x}"
        data: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": f"file-{self.rng.getrandbits(96):024x}",
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": self.stamp(now),
            "in_progress_at": None,
            "expires_at": self.stamp(now + 86_400),
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": dict(metadata) if metadata is not None else None,
        }
        self._add(batch_id, data, steps)
        return batch_id

    @staticmethod
    def timeline(outcome: str = "completed", total: int = 10, failed: int = 0) -> list[FakeStep]:
        """The default timeline of `create_batch`, one simulated second per step."""
        if outcome not in _EVENTS:
            raise ValueError(f"outcome must be one of {', '.join(_EVENTS)}, got {outcome!r}")
        if outcome == "failed":
            error = {
                "code": "invalid_json_line",
                "line": 1,
                "param": None,
                "message": "This line is not parseable as valid JSON.",
            }
            return [
                FakeStep(status="failed", fields={"errors": {"object": "list", "data": [error]}})
            ]
        done = total if outcome == "completed" else total // 2
        steps = [FakeStep(status="in_progress", fields={"request_counts": {"total": total}})]
        for count in sorted({done // 2, done}):
            bad = min(failed, count)
            steps.append(
                FakeStep(fields={"request_counts": {"completed": count - bad, "failed": bad}})
            )
        ending = {
            "completed": ["finalizing", "completed"],
            "expired": ["expired"],
            "cancelled": ["cancelling", "cancelled"],
        }[outcome]
        return steps + [FakeStep(status=status) for status in ending]

    def cancel(self, batch_id: str) -> None:
        """Cancel a batch that has not ended: ``cancelling`` now, ``cancelled`` 2 s later."""
        if self.job(batch_id)["status"] not in _EVENTS:
            self._follow(
                batch_id,
                [FakeStep(delay=0, status="cancelling"), FakeStep(delay=2, status="cancelled")],
            )
            self.pump()

    def apply(self, job_id: str, data: dict[str, Any], step: FakeStep, at: float) -> None:
        before = data["status"]
        if step.status is not None:
            data["status"] = step.status
            if step.status != "validating":
                data[f"{step.status}_at"] = self.stamp(at)
        self.merge(data, step.fields)
        if data["status"] == before or data["status"] not in _EVENTS:
            return
        counts = data["request_counts"]
        completed, failed = counts["completed"], counts["failed"]
        if data["output_file_id"] is None and completed > 0:
            data["output_file_id"] = self._file(
                {
                    "custom_id": f"request-{n}",
                    "response": {"status_code": 200, "body": {"object": "chat.completion"}},
                    "error": None,
                }
                for n in range(1, completed + 1)
            )
        if data["error_file_id"] is None and failed > 0:
            data["error_file_id"] = self._file(
                {
                    "custom_id": f"request-{n}",
                    "response": None,
                    "error": {"code": "server_error", "message": "The request failed."},
                }
                for n in range(completed + 1, completed + failed + 1)
            )
        self._notify(job_id, _EVENTS[data["status"]], at)

    def _file(self, lines: Iterable[dict[str, Any]]) -> str:
        """Keep a JSONL file of ``lines``, each with a request id; its id."""
        file_id = f"file-{self.rng.getrandbits(96):024x}"
        self._files[file_id] = b"".join(
            json.dumps({"id": f"batch_req_{self.rng.getrandbits(96):024x}", **line}).encode()
            + b"\n"
            for line in lines
        )
        return file_id

    # -- webhooks ------------------------------------------------------------------------

    def _notify(self, batch_id: str, event: str, at: float) -> None:
        if self.webhook_url is None:
            return
        body = {
            "object": "event",
            "id": f"evt_{self.rng.getrandbits(128):032x}",
            "type": event,
            "created_at": self.stamp(at),
            "data": {"id": batch_id},
        }
        self.sender.enqueue(
            Outgoing(
                id=f"wh_{self.rng.getrandbits(128):032x}",
                event=event,
                job_id=batch_id,
                url=self.webhook_url,
                body=json.dumps(body, separators=(",", ":")).encode(),
                retries=self.webhook_retries,
            )
        )

    def sign(self, delivery: Outgoing, forged: bool) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": _USER_AGENT}
        return headers | self._schemes[forged].sign(
            delivery.body, now=self.unix_time(), delivery_id=delivery.id
        )

    # -- HTTP ----------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return [
            Route(method="GET", template="/v1/batches/{batch_id}", handler=self._get),
            Route(method="GET", template="/v1/files/{file_id}/content", handler=self._content),
        ]

    def _get(self, request: Request) -> Reply:
        batch_id = request.params["batch_id"]
        if not self.has_job(batch_id):
            raise self.error(404, f"No batch found with id '{batch_id}'.")
        return Reply(body=self._data(batch_id))

    def _content(self, request: Request) -> Reply:
        file_id = request.params["file_id"]
        self.pump()
        if file_id not in self._files:
            raise self.error(404, f"No such File object: {file_id}")
        return Reply(body=self._files[file_id])

    def authenticate(self, request: Request) -> None:
        key = _bearer(request.headers)
        if not key:
            raise self.error(
                401,
                "You didn't provide an API key. You need to provide your API "
                "key in an Authorization header using Bearer auth.",
            )
        if key != self.api_key:
            shown = key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "*" * len(key)
            raise self.error(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")

    def limit(self, request: Request) -> dict[str, str]:
        if self._window is None:
            return {}
        now = self.now()
        wait = self._window.hit(now)
        reset = self.real_seconds(self._window.reset_in(now))
        headers = {
            "x-ratelimit-limit-requests": str(self._window.limit),
            "x-ratelimit-remaining-requests": str(self._window.remaining()),
            "x-ratelimit-reset-requests": f"{reset}s",
        }
        if wait is None:
            return headers
        seconds = self.real_seconds(wait)
        raise self.error(
            429,
            f"Rate limit reached for requests per min (RPM): Limit "
            f"{self._window.limit}, Used {self._window.limit}, Requested 1. "
            f"Please try again in {seconds}s.",
            code="rate_limit_exceeded",
            kind="requests",
            headers={**headers, "retry-after": str(seconds)},
        )

    def burst_limited(self) -> FakeError:
        return self.error(
            429,
            "Rate limit reached for requests. Please try again in 1s.",
            code="rate_limit_exceeded",
            kind="requests",
            headers={"retry-after": "1"},
        )

    def error(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        code: str | None = None,
        kind: str | None = None,
    ) -> FakeError:
        kind = kind or ("server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return FakeError(status, body, headers)
