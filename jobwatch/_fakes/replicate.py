"""A fake of Replicate predictions: ``GET /v1/predictions/{id}``, the prediction's SSE stream
(``urls.stream``, with ids and ``Last-Event-ID`` resume) and per-prediction webhooks whose body
is the prediction, signed with Standard Webhooks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import anyio
import attrs

from ..sim._clock import TimerHandle
from ..transports._signatures import StandardWebhooksScheme
from ._fake_api import FakeAPI, FakeFaults, FakeStep, SlidingWindow
from ._http import FakeError, Reply, Request, Route, StreamReply, Write
from ._http import bearer as _bearer
from ._webhooks import Outgoing, whsec

__all__ = ["ReplicateFake"]

#: ``aborted`` is not in Replicate's documentation, but its API returns it.
STATUSES = ("starting", "processing", "succeeded", "failed", "canceled", "aborted")
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
#: Replicate sends ``output`` and ``logs`` deliveries at most once every 500 ms (``start`` and
#: ``completed`` always): a change within that time goes with the next one.
THROTTLED = frozenset({"output", "logs"})
THROTTLE = 0.5
#: What the stream's ``done`` event says for each terminal status.
_DONE = {
    "succeeded": {},
    "canceled": {"reason": "canceled"},
    "failed": {"reason": "error"},
    "aborted": {"reason": "error"},
}


@attrs.frozen(kw_only=True)
class _Event:
    id: str
    name: str
    data: str

    def encode(self) -> bytes:
        lines = "".join(f"data: {line}\n" for line in self.data.split("\n"))
        return f"id: {self.id}\nevent: {self.name}\n{lines}\n".encode()


@attrs.define
class _Stream:
    events: list[_Event] = attrs.field(factory=list)
    waiters: list[anyio.Event] = attrs.field(factory=list)

    def push(self, event: _Event) -> None:
        self.events.append(event)
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.set()

    async def changed(self) -> None:
        waiter = anyio.Event()
        self.waiters.append(waiter)
        await waiter.wait()


@attrs.frozen(kw_only=True)
class _Hook:
    url: str
    events: frozenset[str]


class ReplicateFake(FakeAPI):
    """Replicate's predictions API on loopback: predictions follow scripted timelines in
    simulated time, stream their output, and call their webhooks.

    Serve it with `running_fake`; point the ``replicate`` provider at `base_url` with
    `api_key` (or use `config`). `create_prediction` starts one. Its ``urls.stream`` is an
    SSE stream on the fake (events ``output``, ``logs``, ``error``, ``done``, each with an
    ``id:``; a reconnect with ``Last-Event-ID`` resumes after that event). Its `webhook` gets
    the prediction itself as the body, signed with Standard Webhooks and `webhook_secret`
    (``webhook-id`` is the delivery id); ``output`` and ``logs`` deliveries leave at most once
    every 500 ms (changes meanwhile go with the next one, or with ``completed``); only the
    final (``completed``) delivery is retried, after `webhook_retries`.

    Args:
        api_key: the only token accepted (``Authorization: Bearer`` or ``Token``); any
            other gets 401.
        seed: seed of ids, secrets and fault dice.
        time_scale: simulated seconds per real second (ignored when `clock` is given).
        clock: a callable returning simulated seconds, e.g. ``jobwatch.sim.ManualClock()``.
        faults: the faults to inject (``stream_cut_after`` cuts stream connections).
        rpm: requests per minute allowed; past it, 429 with ``retry-after``.
        webhook_secret: the account's ``whsec_`` secret; None = a seeded one.
        webhook_retries: simulated seconds before each retry of a failed final delivery.
        webhook_timeout: real seconds a delivery attempt may take.
        epoch: Unix time of simulated time zero; None = now.
    """

    provider = "replicate"
    prefix = "/v1"
    statuses = STATUSES
    step_extras = frozenset({"output", "logs"})

    def __init__(
        self,
        *,
        api_key: str = "r8_fake",
        seed: int = 0,
        time_scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        faults: FakeFaults | None = None,
        rpm: int = 3000,
        webhook_secret: str | None = None,
        webhook_retries: Sequence[float] = (2.0, 4.0, 8.0, 16.0, 30.0),
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
        self.webhook_secret = webhook_secret or whsec(self.rng.randbytes(24))
        self.webhook_retries = tuple(webhook_retries)
        self._window = SlidingWindow(rpm)
        self._streams: dict[str, _Stream] = {}
        self._hooks: dict[str, _Hook] = {}
        self._started: dict[str, float] = {}  # simulated time each prediction began processing
        # Per prediction: when its last output or logs delivery left, and the one due, if any.
        self._throttled: dict[str, tuple[float | None, TimerHandle | None]] = {}
        forged = whsec(b"forged-" * 4)
        self._schemes = {
            False: StandardWebhooksScheme([self.webhook_secret]),
            True: StandardWebhooksScheme([forged]),
        }

    # -- predictions ---------------------------------------------------------------------

    def create_prediction(
        self,
        *,
        outcome: str = "succeeded",
        output: Sequence[str] = ("Hello", ", ", "world"),
        steps: Sequence[FakeStep] | None = None,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] = WEBHOOK_EVENTS,
        stream: bool = True,
        model: str = "fake-org/fake-model",
        input: Mapping[str, Any] | None = None,
    ) -> str:
        """Create a prediction in ``starting`` and return its id.

        It follows `steps`, or else a default timeline: ``processing``, each chunk of
        `output`, then `outcome` (``succeeded``, ``failed``, ``canceled`` or ``aborted``).
        `webhook` and `webhook_events_filter` are those of Replicate's create request; the
        ``start`` delivery leaves at once. `stream` False leaves ``urls.stream`` out.
        """
        unknown = set(webhook_events_filter) - set(WEBHOOK_EVENTS)
        if unknown:
            raise ValueError(
                f"unknown webhook events {sorted(unknown)}; Replicate's are "
                f"{', '.join(WEBHOOK_EVENTS)}"
            )
        steps = self.timeline(outcome, output) if steps is None else steps
        self.check_steps(steps)
        self.pump()
        prediction_id = "".join(
            self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(26)
        )
        data: dict[str, Any] = {
            "id": prediction_id,
            "model": model,
            "version": f"{self.rng.getrandbits(256):064x}",
            "input": dict(input or {"prompt": "Say hello"}),
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "status": "starting",
            "created_at": self._iso(self.now()),
            "started_at": None,
            "completed_at": None,
            "metrics": {},
        }
        if stream:
            self._streams[prediction_id] = _Stream()
        if webhook is not None:
            self._hooks[prediction_id] = _Hook(url=webhook, events=frozenset(webhook_events_filter))
        self._add(prediction_id, data, steps)
        self._notify(prediction_id, "start")
        return prediction_id

    @staticmethod
    def timeline(
        outcome: str = "succeeded", output: Sequence[str] = ("Hello", ", ", "world")
    ) -> list[FakeStep]:
        """The default timeline of `create_prediction`, half a simulated second per step."""
        if outcome not in TERMINAL:
            raise ValueError(
                f"outcome must be one of {', '.join(sorted(TERMINAL))}, got {outcome!r}"
            )
        steps = [FakeStep(delay=0.5, status="processing", logs="Loading the model")]
        steps += [FakeStep(delay=0.5, output=chunk) for chunk in output]
        error = {"failed": "CUDA out of memory", "aborted": None}.get(outcome)
        fields = {"error": error} if error else {}
        return steps + [FakeStep(delay=0.5, status=outcome, fields=fields)]

    def cancel(self, prediction_id: str) -> None:
        """Cancel a prediction that has not ended: ``canceled``, now."""
        if self.job(prediction_id)["status"] not in TERMINAL:
            self._follow(prediction_id, [FakeStep(delay=0, status="canceled")])
            self.pump()

    def apply(self, job_id: str, data: dict[str, Any], step: FakeStep, at: float) -> None:
        before = data["status"]
        if step.status is not None:
            data["status"] = step.status
        self.merge(data, step.fields)
        if data["status"] == "processing" and job_id not in self._started:
            self._started[job_id] = at
            data["started_at"] = self._iso(at)
        if step.logs is not None:
            data["logs"] += step.logs + "\n"
            self._emit(job_id, "logs", step.logs, at)
            self._notify(job_id, "logs", at)
        if step.output is not None:
            data["output"] = [*(data["output"] or []), step.output]
            self._emit(job_id, "output", step.output, at)
            self._notify(job_id, "output", at)
        if data["status"] != before and data["status"] in TERMINAL:
            self._finish(job_id, data, at)

    def _finish(self, job_id: str, data: dict[str, Any], at: float) -> None:
        data["completed_at"] = self._iso(at)
        if job_id in self._started:
            data["metrics"] = {
                **data["metrics"],
                "predict_time": round(at - self._started[job_id], 3),
            }
        if data["status"] == "failed":
            self._emit(job_id, "error", json.dumps({"detail": data["error"]}), at)
        self._emit(job_id, "done", json.dumps(_DONE[data["status"]]), at)
        self._notify(job_id, "completed")

    def _iso(self, at: float) -> str:
        moment = datetime.fromtimestamp(self.epoch + at, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"

    def render(self, data: dict[str, Any], base: str | None) -> dict[str, Any]:
        base = base or "https://api.replicate.com"
        url = f"{base}/v1/predictions/{data['id']}"
        urls = {
            "get": url,
            "cancel": f"{url}/cancel",
            "web": f"https://replicate.com/p/{data['id']}",
        }
        if data["id"] in self._streams:
            urls["stream"] = f"{base}/v1/streams/{data['id']}"
        return {**data, "urls": urls}

    # -- the stream ----------------------------------------------------------------------

    def _emit(self, prediction_id: str, name: str, data: str, at: float) -> None:
        stream = self._streams.get(prediction_id)
        if stream is not None:
            stream.push(_Event(id=f"{self.stamp(at)}:{len(stream.events)}", name=name, data=data))

    def _get_stream(self, request: Request) -> StreamReply:
        stream = self._streams.get(request.params["prediction_id"])
        if stream is None:
            raise self.error(404, "Not found", title="Not found")
        last = request.headers.get("last-event-id")
        ids = [event.id for event in stream.events]
        start = ids.index(last) + 1 if last in ids else 0

        async def write(send: Write) -> bool:
            index, sent = start, 0
            if index == len(stream.events) and index and stream.events[-1].name == "done":
                return True  # resumed after the last event: nothing more will come
            while True:
                while index < len(stream.events):
                    if sent == self.faults.stream_cut_after:
                        self.counters["stream_cut_after"] += 1
                        return False
                    event = stream.events[index]
                    await send(event.encode())
                    index, sent = index + 1, sent + 1
                    if event.name == "done":
                        return True
                await stream.changed()

        return StreamReply(write=write)

    # -- webhooks ------------------------------------------------------------------------

    def _notify(self, prediction_id: str, event: str, at: float | None = None) -> None:
        hook = self._hooks.get(prediction_id)
        if hook is None or event not in hook.events:
            return
        if event in THROTTLED:
            at = self.now() if at is None else at
            last, due = self._throttled.get(prediction_id, (None, None))
            if due is not None:
                return  # the delivery already due carries this change too
            if last is not None and at - last < THROTTLE:
                when = last + THROTTLE
                handle = self.timers.call_at(when, lambda: self._flush(prediction_id, event, when))
                self._throttled[prediction_id] = (last, handle)
                return
            self._throttled[prediction_id] = (at, None)
        elif event == "completed":
            _, due = self._throttled.pop(prediction_id, (None, None))
            if due is not None:
                due.cancel()  # the final delivery carries every change
        self._send(prediction_id, event)

    def _flush(self, prediction_id: str, event: str, at: float) -> None:
        """Send the throttled delivery due at ``at``, with the prediction as it is then (after
        its end only to a webhook that takes no ``completed``, which would carry the change)."""
        self._throttled[prediction_id] = (at, None)
        ended = self._data(prediction_id)["status"] in TERMINAL
        if not ended or "completed" not in self._hooks[prediction_id].events:
            self._send(prediction_id, event)

    def _send(self, prediction_id: str, event: str) -> None:
        hook = self._hooks[prediction_id]
        body = self.render(self._data(prediction_id), self.url)
        self.sender.enqueue(
            Outgoing(
                id=self.delivery_id(),
                event=event,
                job_id=prediction_id,
                url=hook.url,
                body=json.dumps(body, separators=(",", ":")).encode(),
                retries=self.webhook_retries if event == "completed" else (),
            )
        )

    def sign(self, delivery: Outgoing, forged: bool) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": "Replicate-Webhook/fake"}
        return headers | self._schemes[forged].sign(
            delivery.body, now=self.unix_time(), delivery_id=delivery.id
        )

    # -- HTTP ----------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        # The stream URL is a capability handed out in the prediction, like Replicate's.
        return [
            Route(method="GET", template="/v1/predictions/{prediction_id}", handler=self._get),
            Route(
                method="GET",
                template="/v1/streams/{prediction_id}",
                handler=self._get_stream,
                auth=False,
            ),
        ]

    def _get(self, request: Request) -> Reply:
        prediction_id = request.params["prediction_id"]
        if not self.has_job(prediction_id):
            raise self.error(404, "The requested resource could not be found.", title="Not found")
        return Reply(body=self.render(self._data(prediction_id), request.base_url))

    def authenticate(self, request: Request) -> None:
        if _bearer(request.headers) != self.api_key:
            raise self.error(
                401, "You did not pass a valid authentication token", title="Unauthenticated"
            )

    def limit(self, request: Request) -> dict[str, str]:
        wait = self._window.hit(self.now())
        if wait is None:
            return {}
        seconds = self.real_seconds(wait)
        raise self.error(
            429,
            f"Request was throttled. Expected available in {seconds} seconds.",
            title="Too Many Requests",
            headers={"retry-after": str(seconds)},
        )

    def burst_limited(self) -> FakeError:
        return self.error(
            429,
            "Request was throttled. Expected available in 1 second.",
            title="Too Many Requests",
            headers={"retry-after": "1"},
        )

    def error(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        title: str | None = None,
    ) -> FakeError:
        body = {"title": title or HTTPStatus(status).phrase, "detail": message, "status": status}
        return FakeError(status, body, headers)
