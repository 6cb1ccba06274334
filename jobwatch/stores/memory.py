"""The ``memory`` store: everything in dictionaries, gone when the process ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .._events import JobEvent
from ..abc import JobState, Store, Verdict, _stranding

__all__ = ["MemoryStore"]

_PURGE_EVERY = 1024


class MemoryStore(Store):
    """A store for one process: fast, and forgets everything on exit.

    ``clock`` gives the time (seconds) that dedup keys expire against.
    """

    name = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._jobs: dict[str, JobState] = {}
        self._inbox: dict[str, JobEvent] = {}
        self._checkpoints: dict[str, str] = {}
        self._claims: dict[str, float] = {}
        self._records = 0
        self._dead: list[tuple[JobEvent, str, str]] = []

    def _purge(self, now: float) -> None:
        # Keys are (re)inserted at the end with now + ttl, so with one ttl the oldest expire
        # first: stop at the first live key instead of scanning them all.
        expired = []
        for key, expires in self._seen.items():
            if expires > now:
                break
            expired.append(key)
        for key in expired:
            del self._seen[key]

    async def record(
        self, job_id: str | None, decide: Callable[[JobState | None], Verdict], *, ttl: float
    ) -> Verdict:
        return self._record(job_id, decide, ttl, self._clock())

    async def record_batch(
        self,
        records: Sequence[tuple[str | None, Callable[[JobState | None], Verdict]]],
        *,
        ttl: float,
        claim: tuple[str, float] | None = None,
    ) -> list[Verdict]:
        if type(self).record is not MemoryStore.record:  # a subclass's record sees every event
            return await super().record_batch(records, ttl=ttl, claim=claim)
        now = self._clock()
        record = self._record
        verdicts = [record(job_id, decide, ttl, now) for job_id, decide in records]
        if claim is not None:
            # A subclass's claim may raise: the records stand, so their events are stranded,
            # as Store.record_batch does (the sender's retry then finds their keys taken).
            with _stranding(self, verdicts):
                await self.claim(claim[0], ttl=claim[1])
        return verdicts

    def _record(
        self,
        job_id: str | None,
        decide: Callable[[JobState | None], Verdict],
        ttl: float,
        now: float,
    ) -> Verdict:
        self._records += 1
        if self._records % _PURGE_EVERY == 0:
            self._purge(now)
        verdict = decide(None if job_id is None else self._jobs.get(job_id))
        event = verdict.event
        if event is not None:
            key = event.key
            expires = self._seen.get(key)
            if expires is not None:
                if expires > now:
                    return Verdict(event=None, check=verdict.check, dropped="duplicate")
                del self._seen[key]  # (re)inserted last: _purge relies on this order
            self._seen[key] = now + ttl
            self._inbox.pop(key, None)  # re-recorded: newest, like sqlite
            self._inbox[key] = event
        state = verdict.state
        if state is not None:
            self._jobs[state.job_id] = state
        return verdict

    async def claimed(self, key: str) -> bool:
        expires = self._claims.get(key)
        return expires is not None and expires > self._clock()

    async def claim(self, key: str, *, ttl: float) -> bool:
        now = self._clock()
        expires = self._claims.get(key)
        if expires is not None:
            if expires > now:
                return False
            del self._claims[key]  # (re)inserted last: _drop_expired relies on this order
        self._claims[key] = now + ttl
        if len(self._claims) % _PURGE_EVERY == 0:
            _drop_expired(self._claims, now)
        return True

    async def get_job(self, job_id: str) -> JobState | None:
        return self._jobs.get(job_id)

    async def put_job(self, state: JobState) -> None:
        self._jobs[state.job_id] = state

    async def active_jobs(self) -> list[JobState]:
        return [s for s in self._jobs.values() if s.watched and not s.terminal]

    async def pending(self) -> list[JobEvent]:
        return list(self._inbox.values())

    async def ack(self, key: str) -> None:
        self._inbox.pop(key, None)

    async def ack_batch(self, keys: Sequence[str]) -> None:
        if type(self).ack is not MemoryStore.ack:  # a subclass's ack sees every key
            return await super().ack_batch(keys)
        pop = self._inbox.pop
        for key in keys:
            pop(key, None)

    async def get_checkpoint(self, name: str) -> str | None:
        return self._checkpoints.get(name)

    async def put_checkpoint(self, name: str, value: str) -> None:
        self._checkpoints[name] = value

    async def dead_letter(self, event: JobEvent, subscriber: str, error: str) -> None:
        self._dead.append((event, subscriber, error))

    async def dead_letters(self) -> list[tuple[JobEvent, str, str]]:
        return list(self._dead)

    async def replay_dead_letter(self, key: str) -> bool:
        events = [event for event, _, _ in self._dead if event.key == key]
        if not events:
            return False
        self._dead = [dead for dead in self._dead if dead[0].key != key]
        self._inbox.pop(key, None)
        self._inbox[key] = events[-1]
        return True

    async def drop(self, key: str) -> bool:
        kept = len(self._dead)
        self._dead = [dead for dead in self._dead if dead[0].key != key]
        return self._inbox.pop(key, None) is not None or len(self._dead) < kept


def _drop_expired(claims: dict[str, float], now: float) -> None:
    # Newest last: with one ttl (a receiver's), the expired ones are the first.
    expired = []
    for key, expires in claims.items():
        if expires > now:
            break
        expired.append(key)
    for key in expired:
        del claims[key]
