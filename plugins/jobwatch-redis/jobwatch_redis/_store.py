"""The ``redis`` store: dedup, job state and inboxes shared by a fleet of receivers.

Layout (every key under ``{prefix}:``; see :class:`~._keys.Keys`):

- ``seen:{key}`` — a dedup key. Its value is ``"{expires}|{nonce}"``: the expiry on the
  *store's clock* (the injected one in tests, ``time.time`` otherwise) decides whether the key
  is still held; Redis' own ``EX`` (the TTL plus a grace minute) only collects the garbage.
- ``job:{id}`` — the ordering guard's state of a job; ``active`` — the ids of watched jobs
  whose run has not ended.
- ``inbox:{owner}`` / ``order:{owner}`` — the events one receiver process (``owner``) recorded
  and has not yet dispatched, in record order. Each process has its own inbox, because only
  it knows when its callbacks are done. ``lease:{owner}`` exists while that process lives
  (a heartbeat renews it); a process that starts — or restarts under the same owner name —
  replays its own inbox and adopts the inbox of every owner whose lease has expired. A
  process that cannot renew its lease in time stops (:class:`LeaseLost`, raised by
  :meth:`RedisStore.monitor` to end the Watcher, and by every later write of its own).
- ``checkpoints:{owner}`` — stream positions, per process (each holds its own streams).

:meth:`RedisStore.record` reads the job's state, calls the pure ``decide``, and commits with
one Lua script that compares the state it read (compare-and-set) and claims the dedup key;
when another receiver changed the state in between, it decides again. Two receivers given the
same delivery therefore never both claim it, and never clobber each other's state.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import attrs
import redis

from jobwatch import Config, ConfigError, DecodeError, JobEvent, JobwatchError
from jobwatch.abc import JobState, Store, Verdict, kept_key, unreadable_kept

from . import _scripts
from ._backoff import Backoff
from ._client import RedisClient, RedisUnavailable, describe_url
from ._keys import Keys, as_str, is_fresh, seen_value, state_from_json, state_to_json

__all__ = ["LeaseLost", "RedisOptions", "RedisStore"]

log = logging.getLogger("jobwatch.redis")

T = TypeVar("T")

#: Redis keeps a dedup key this much longer than its TTL, so that clock skew between the
#: store's clock and Redis' never drops a key early.
_GRACE = 60
_DEAD_LETTERS_KEPT = 10_000
#: How long an event key whose commit may have run is looked for (in stranded()), and how
#: many such keys are kept.
_UNSURE_FOR = 600.0
_UNSURE_KEPT = 10_000
#: Job states kept to decide the next batch on without reading them first.
_STATES_KEPT = 10_000
#: The share of ``lease``, from the sending of the last renewal that Redis took, during which
#: a process counts on its lease: past it, it stops, before Redis can let the lease run out
#: (which happens ``lease`` seconds after Redis took the renewal) and another process adopt.
_SURE_FOR = 0.8
#: The shortest wait, in seconds, before a failed renewal is tried again.
_RETRY_MIN = 0.05


class LeaseLost(JobwatchError):
    """This process no longer holds the lease of its owner name: it could not renew it in
    time (Redis unreachable, or the process stalled), or another process holds it now.

    Another receiver may adopt its inbox and dispatch what it holds, so the store refuses to
    record, acknowledge or dispatch anything more, and the Watcher ends with this error.
    Restart the process (a supervisor does): it takes a new lease.
    """


@attrs.frozen(kw_only=True)
class RedisOptions:
    """``[jobwatch.redis]``.

    - ``url``: the Redis server (``redis://[:password@]host:port/db``, ``rediss://`` for TLS).
    - ``prefix``: the namespace of every key; receivers that deduplicate together share it.
    - ``owner``: this process's inbox name, unique among live processes and stable across a
      restart (default: the host name; set it when one host runs several receivers).
    - ``lease``: seconds after a process's last heartbeat before others adopt its inbox.
    - ``connections``: the size of the connection pool (and of the thread pool using it).
    - ``timeout``: seconds for one command, a connection, or a free pooled connection.
    - ``record_deadline``: seconds ``record`` keeps retrying before it gives up (the webhook
      receiver then answers 503 and the sender retries).
    - ``write_deadline``: seconds an acknowledgement or state write keeps retrying.
    """

    url: str = attrs.field(
        default="redis://127.0.0.1:6379/0", repr=lambda url: repr(describe_url(url))
    )
    prefix: str = "jobwatch"
    owner: str | None = None
    lease: float = 15.0
    connections: int = 16
    timeout: float = 2.0
    record_deadline: float = 3.0
    write_deadline: float = 30.0


def _check(options: RedisOptions) -> None:
    for name in ("lease", "timeout", "record_deadline", "write_deadline"):
        if not getattr(options, name) > 0:
            raise ConfigError(f"[jobwatch.redis] {name} must be > 0 seconds")
    if options.connections < 1:
        raise ConfigError("[jobwatch.redis] connections must be >= 1")
    if not options.prefix or options.owner == "":
        raise ConfigError("[jobwatch.redis] prefix and owner must not be empty")
    if not options.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"[jobwatch.redis] url must start with redis://, rediss:// or unix://, "
            f"got {describe_url(options.url)!r}"
        )


class RedisStore(Store):
    """A store on Redis, shared by every receiver process of a fleet.

    ``clock`` gives the time (seconds) that dedup keys expire against.
    """

    name = "redis"
    concurrent = True  # record waits on the network (a batch is one script: record_batch)
    shared = True  # several receivers and workers record into one Redis

    def __init__(
        self, options: RedisOptions | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.options = options or RedisOptions()
        _check(self.options)
        self.owner = self.options.owner or socket.gethostname()
        self.keys = Keys(prefix=self.options.prefix, owner=self.owner)
        self._clock = clock
        self._client = RedisClient(
            self.options.url, connections=self.options.connections, timeout=self.options.timeout
        )
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        #: Set once the lease is lost (then for good), or the store closes.
        self._changed = threading.Event()
        self._lost: LeaseLost | None = None
        self._losing = threading.Lock()
        #: time.monotonic() until which this process surely holds its lease.
        self._deadline = math.inf
        self._heartbeat: threading.Thread | None = None
        self._adopted = False
        #: Each job's state as this process last saw Redis hold it (None: absent).
        self._states: dict[str | None, bytes | None] = {}
        #: Events a record that raised had recorded all the same, for stranded().
        self._stranded: list[JobEvent] = []
        #: Event keys whose commit raised before its answer came back (it may have run):
        #: key -> (the commit's nonce, when).
        self._unsure: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_config(cls, config: Config) -> RedisStore:
        return cls(config.options("redis", RedisOptions))

    def describe(self) -> Mapping[str, Any]:
        return {
            "name": self.name,
            "url": describe_url(self.options.url),
            "prefix": self.options.prefix,
            "owner": self.owner,
        }

    @property
    def client(self) -> RedisClient:
        """The pooled client (shared with a relay transport that reuses this store's Redis)."""
        return self._client

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, take this owner's lease, and start renewing it."""
        deadline = anyio.current_time() + self.options.lease * 1.5
        waiting = False
        while True:
            sent = time.monotonic()
            if await self._client.call(self._take_lease):
                break
            if not waiting:  # a start that waits says why, rather than seeming to hang
                waiting = True
                log.warning(
                    "[jobwatch.redis] owner %r holds a lease: another live process "
                    "uses this owner name, or one stopped without giving it back; "
                    "waiting up to %.0f s for it to expire",
                    self.owner,
                    self.options.lease * 1.5,
                )
            if anyio.current_time() > deadline:
                raise ConfigError(
                    f"[jobwatch.redis] owner {self.owner!r} is in use by another live process; "
                    "give each receiver its own owner name"
                )
            # The lease of a process that crashed under this owner name runs out soon.
            await anyio.sleep(min(0.5, self.options.lease / 10))
        self._stop.clear()
        self._changed.clear()
        self._lost = None
        self._deadline = sent + self.options.lease * _SURE_FOR
        self._adopted = False
        self._heartbeat = threading.Thread(
            target=self._renew, name=f"jobwatch-redis-lease-{self.owner}", daemon=True
        )
        self._heartbeat.start()

    def _take_lease(self, r: redis.Redis) -> bool:
        ms = int(self.options.lease * 1000)
        with r.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.lease(), self._token, nx=True, px=ms)
            pipe.sadd(self.keys.owners, self.owner)
            taken, _ = pipe.execute()
        return bool(taken)

    def _renew(self) -> None:
        # A thread, not a task: the store has no task group, and the lease must be renewed
        # even while the event loop is busy. The owner is named again each time: a Redis
        # that restarted empty has forgotten it, and an owner missing from the set is never
        # looked at by the others, whatever its inbox holds when it dies.
        # Once the lease is lost it is never taken again: another process may have adopted
        # what this one holds, and only a restart, under a new lease, dispatches safely.
        # A renewal that failed is tried again soon, not lease / 3 later: a Redis slow or away
        # for a moment (a command that timed out) must not cost the lease, which only 0.8 x
        # lease without a renewal does.
        every = self.options.lease / 3
        again = min(every, max(_RETRY_MIN, self.options.lease / 30))
        wait = every
        while self._lost is None and not self._stop.wait(wait):
            sent = time.monotonic()
            # A heartbeat that wakes past the deadline (the process paused: a long garbage
            # collection, a stopped VM) must not renew: Redis may have let the lease run out
            # meanwhile, and another process adopted what this one holds.
            if self._expired():
                break
            try:
                outcome = self._renew_once(self._client.redis)
            except redis.RedisError as exc:
                if wait == every:  # said once for a spell of failures
                    log.warning(
                        "could not renew the lease of owner %s: %s; trying again every %.2g s",
                        self.owner,
                        exc,
                        again,
                    )
                wait = again
                self._expired()
                continue
            wait = every
            if outcome == 0:  # never taken from the process that holds it now
                self._lose(
                    "it is held by another process, started under the same owner name after "
                    "this one's lease ran out",
                    "give each receiver its own owner name ([jobwatch.redis] owner) and restart "
                    "this one",
                )
            elif not self._expired():  # answered in time, so Redis renewed it in time:
                # Redis held the lease until now (1), so nobody adopted; or took it again (2)
                # after it forgot it (a restart without persistence).
                self._deadline = sent + self.options.lease * _SURE_FOR

    def _expired(self) -> bool:
        """Whether the lease is lost: lost before, or not renewed in time (then lost now)."""
        if self._lost is None and time.monotonic() >= self._deadline:
            self._lose(
                f"it could not be renewed for {self.options.lease * _SURE_FOR:.1f} s (Redis "
                "was unreachable — a network partition — or this process stalled) and Redis "
                f"lets it run out {self.options.lease:g} s after the last renewal",
                "restart this process (a process supervisor does): it takes a new lease and "
                "dispatches what is still its own. If it stalls (pauses, long garbage "
                "collections) or loses Redis that long more than rarely, raise "
                "[jobwatch.redis] lease",
            )
        return self._lost is not None

    def _lose(self, why: str, advice: str) -> LeaseLost:
        with self._losing:
            if self._lost is None:
                self._lost = LeaseLost(
                    f"[jobwatch.redis] owner {self.owner!r} lost its lease: {why}. Another "
                    "receiver may adopt its inbox and dispatch what it holds, so this process "
                    f"stopped recording and dispatching; {advice}"
                )
                log.error("%s", self._lost)
                self._changed.set()
            return self._lost

    def _holding(self) -> None:
        """Raise LeaseLost once the lease is lost: nothing more is recorded, acknowledged or
        dispatched from an inbox another process may adopt."""
        if self._expired():
            raise LeaseLost(str(self._lost))

    async def monitor(self) -> None:
        """Raise :class:`LeaseLost` once this process's lease is lost, so that the Watcher
        ends before Redis lets the lease run out and another process adopts the inbox."""
        lost = await anyio.to_thread.run_sync(self._await_loss, abandon_on_cancel=True)
        if lost is not None:
            raise LeaseLost(str(lost))

    def _await_loss(self) -> LeaseLost | None:
        # A thread of its own: the heartbeat may be stuck in a call for `timeout` seconds,
        # and the event loop may be busy, when the deadline passes.
        while not self._stop.is_set():
            self._changed.wait(max(0.0, self._deadline - time.monotonic()))
            if self._stop.is_set():
                break
            if self._expired():
                return self._lost
        return None

    def _renew_once(self, r: redis.Redis) -> int:
        renew = _scripts.script(r, _scripts.RENEW)
        keys = [self.keys.lease(), self.keys.owners]
        args = [self._token, str(int(self.options.lease * 1000)), self.owner]
        outcome = int(renew(keys=keys, args=args, client=r))
        if outcome == 2:
            log.warning(
                "the lease of owner %s had run out (Redis restarted empty, or could not be "
                "reached for %.0f s) and is taken again; a receiver that started meanwhile "
                "may have adopted and dispatched what its inbox held",
                self.owner,
                self.options.lease,
            )
        return outcome

    async def aclose(self) -> None:
        """Stop renewing, give the lease back (others may adopt what is left), disconnect."""
        self._stop.set()
        self._changed.set()
        if self._heartbeat is None:  # never opened (Redis was down): no lease to give back
            self._client.close()
            return
        thread, self._heartbeat = self._heartbeat, None
        await anyio.to_thread.run_sync(thread.join)
        try:
            await self._client.call(self._release_lease)
        except JobwatchError as exc:
            log.warning("could not release the lease of owner %s: %s", self.owner, exc)
        finally:
            self._client.close()

    def _release_lease(self, r: redis.Redis) -> None:
        if r.get(self.keys.lease()) == self._token.encode():
            r.delete(self.keys.lease())

    # -- retries ---------------------------------------------------------------------------

    async def _retrying(
        self, fn: Callable[[], Awaitable[T]], deadline: float, what: str, *, owned: bool = False
    ) -> T:
        """``fn()``, retried with backoff while Redis is unavailable, for ``deadline`` s;
        ``owned``: a write into what this owner holds, never tried once the lease is lost."""
        backoff = Backoff(initial=0.05, maximum=1.0)
        give_up = anyio.current_time() + deadline
        while True:
            if owned:
                self._holding()
            try:
                return await fn()
            except RedisUnavailable as exc:
                delay = backoff.next_delay()
                if anyio.current_time() + delay > give_up:
                    raise RedisUnavailable(f"{what} failed: {exc}") from exc
                await anyio.sleep(delay)

    async def _read(self, fn: Callable[[redis.Redis], T], what: str) -> T:
        return await self._retrying(
            lambda: self._client.call(fn), self.options.record_deadline, what
        )

    async def _write(self, fn: Callable[[redis.Redis], T], what: str, *, owned: bool = False) -> T:
        return await self._retrying(
            lambda: self._client.call(fn), self.options.write_deadline, what, owned=owned
        )

    # -- record ----------------------------------------------------------------------------

    async def record(
        self, job_id: str | None, decide: Callable[[JobState | None], Verdict], *, ttl: float
    ) -> Verdict:
        """Decide and commit atomically across processes; RedisUnavailable if Redis is gone."""
        give_up = anyio.current_time() + self.options.record_deadline
        while True:
            current = None
            if job_id is not None:
                current = await self._until(give_up, functools.partial(_get, self.keys.job(job_id)))
            verdict = decide(None if current is None else state_from_json(current))
            args = self._commit_args(job_id, current, verdict, ttl)
            try:
                outcome = await self._until(give_up, functools.partial(_commit, args))
            except BaseException:
                if verdict.event is not None:
                    self._mark_unsure([verdict.event.key], str(args[-2]))
                raise
            if outcome == b"duplicate":
                return Verdict(event=None, check=verdict.check, dropped="duplicate")
            if outcome == b"ok":
                state = verdict.state
                self._cache(job_id, current if state is None else state_to_json(state).encode())
                return verdict
            # b"conflict": another receiver changed the job meanwhile; decide on its state.

    async def record_batch(
        self,
        records: Sequence[tuple[str | None, Callable[[JobState | None], Verdict]]],
        *,
        ttl: float,
        claim: tuple[str, float] | None = None,
    ) -> list[Verdict]:
        """Decide every record, then commit the batch with one script call.

        Each job is decided against the state this store last saw of it (absent, for a job
        it has not met) and committed compare-and-set: a job another receiver changed
        meanwhile, or one whose event key turns out held, comes back with what Redis holds
        and is decided again. A steady stream of jobs this process records therefore costs
        one round trip a batch. ``claim`` is taken by the script call that commits the last
        of the batch's jobs, atomically with them.
        """
        self._holding()
        if type(self).record is not RedisStore.record:  # a subclass's record sees every event
            return await super().record_batch(records, ttl=ttl, claim=claim)
        if not records:  # nothing to commit the claim with
            if claim is not None:
                await self.claim(claim[0], ttl=claim[1])
            return []
        give_up = anyio.current_time() + self.options.record_deadline
        groups: dict[str | None, list[int]] = {}
        for index, (job_id, _) in enumerate(records):
            groups.setdefault(job_id, []).append(index)
        verdicts: list[Verdict | None] = [None] * len(records)
        held: dict[str | None, set[str]] = {job_id: set() for job_id in groups}
        todo = list(groups)
        nonce = uuid.uuid4().hex
        try:
            while todo:
                plan = _BatchPlan(self, ttl, nonce)
                for job_id in todo:
                    plan.add(job_id, [(i, records[i][1]) for i in groups[job_id]], held[job_id])
                if claim is not None:  # taken only by the call in which every job commits
                    plan.take(*claim)
                try:
                    answers = await self._until(give_up, functools.partial(_commit_batch, plan))
                except BaseException:
                    self._mark_unsure(plan.claimed, nonce)
                    raise
                todo = []
                for job_id, answer in zip(plan.jobs, answers, strict=True):
                    if answer[0] == "ok":
                        plan.settle(job_id, verdicts)
                        continue
                    # Changed by another receiver, or an event key held: decide again on that.
                    self._cache(job_id, answer[1].encode() if answer[1] else None)
                    held[job_id].update(answer[2:])
                    todo.append(job_id)
        except BaseException:
            # The jobs committed in an earlier round are recorded, but the caller sees the
            # error, not their verdicts.
            self._stranded += [v.event for v in verdicts if v is not None and v.event is not None]
            raise
        done = [verdict for verdict in verdicts if verdict is not None]
        assert len(done) == len(records), "every record of a committed job has its verdict"
        return done

    def _mark_unsure(self, keys: Iterable[str], nonce: str) -> None:
        since = anyio.current_time()
        for key in keys:
            self._unsure.pop(key, None)
            self._unsure[key] = (nonce, since)
        while len(self._unsure) > _UNSURE_KEPT:
            del self._unsure[next(iter(self._unsure))]

    async def stranded(self) -> list[JobEvent]:
        """What a record that raised recorded all the same: the events of a batch's jobs
        committed before a later round failed, and — once Redis answers again — those whose
        commit ran although its answer was lost, found in this owner's inbox under the
        commit's nonce."""
        self._holding()
        found = [*await super().stranded(), *self._stranded]
        self._stranded = []
        if self._unsure:
            found += await self._resolve_unsure()
        return found

    async def _resolve_unsure(self) -> list[JobEvent]:
        unsure = list(self._unsure.items())
        keys, inbox = self.keys, self.keys.inbox()

        def look(r: redis.Redis) -> list[Any]:
            with r.pipeline(transaction=False) as pipe:
                for key, _ in unsure:
                    pipe.get(keys.seen(key))
                    pipe.hget(inbox, key)
                return list(pipe.execute())

        try:
            values = await self._client.call(look)  # once: the Watcher asks again soon
        except JobwatchError:
            return []
        now = anyio.current_time()
        found = []
        for (key, entry), seen, raw in zip(unsure, values[0::2], values[1::2], strict=True):
            nonce, since = entry
            mine = seen is not None and as_str(seen).endswith(f"|{nonce}")
            if mine and raw is not None:
                found.append(JobEvent.from_json(raw))
            elif seen is None and now - since < _UNSURE_FOR:
                continue  # not run yet; a command Redis holds back (a pause) may still run
            if self._unsure.get(key) == entry:  # not marked again meanwhile
                del self._unsure[key]
        if found:
            log.warning(
                "%d events were recorded although recording them seemed to fail "
                "(Redis' answer was lost); dispatching them now",
                len(found),
            )
        return found

    # -- claims ----------------------------------------------------------------------------

    async def claimed(self, key: str) -> bool:
        raw = await self._read(lambda r: r.get(self.keys.claim(key)), "reading a claim")
        return raw is not None and is_fresh(as_str(raw), self._clock())

    async def claim(self, key: str, *, ttl: float) -> bool:
        now, nonce = self._clock(), uuid.uuid4().hex
        args = [
            repr(now),
            seen_value(now + ttl, nonce),
            str(max(1, math.ceil(ttl)) + _GRACE),
            nonce,
        ]

        def take(r: redis.Redis) -> Any:
            return _scripts.script(r, _scripts.CLAIM)(
                keys=[self.keys.claim(key)], args=args, client=r
            )

        return bool(await self._read(take, "claiming"))

    def _cache(self, job_id: str | None, raw: bytes | None) -> None:
        """Remember a job's state as Redis holds it (what the next batch expects)."""
        if job_id is None:
            return
        if len(self._states) >= _STATES_KEPT and job_id not in self._states:
            for old in list(self._states)[: _STATES_KEPT // 2]:  # the oldest half goes
                del self._states[old]
        self._states[job_id] = raw

    async def _until(self, give_up: float, fn: Callable[[redis.Redis], T]) -> T:
        remaining = max(give_up - anyio.current_time(), 0.01)
        return await self._retrying(
            lambda: self._client.call(fn), remaining, "recording", owned=True
        )

    def _commit_args(
        self, job_id: str | None, current: bytes | None, verdict: Verdict, ttl: float
    ) -> list[str | bytes]:
        keys, state, event = self.keys, verdict.state, verdict.event
        now = self._clock()
        nonce = uuid.uuid4().hex
        return [
            keys.job(job_id) if job_id is not None else keys.no_job,
            keys.seen(event.key) if event is not None else keys.seen(""),
            keys.inbox(),
            keys.order(),
            keys.seq,
            keys.active,
            keys.owners,
            "1" if job_id is not None else "0",
            current or b"",
            state_to_json(state) if state is not None else "",
            "1" if state is not None and state.watched and not state.terminal else "0",
            state.job_id if state is not None else "",
            event.key if event is not None else "",
            event.to_json() if event is not None else "",
            repr(now),
            seen_value(now + ttl, nonce),
            str(max(1, math.ceil(ttl)) + _GRACE),
            nonce,
            self.owner,
        ]

    # -- jobs ------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobState | None:
        raw = await self._read(lambda r: r.get(self.keys.job(job_id)), "reading a job")
        return None if raw is None else state_from_json(raw)

    async def put_job(self, state: JobState) -> None:
        def put(r: redis.Redis) -> None:
            with r.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.job(state.job_id), state_to_json(state))
                if state.watched and not state.terminal:
                    pipe.sadd(self.keys.active, state.job_id)
                else:
                    pipe.srem(self.keys.active, state.job_id)
                pipe.execute()

        await self._write(put, "saving a job")

    async def active_jobs(self) -> list[JobState]:
        def load(r: redis.Redis) -> list[Any]:
            ids = sorted(as_str(i) for i in r.smembers(self.keys.active))
            return list(r.mget([self.keys.job(i) for i in ids])) if ids else []

        raws = await self._read(load, "listing active jobs")
        states = [state_from_json(raw) for raw in raws if raw is not None]
        return [s for s in states if s.watched and not s.terminal]

    # -- inbox -----------------------------------------------------------------------------

    async def pending(self) -> list[JobEvent]:
        """This owner's inbox, oldest first.

        The first call after :meth:`open` (the Watcher's replay at start) first adopts the
        inboxes of owners whose lease expired, so that what they left is dispatched here.
        """
        self._holding()
        if not self._adopted:
            await self._read(self._adopt_orphans, "adopting inboxes")
            self._adopted = True
        raws = await self._read(self._inbox, "reading the inbox")
        return [_readable(raw, "the undelivered event") for raw in raws]

    async def pending_keys(self) -> list[str]:
        """The keys of this owner's inbox (cheaper than :meth:`pending`; adopts nothing)."""
        names = await self._read(lambda r: r.zrange(self.keys.order(), 0, -1), "reading")
        return [as_str(n) for n in names]

    def _adopt_orphans(self, r: redis.Redis) -> None:
        keys = self.keys
        for raw in r.smembers(keys.owners):
            other = as_str(raw)
            if other == self.owner:
                continue
            adopt = _scripts.script(r, _scripts.ADOPT)
            moved = adopt(
                keys=[
                    keys.lease(other),
                    keys.inbox(other),
                    keys.order(other),
                    keys.inbox(),
                    keys.order(),
                    keys.owners,
                ],
                args=[other, self.owner],
                client=r,
            )
            if isinstance(moved, int) and moved > 0:
                log.warning("adopted %d undispatched events of the expired owner %s", moved, other)

    def _inbox(self, r: redis.Redis) -> list[Any]:
        names: list[Any] = list(r.zrange(self.keys.order(), 0, -1))
        if not names:
            return []
        return [raw for raw in r.hmget(self.keys.inbox(), names) if raw is not None]

    async def ack(self, key: str) -> None:
        await self._ack((key,))

    async def ack_batch(self, keys: Sequence[str]) -> None:
        if type(self).ack is not RedisStore.ack:  # a subclass's ack sees every key
            return await super().ack_batch(keys)
        await self._ack(keys)

    async def _ack(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        names = list(keys)

        def ack(r: redis.Redis) -> None:
            run = _scripts.script(r, _scripts.ACK)
            run(keys=[self.keys.inbox(), self.keys.order()], args=names, client=r)

        try:
            await self._write(ack, "acknowledging events", owned=True)
        except RedisUnavailable as exc:
            # Not fatal: the events stay in the inbox and are dispatched again after a restart.
            log.error(
                "could not remove %s from the inbox: %s",
                names[0] if len(names) == 1 else f"{len(names)} handled events",
                exc,
            )

    # -- checkpoints and dead letters ------------------------------------------------------

    async def get_checkpoint(self, name: str) -> str | None:
        raw = await self._read(lambda r: r.hget(self.keys.checkpoints, name), "reading")
        return None if raw is None else as_str(raw)

    async def put_checkpoint(self, name: str, value: str) -> None:
        await self._write(
            lambda r: r.hset(self.keys.checkpoints, name, value), "checkpointing", owned=True
        )

    async def dead_letter(self, event: JobEvent, subscriber: str, error: str) -> None:
        entry = f'{{"subscriber":{_q(subscriber)},"error":{_q(error)},"event":{event.to_json()}}}'

        def push(r: redis.Redis) -> None:
            with r.pipeline(transaction=True) as pipe:
                pipe.rpush(self.keys.dead_letters, entry)
                pipe.ltrim(self.keys.dead_letters, -_DEAD_LETTERS_KEPT, -1)
                pipe.execute()

        try:
            await self._write(push, "keeping a dead letter")
        except RedisUnavailable as exc:
            log.error("could not keep the dead letter of %s: %s", event.key, exc)

    async def dead_letters(self) -> list[tuple[JobEvent, str, str]]:
        """The namespace's dead letters (every owner's), oldest first."""
        raws = await self._read(
            lambda r: r.lrange(self.keys.dead_letters, 0, -1), "reading dead letters"
        )
        return [_dead_letter(raw) for raw in raws]

    async def replay_dead_letter(self, key: str) -> bool:
        """Move the dead letters of ``key`` into this owner's inbox (one event)."""
        keys = self.keys

        def move(r: redis.Redis) -> bool:
            moved = False

            def attempt(pipe: Any) -> None:  # run again by redis-py if a WATCHed key changed
                nonlocal moved
                found: list[Any] = [
                    raw
                    for raw in pipe.lrange(keys.dead_letters, 0, -1)
                    if kept_key(raw, within="event") == key
                ]
                moved = bool(found)
                if not found:
                    return
                seq = int(pipe.get(keys.seq) or 0) + 1
                pipe.multi()
                for raw in found:
                    pipe.lrem(keys.dead_letters, 0, raw)
                pipe.set(keys.seq, seq)
                pipe.hset(keys.inbox(), key, _dead_letter(found[-1])[0].to_json())
                pipe.zadd(keys.order(), {key: seq})
                pipe.sadd(keys.owners, self.owner)

            # WATCHed: two replays of one dead letter put it in one inbox, once.
            r.transaction(attempt, keys.dead_letters, keys.seq)
            return moved

        return await self._write(move, "replaying a dead letter", owned=True)

    async def drop(self, key: str) -> bool:
        """Forget ``key``: its dead letters (every owner's) and its row in this owner's inbox."""
        keys = self.keys

        def forget(r: redis.Redis) -> bool:
            # (Matched by the key its JSON holds: one this jobwatch cannot read can still go.)
            found: list[Any] = [
                raw
                for raw in r.lrange(keys.dead_letters, 0, -1)
                if kept_key(raw, within="event") == key
            ]
            with r.pipeline(transaction=True) as pipe:
                for raw in found:
                    pipe.lrem(keys.dead_letters, 0, raw)
                pipe.hdel(keys.inbox(), key)
                pipe.zrem(keys.order(), key)
                removed = pipe.execute()
            return bool(found) or bool(removed[-2])

        return await self._write(forget, "dropping an event", owned=True)


def _dead_letter(raw: bytes | str) -> tuple[JobEvent, str, str]:
    try:
        entry = json.loads(raw)
        event = JobEvent.from_dict(entry["event"])
        return event, str(entry["subscriber"]), str(entry["error"])
    except (DecodeError, ValueError, KeyError, TypeError) as exc:
        raise _unreadable("the dead letter", kept_key(raw, within="event"), exc) from None


def _readable(raw: bytes | str, what: str) -> JobEvent:
    """An event the store kept, or a DecodeError naming it and the way out."""
    try:
        return JobEvent.from_json(raw if isinstance(raw, str) else raw.decode())
    except (DecodeError, ValueError) as exc:
        raise _unreadable(what, kept_key(raw), exc) from None


def _unreadable(what: str, key: str | None, exc: Exception) -> DecodeError:
    return unreadable_kept(
        "the redis store",
        what,
        key,
        exc,
        otherwise="it names no key, so only deleting it in Redis removes it",
    )


def _q(text: str) -> str:
    return json.dumps(text)


def _get(key: str, r: redis.Redis) -> bytes | None:
    raw: Any = r.get(key)
    return raw if raw is None else bytes(raw)


class _BatchPlan:
    """One script call's worth of a batch: each job's records decided against the state the
    store expects, and the keys and arguments that commit them."""

    def __init__(self, store: RedisStore, ttl: float, nonce: str) -> None:
        self.store, self.keys = store, store.keys
        self.now = store._clock()
        self.ttl, self.nonce = ttl, nonce
        self.jobs: list[str | None] = []
        self.entries: list[dict[str, Any]] = []
        self.redis_keys: list[str] = [
            self.keys.inbox(),
            self.keys.order(),
            self.keys.seq,
            self.keys.active,
            self.keys.owners,
        ]
        self.claimed: set[str] = set()
        self.claim: list[Any] | None = None
        self._decided: dict[str | None, tuple[list[tuple[int, Verdict]], bytes | None]] = {}
        # The states an event changed (entry, job, state): stamped again when committed.
        self._stamped: list[tuple[dict[str, Any], str, JobState]] = []

    def _key(self, name: str) -> int:
        self.redis_keys.append(name)
        return len(self.redis_keys)  # Lua counts from 1

    def add(
        self,
        job_id: str | None,
        records: list[tuple[int, Callable[[JobState | None], Verdict]]],
        held: set[str],
    ) -> None:
        """Decide a job's records in order, as record() would one after another: a key held
        in Redis, or claimed earlier in this plan, is a duplicate and moves nothing."""
        expected = self.store._states.get(job_id) if job_id is not None else None
        state = before = None if expected is None else state_from_json(expected)
        decided: list[tuple[int, Verdict]] = []
        events: list[list[Any]] = []
        changed = False
        expires = seen_value(self.now + self.ttl, self.nonce)
        for index, decide in records:
            verdict = decide(state)
            event = verdict.event
            if event is not None:
                if event.key in held or event.key in self.claimed:
                    decided.append(
                        (index, Verdict(event=None, check=verdict.check, dropped="duplicate"))
                    )
                    continue
                self.claimed.add(event.key)
                events.append(
                    [self._key(self.keys.seen(event.key)), event.key, event.to_json(), expires]
                )
            if verdict.state is not None:
                state, changed = verdict.state, True
            decided.append((index, verdict))
        new = state_to_json(state) if changed and state is not None else ""
        self.jobs.append(job_id)
        entry = {
            "k": self._key(self.keys.job(job_id)) if job_id is not None else 0,
            "exp": (expected or b"").decode(),
            "new": new,
            "ev": events,
            "act": "1" if state is not None and state.watched and not state.terminal else "0",
            "id": "" if job_id is None else job_id,
        }
        self.entries.append(entry)
        self._decided[job_id] = (decided, new.encode() if new else expected)
        if (
            new
            and job_id is not None
            and state is not None
            and (before is None or state.updated_at != before.updated_at)
        ):
            self._stamped.append((entry, job_id, state))

    def take(self, key: str, ttl: float) -> None:
        """Claim ``key`` for ``ttl`` seconds if every job of this call commits."""
        self.claim = [
            self._key(self.keys.claim(key)),
            seen_value(self.now + ttl, self.nonce),
            max(1, math.ceil(ttl)) + _GRACE,
        ]

    def settle(self, job_id: str | None, verdicts: list[Verdict | None]) -> None:
        """The job committed: its verdicts are final, and its state is what Redis holds."""
        decided, saved = self._decided[job_id]
        for index, verdict in decided:
            verdicts[index] = verdict
        self.store._cache(job_id, saved)

    def argument(self) -> str:
        """The script's argument, its states stamped now: it is called once the connection
        is held (after any wait for one, and again on a retry), so that a poll asked while
        the batch waited is older news than what the batch records."""
        now = time.time()
        for entry, job_id, state in self._stamped:
            entry["new"] = new = state_to_json(attrs.evolve(state, updated_at=now))
            self._decided[job_id] = (self._decided[job_id][0], new.encode())
        return json.dumps(
            {
                "now": repr(self.now),
                "ex": max(1, math.ceil(self.ttl)) + _GRACE,
                "nonce": self.nonce,
                "owner": self.store.owner,
                "jobs": self.entries,
                "claim": self.claim or False,
            }
        )


def _commit_batch(plan: _BatchPlan, r: redis.Redis) -> list[list[str]]:
    run = _scripts.script(r, _scripts.COMMIT_BATCH)
    answers: list[list[str]] = json.loads(
        run(keys=plan.redis_keys, args=[plan.argument()], client=r)
    )
    return answers


def _commit(args: list[str | bytes], r: redis.Redis) -> bytes:
    # EVALSHA, loading the script on NOSCRIPT (a restarted Redis has forgotten it).
    outcome: bytes = _scripts.script(r, _scripts.COMMIT)(keys=args[:7], args=args[7:], client=r)
    return outcome
