"""Server-Sent Events of the simulator: frames, subscriptions, pings and stream faults."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs

if TYPE_CHECKING:
    from ._clock import TimerHandle
    from ._service import Service

__all__ = ["PING", "Frame", "Subscription"]

#: The keep-alive comment Reader sends on both streams.
PING = b": ping\n\n"


@attrs.frozen(kw_only=True)
class Frame:
    """One SSE event; `final` frames (``done``) end a per-job stream."""

    name: str
    data: Mapping[str, Any]
    final: bool = False

    def encode(self) -> bytes:
        """The frame on the wire: ``event: NAME\\ndata: {json}\\n\\n``."""
        data = json.dumps(self.data, separators=(",", ":"))
        return f"event: {self.name}\ndata: {data}\n\n".encode()


class Subscription:
    """One open SSE connection's queue of frames and pings, fed by `Service`."""

    def __init__(self, service: Service, job_id: str | None) -> None:
        self.job_id = job_id
        self._service = service
        # A float in the queue is a ping that fell due at that simulated time.
        self._send, self._receive = anyio.create_memory_object_stream[Frame | float](math.inf)
        self._ping_handle: TimerHandle | None = None
        self._schedule_ping(service.now())

    def push(self, frame: Frame | float) -> None:
        """Queue a frame (or a ping) for the connection."""
        try:
            self._send.send_nowait(frame)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def close(self) -> None:
        """End the connection after the frames already queued."""
        self._send.close()

    async def write(self, write: Callable[[bytes], Awaitable[None]]) -> bool:
        """Write every frame pushed, with pings, until a final frame (True) or until a fault
        drops the connection (False)."""
        try:
            return await self._write_all(write)
        finally:
            self._service.unsubscribe(self)
            if self._ping_handle is not None:
                self._ping_handle.cancel()
            self._send.close()
            self._receive.close()

    async def _write_all(self, write: Callable[[bytes], Awaitable[None]]) -> bool:
        sent = 0
        quiet_until = await self._maybe_stall(sent, -math.inf)  # stall_sse=0@D: from the start
        async for item in self._receive:
            if isinstance(item, float):
                if item >= quiet_until:
                    await write(PING)
                continue
            if self._drops(sent):
                return False
            await write(item.encode())
            sent += 1
            if item.final:
                return True
            quiet_until = await self._maybe_stall(sent, quiet_until)
        return False

    def _drops(self, sent: int) -> bool:
        faults = self._service.faults
        if faults.drop_sse_after is not None and sent >= faults.drop_sse_after:
            self._service.counters["drop_sse_after"] += 1
            return True
        if self._service.chance(faults.drop_sse_p):
            self._service.counters["drop_sse_p"] += 1
            return True
        return False

    async def _maybe_stall(self, sent: int, quiet_until: float) -> float:
        faults = self._service.faults
        if sent != faults.stall_sse_after or faults.stall_sse_for <= 0:
            return quiet_until
        self._service.counters["stall_sse"] += 1
        until = self._service.now() + faults.stall_sse_for
        await self._service.sleep_until(until)
        return until

    def _schedule_ping(self, after: float) -> None:
        when = after + self._service.ping_interval
        self._ping_handle = self._service.call_at(when, lambda: self._ping(when))

    def _ping(self, when: float) -> None:
        self.push(when)
        self._schedule_ping(when)
