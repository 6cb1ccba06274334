"""The ``sqlite`` store: the embedded, durable default.

One SQLite file in WAL mode holds dedup keys (with expiry), per-job state, stream checkpoints,
the inbox of recorded-but-undispatched events and dead letters. Calls queue up and run in one
transaction that commits once (a group commit): under load, a burst of webhook deliveries costs
one commit instead of one each, and each call still returns only after its commit.

Where a batch runs:

- **Records** (and the acks riding with them) run on the event loop when ``synchronous`` is
  ``normal``: a WAL commit then writes to the operating system's cache without waiting for the
  disk, which costs less than handing the batch to a thread. A thread would need the GIL after
  each statement, and while the loop is busy it gets it only every few milliseconds, so every
  delivery would wait on the busiest moment of the loop (measured: about 15 % fewer webhook
  deliveries a second). The WAL is checkpointed in the thread, since checkpoints do wait for
  the disk (``RESTART`` where no other connection is in the way, so that processes sharing the
  file cannot keep it growing, followed by the write that starts the WAL over and syncs its
  header; it waits for nobody). A database another process has locked sends the batch to the
  thread too, which waits for the lock there rather than on the loop.
- **A claim's read** (:meth:`~SQLiteStore.claimed`: was this webhook delivery recorded?) runs
  on the event loop at once, outside any batch, unless the thread is using the connection: it
  would otherwise wait for a whole group commit. A delivery's claim is written with its
  records, in their transaction.
- **Everything else**, and every batch when ``synchronous`` is ``full``, runs in the store's own
  thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import anyio
import attrs
import sniffio

from .._config import Config
from .._errors import ConfigError, DecodeError, JobwatchError
from .._events import JobEvent, JobStatus
from .._state import make_state
from ..abc import JobState, Store, Verdict, kept_key, unreadable_kept
from ._sqlite_checks import GUIDE, check_database, check_files, mark_database

__all__ = ["SQLiteOptions", "SQLiteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, run INTEGER NOT NULL,
    status TEXT, completed INTEGER, total INTEGER, started INTEGER NOT NULL,
    terminal INTEGER NOT NULL, watched INTEGER NOT NULL, updated_at REAL NOT NULL,
    active INTEGER NOT NULL, attempt INTEGER);
CREATE TABLE IF NOT EXISTS inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE,
                                  event TEXT NOT NULL, replayed INTEGER);
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber TEXT NOT NULL, error TEXT NOT NULL, event TEXT NOT NULL);
"""
_NOT_OPEN = "the sqlite store is not open; use it inside a Watcher"
_PURGE_EVERY = 4096
_ACK_FLUSH = 256
#: The WAL is checkpointed (in the thread) after this many commits; SQLite's own checkpoint at
#: 1,000 pages would wait for the disk on the event loop.
_CHECKPOINT_EVERY = 128
#: WAL frames (pages) left uncopied by a checkpoint that make the next one come sooner (SQLite's
#: own threshold), and how many commits sooner it then comes.
_LONG_WAL = 1000
_CHECKPOINT_SOON = 16
#: How long a batch in the thread waits for another process's lock (SQLite's busy timeout).
_LOCK_WAIT_MS = 5000
#: How many times a leader lets ready tasks run before it takes the batch (see _gather).
_GATHER_TURNS = 8


@attrs.frozen(kw_only=True)
class SQLiteOptions:
    """``[jobwatch.sqlite]``: ``path`` of the database file; ``synchronous`` is ``normal``
    (survives a process crash) or ``full`` (survives a power loss too, slower)."""

    path: str = ".jobwatch/state.db"
    synchronous: Literal["normal", "full"] = "normal"


class SQLiteStore(Store):
    """A durable store in one SQLite file; ``path=":memory:"`` keeps it in memory."""

    name = "sqlite"
    concurrent = True
    shared = True  # other processes may open the same file and record into it

    def __init__(
        self,
        path: str | Path = ".jobwatch/state.db",
        *,
        synchronous: str = "normal",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self._synchronous = synchronous
        # Commits that do not wait for the disk may run on the event loop (see the module).
        self._on_loop = synchronous.lower() in ("normal", "off")
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._thread = _Thread(f"jobwatch-sqlite {self.path}")
        self._records = 0
        self._commits = 0
        self._purge_due = False
        self._queue: list[_Call[Any]] = []
        self._acks: list[str] = []
        #: Keys of replayed inbox rows this store read or wrote itself: only its acks of
        #: them remove them (see _ACK).
        self._replays: set[str] = set()
        self._leading = False
        self._batch_done: anyio.Event | None = None
        #: Work the thread is doing with the connection (a batch, housekeeping, open/close):
        #: while there is some, nothing else may use it.
        self._in_thread = 0

    @classmethod
    def from_config(cls, config: Config) -> SQLiteStore:
        options = config.options("sqlite", SQLiteOptions)
        return cls(options.path, synchronous=options.synchronous)

    def describe(self) -> Mapping[str, Any]:
        return {"name": self.name, "path": self.path}

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"[jobwatch.sqlite] path {self.path!r}: cannot create its folder: {exc}"
                ) from None
            check_files(self.path)  # before SQLite's own recovery could hide a loss
        try:
            db = sqlite3.connect(
                self.path,
                check_same_thread=False,
                isolation_level=None,
                timeout=_LOCK_WAIT_MS / 1000,
            )
            stored = _closing_on_error(db, check_database, self.path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            db.executescript(_SCHEMA)
            _add_columns(db)
            # Batches on the event loop never wait for a lock (the thread does), and
            # checkpoints run in the thread (see the module's docstring).
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA wal_autocheckpoint = 0")
            _closing_on_error(db, mark_database, self.path, stored)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"[jobwatch.sqlite] path {self.path!r} is not a usable SQLite database: {exc}"
                f"; {GUIDE}"
            ) from None
        self._db = db

    async def aclose(self) -> None:
        if self._db is not None and self._acks:
            with anyio.CancelScope(shield=True):
                await self._tx(lambda: None)
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        await self._thread.stop()

    async def _run(self, fn: Callable[[], T]) -> T:
        # Connection-level work (open, close): alone, outside any batch.
        call = _Call(fn, self.path)
        await self._settle_in_thread(call)
        return call.result()

    async def _settle_in_thread(self, call: _Call[Any]) -> None:
        """Settle ``call`` in the thread, shielded, marking the connection as in use there."""
        self._in_thread += 1
        try:
            with anyio.CancelScope(shield=True):
                await self._thread.run(call.settle)
        finally:
            self._in_thread -= 1

    async def _tx(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside the next group commit; return once that commit is done."""
        return await self._tx_call(_Call(fn, self.path))

    async def _tx_call(self, call: _Call[T]) -> T:
        self._queue.append(call)
        while not call.done:
            if self._leading:
                # Made by the first follower of a batch, on its loop: a store may serve one
                # event loop after another.
                if self._batch_done is None:
                    self._batch_done = anyio.Event()
                await self._batch_done.wait()
                continue
            # No batch is running: this caller runs batches until the queue is empty. A batch
            # once taken always runs to its end (shielded): its callers wait on it, and a
            # cancelled leader must not leave them with calls nobody will run.
            self._leading = True
            try:
                await self._gather()
                while self._queue:
                    batch, self._queue = self._queue, []
                    acks, self._acks = self._acks, []
                    if self._db is None:  # closed: no thread is started again for this
                        self._acks[:0] = acks
                        _not_open(batch)
                        continue
                    try:
                        committed = await self._run_batch(batch, acks)
                    except BaseException as exc:
                        # A bug, or an interrupt on the loop: callers still waiting get it and
                        # no one hangs; an interrupt goes on up once the acks are kept
                        # (deleting a key twice is harmless).
                        _fail(batch, exc)
                        committed = False
                        if not isinstance(exc, Exception):
                            self._acks[:0] = acks
                            raise
                    if not committed:
                        self._acks[:0] = acks  # they wait for the next batch
                    self._wake_followers()
                    if self._commits >= _CHECKPOINT_EVERY or self._purge_due:
                        await self._maintain()
            finally:
                self._leading = False
                self._wake_followers()
        return call.result()

    async def _gather(self) -> None:
        """Let ready tasks run first, ``_GATHER_TURNS`` times, before taking the batch.

        Those about to call the store then join this batch instead of waiting for the next
        one: a webhook delivery reaches the store a few turns of the loop after its request
        arrives. (With one turn, under steady load, batches alternate between one call and
        all the others; stopping at the first turn in which nobody joined measured 54 % of
        the bare endpoint's rate, 4 to 12 turns 65–66 %.) Shielded: the batch is taken
        whatever happens to the leader.
        """
        for _ in range(_GATHER_TURNS):
            await anyio.lowlevel.cancel_shielded_checkpoint()

    async def _run_batch(self, batch: list[_Call[Any]], acks: list[str]) -> bool:
        """Commit a batch on the loop or in the thread (see the module); True if it committed."""
        if self._on_loop and all(call.records is not None or call.quick for call in batch):
            commit = _Call(functools.partial(self._commit, batch, acks, on_loop=True), self.path)
            commit.settle()
            try:
                return commit.result()
            except _Locked:  # another process holds the database: wait for it in the thread
                pass
        commit = _Call(functools.partial(self._commit, batch, acks, on_loop=False), self.path)
        await self._settle_in_thread(commit)
        return commit.result()

    async def _maintain(self) -> None:
        """In the thread, between batches: drop expired keys when due, checkpoint the WAL.

        Nothing here waits for another connection: a reader or writer in the way (a backup,
        another process) makes the work wait for a later turn instead of stalling the batches.
        """
        if self._db is None:  # closed meanwhile
            return
        purge, self._purge_due = self._purge_due, False
        call = _Call(functools.partial(self._housekeeping, purge), self.path)
        await self._settle_in_thread(call)
        try:
            purged, left = call.result()
        except JobwatchError as exc:  # the next turn may succeed; meanwhile the files only grow
            logging.getLogger("jobwatch.sqlite").warning("%s", exc)
            purged, left = True, 0
        self._purge_due = self._purge_due or not purged
        # While the WAL stays long (other processes writing, a reader holding old pages), try
        # again sooner than usual.
        self._commits = _CHECKPOINT_EVERY - _CHECKPOINT_SOON if left >= _LONG_WAL else 0

    def _housekeeping(self, purge: bool) -> tuple[bool, int]:
        """Purge, checkpoint and restart the WAL, where no lock is in the way.

        Returns whether the purge (if due) was done, and the WAL frames left uncopied.
        """
        db = self.db
        purged = True
        if purge:
            now = self._clock()
            purged = _unless_locked(
                db, "DELETE FROM seen WHERE expires <= ?", (now,)
            ) and _unless_locked(db, "DELETE FROM claims WHERE expires <= ?", (now,))
        # RESTART: with the writers' lock free, copy everything, so that processes sharing
        # the file cannot keep the WAL growing; with it taken, as much as possible.
        _, frames, copied = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        if frames > 0 and copied == frames:
            # Fully copied: the next write starts the WAL over and syncs its header. Make
            # that write here, so that no commit on the loop waits for the disk.
            (version,) = db.execute("PRAGMA user_version").fetchone()
            _unless_locked(db, f"PRAGMA user_version = {int(version)}", ())
        return purged, max(int(frames) - int(copied), 0)

    def _wake_followers(self) -> None:
        if self._batch_done is not None:
            self._batch_done.set()
            self._batch_done = None

    def _commit(self, batch: list[_Call[Any]], acks: list[str], *, on_loop: bool) -> bool:
        """Run a batch in one transaction; True if it committed.

        On the loop, a database another process has locked raises :class:`_Locked` with
        nothing written and no call settled; in the thread, the batch waits up to
        ``_LOCK_WAIT_MS`` for it.
        """
        try:
            try:
                self._transaction(batch, acks, careful=False, on_loop=on_loop)
            except _CallFailed:
                # One call raised: run the batch again, each call in a savepoint of its own,
                # so that only the failing call loses its writes.
                # (Locked meanwhile by another process, on the loop: the whole batch runs
                # again in the thread, each pass starting its calls afresh.)
                self._transaction(batch, acks, careful=True, on_loop=on_loop)
        except _Locked:
            raise
        except BaseException as exc:
            # Nothing of the batch was committed: every call in it fails (with the error
            # itself when it is not a plain Exception), and the acks wait for the next batch.
            _fail(
                batch,
                exc
                if isinstance(exc, JobwatchError) or not isinstance(exc, Exception)
                else _failed(self.path, exc),
            )
            return False
        self._commits += 1
        for call in batch:
            call.done = True
        return True

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise JobwatchError(_NOT_OPEN)
        return self._db

    def _transaction(
        self, batch: list[_Call[Any]], acks: list[str], *, careful: bool, on_loop: bool
    ) -> None:
        db = self.db
        for call in batch:  # a batch that runs again starts from nothing
            call.reset()
        try:
            _begin(db, on_loop)
            if acks:
                mine = [key for key in acks if key in self._replays]
                db.execute(_ACK, (json.dumps(acks), json.dumps(mine)))
            if careful:
                for call in batch:
                    call.run_in(db)
            else:
                for run in _runs(batch):
                    if isinstance(run, list):
                        try:
                            self._record_all(run)
                        except Exception as exc:  # run again a call at a time: who failed?
                            raise _CallFailed from exc
                    else:
                        run.run(db)
            db.execute("COMMIT")
            self._replays.difference_update(acks)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    async def record(
        self, job_id: str | None, decide: Callable[[JobState | None], Verdict], *, ttl: float
    ) -> Verdict:
        return (await self._record_batch([(job_id, decide)], ttl))[0]

    async def record_batch(
        self,
        records: Sequence[tuple[str | None, Callable[[JobState | None], Verdict]]],
        *,
        ttl: float,
        claim: tuple[str, float] | None = None,
    ) -> list[Verdict]:
        """Record the batch in one group commit (with whatever else is queued); ``claim`` is
        written in the same transaction."""
        if type(self).record is not SQLiteStore.record:  # a subclass's record sees every event
            return await super().record_batch(records, ttl=ttl, claim=claim)
        return await self._record_batch(records, ttl, claim)

    async def _record_batch(
        self,
        records: Sequence[tuple[str | None, Callable[[JobState | None], Verdict]]],
        ttl: float,
        claim: tuple[str, float] | None = None,
    ) -> list[Verdict]:
        call: _Call[list[Verdict]] = _Call(lambda: self._record_alone(call), self.path)
        call.records = [(job_id, decide, ttl) for job_id, decide in records]
        call.claim = claim
        return await self._tx_call(call)

    def _record_all(self, calls: list[_Call[list[Verdict]]]) -> None:
        """Record the calls of a run, in order, in a few statements.

        The same outcome as recording each record in turn, with far fewer trips into SQLite:
        each one hands the GIL to the event loop and back, which under load costs more than
        the statement (measured: about 20 % more webhook deliveries a second). The records
        are decided in order against the states read at once; whether their keys were
        claimed before is asked for all of them at once, and only a key found claimed makes
        them decided again (a duplicate leaves its job's state as it was). The calls' claims
        (webhook deliveries' identities) are written with them. A ``decide`` that raises
        makes the run fail (and run again a call at a time, see ``_transaction``).
        """
        db, now = self.db, self._clock()
        jobs = list(
            {job_id for c in calls for job_id, _, _ in c.records or () if job_id is not None}
        )
        states: dict[str | None, JobState] = {}
        if jobs:
            states = {row[0]: _state(row) for row in db.execute(_STATES, (json.dumps(jobs),))}
        live: set[str] = set()
        asked: set[str] = set()
        while True:
            outcome = _decide_run(calls, states, live, now)
            keys = [key for key in outcome.claims if key not in asked]
            if not keys:
                break
            asked.update(keys)
            (found,) = db.execute(_LIVE, (json.dumps(keys), now)).fetchone()
            claimed = json.loads(found)
            if not claimed:
                break  # the run took those keys as free, and they are
            live.update(claimed)
        for call, verdicts in zip(calls, outcome.verdicts, strict=True):
            call.settled(verdicts)
        self._records += len(outcome.claims)
        if self._records >= _PURGE_EVERY:
            self._records = 0
            self._purge_due = True  # a full scan: in the thread, after this batch
        # Numbers are bound, never passed through SQLite's JSON, which rounds floats.
        if outcome.claims:
            db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?)", outcome.claims.items())
            # REPLACE gives a re-recorded key a new row at the end of the inbox.
            # Bound, not passed as JSON: SQLite would parse every event's text again.
            db.executemany(
                "INSERT OR REPLACE INTO inbox (key, event) VALUES (?, ?)",
                [(event.key, event.to_json()) for event in outcome.inbox],
            )
        if outcome.states:
            db.executemany(_PUT_JOB, [_job_row(state) for state in outcome.states.values()])
        claims = [(c.claim[0], now + c.claim[1], now) for c in calls if c.claim is not None]
        if claims:
            db.executemany(_CLAIM, claims)
            self._records += len(claims)

    def _record_alone(self, call: _Call[list[Verdict]]) -> list[Verdict]:
        # A batch that failed runs again a call at a time: a record is then a run of one.
        self._record_all([call])
        return call.result()

    def _get_job(self, job_id: str) -> JobState | None:
        row = self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)
        ).fetchone()
        return None if row is None else _state(row)

    def _put_job(self, state: JobState) -> None:
        self.db.execute(_PUT_JOB, _job_row(state))

    async def claimed(self, key: str) -> bool:
        """Whether ``key`` is claimed: one read, on the event loop, without waiting for a
        group commit (a batch on the loop never holds the connection across an ``await``),
        unless the thread is using the connection or the read meets a lock."""

        def read() -> bool:
            return self.db.execute(_CLAIMED, (key, self._clock())).fetchone() is not None

        if self._on_loop and not self._in_thread and self._db is not None:
            try:
                return read()
            except sqlite3.Error as exc:
                if not _busy(exc):
                    raise _failed(self.path, exc) from exc
        # In the next batch: one another process has locked the database runs in the thread,
        # which waits for the lock.
        return await self._quick(read)

    async def claim(self, key: str, *, ttl: float) -> bool:
        def claim() -> bool:
            now = self._clock()
            taken = self.db.execute(_CLAIM, (key, now + ttl, now)).rowcount
            self._records += 1
            return bool(taken)

        return await self._quick(claim)

    async def _quick(self, fn: Callable[[], T]) -> T:
        # A statement or two that waits for nothing: in the group commit, on the loop like
        # the records it joins (any other call sends the whole batch to the thread).
        call = _Call(fn, self.path)
        call.quick = True
        return await self._tx_call(call)

    async def get_job(self, job_id: str) -> JobState | None:
        return await self._tx(lambda: self._get_job(job_id))

    async def put_job(self, state: JobState) -> None:
        await self._tx(lambda: self._put_job(state))

    async def active_jobs(self) -> list[JobState]:
        rows = await self._tx(
            lambda: self.db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE active").fetchall()
        )
        return [_state(row) for row in rows]

    async def pending(self) -> list[JobEvent]:
        rows = await self._tx(
            lambda: self.db.execute(
                "SELECT key, event, replayed FROM inbox ORDER BY seq"
            ).fetchall()
        )
        events = [self._stored(raw, "the undelivered event", key) for key, raw, _ in rows]
        self._replays.update(key for key, _, replayed in rows if replayed)
        return events

    async def ack(self, key: str) -> None:
        await self._ack((key,))

    async def ack_batch(self, keys: Sequence[str]) -> None:
        if type(self).ack is not SQLiteStore.ack:  # a subclass's ack sees every key
            return await super().ack_batch(keys)
        await self._ack(keys)

    async def _ack(self, keys: Sequence[str]) -> None:
        # Acks ride along with the next group commit: until then the events would only be
        # replayed once more after a crash, which at-least-once dispatch allows anyway.
        self._acks += keys
        if len(self._acks) >= _ACK_FLUSH:
            # An empty run of records: a commit that carries the acks, on the loop like the
            # records it joins (any other call would send the whole batch to the thread).
            await self._record_batch([], 0.0)

    async def get_checkpoint(self, name: str) -> str | None:
        row = await self._tx(
            lambda: self.db.execute(
                "SELECT value FROM checkpoints WHERE name=?", (name,)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def put_checkpoint(self, name: str, value: str) -> None:
        sql = "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)"
        await self._tx(lambda: self.db.execute(sql, (name, value)))

    async def dead_letter(self, event: JobEvent, subscriber: str, error: str) -> None:
        await self._tx(
            lambda: self.db.execute(
                "INSERT INTO dead_letters (subscriber, error, event) VALUES (?, ?, ?)",
                (subscriber, error, event.to_json()),
            )
        )

    async def dead_letters(self) -> list[tuple[JobEvent, str, str]]:
        """Events whose callback kept failing: (event, subscriber, error), oldest first."""
        rows = await self._tx(
            lambda: self.db.execute(
                "SELECT event, subscriber, error FROM dead_letters ORDER BY seq"
            ).fetchall()
        )
        return [(self._stored(e, "the dead letter"), s, err) for e, s, err in rows]

    async def replay_dead_letter(self, key: str) -> bool:
        def move() -> bool:
            found = self._dead_letters_of(key)
            if not found:
                return False
            self._stored(found[-1][1], "the dead letter")  # the inbox must read it back
            self.db.executemany(
                "DELETE FROM dead_letters WHERE seq=?", [(seq,) for seq, _ in found]
            )
            self.db.execute(
                "INSERT OR REPLACE INTO inbox (key, event, replayed) VALUES (?, ?, 1)",
                (key, found[-1][1]),
            )
            return True

        if not await self._tx(move):
            return False
        self._replays.add(key)
        return True

    async def drop(self, key: str) -> bool:
        def forget() -> bool:
            found = self._dead_letters_of(key)
            self.db.executemany(
                "DELETE FROM dead_letters WHERE seq=?", [(seq,) for seq, _ in found]
            )
            return bool(found) | (
                self.db.execute("DELETE FROM inbox WHERE key=?", (key,)).rowcount > 0
            )

        return await self._tx(forget)

    def _dead_letters_of(self, key: str) -> list[tuple[int, str]]:
        # Events are kept as JSON: few dead letters, so they are read rather than indexed.
        # (Matched by the key its JSON holds: one this jobwatch cannot read can still go.)
        rows = self.db.execute("SELECT seq, event FROM dead_letters ORDER BY seq").fetchall()
        return [(seq, raw) for seq, raw in rows if kept_key(raw) == key]

    def _stored(self, raw: str, what: str, key: str | None = None) -> JobEvent:
        """An event this store kept, or a DecodeError naming it and the way out."""
        try:
            return JobEvent.from_json(raw)
        except DecodeError as exc:
            raise unreadable_kept(
                f"the sqlite store at {self.path}",
                what,
                key or kept_key(raw),
                exc,
                otherwise="it names no key, so only a new store file leaves it behind",
            ) from None


_JOB_COLUMNS = (
    "job_id, run, status, completed, total, started, terminal, watched, updated_at, attempt"
)
# Columns named: a file from before `attempt` existed has it last, after `active`.
_PUT_JOB = (
    f"INSERT OR REPLACE INTO jobs ({_JOB_COLUMNS}, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A run of records reads and writes its texts with one statement each, passed as one JSON array.
_STATES = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id IN (SELECT value FROM json_each(?1))"
_LIVE = (
    "SELECT json_group_array(key) FROM seen "
    "WHERE key IN (SELECT value FROM json_each(?1)) AND expires > ?2"
)
# A Watcher's ack waits for its next commit, and may come after a dead letter of the same
# event was replayed by another process (`jobwatch inbox replay` while the service runs):
# a replayed row is removed only by the acks of a store that read or replayed it itself.
_ACK = (
    "DELETE FROM inbox WHERE key IN (SELECT value FROM json_each(?1)) "
    "AND (replayed IS NULL OR key IN (SELECT value FROM json_each(?2)))"
)
# A claim is taken only where no live claim holds it: one statement, so atomic.
_CLAIM = (
    "INSERT INTO claims VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET "
    "expires = ?2 WHERE expires <= ?3"
)
_CLAIMED = "SELECT 1 FROM claims WHERE key=? AND expires > ?"
_STATUSES = {status.value: status for status in JobStatus}


def _closing_on_error(db: sqlite3.Connection, check: Callable[..., T], *args: Any) -> T | None:
    """An open-time check of ``db`` (:mod:`._sqlite_checks`); the connection closes if it
    raises. Checks skip ``:memory:``."""
    if db.execute("PRAGMA database_list").fetchone()[2] == "":
        return None  # in memory: nothing on disk to check
    try:
        return check(db, *args)
    except BaseException:
        db.close()
        raise


def _job_row(state: JobState) -> tuple[Any, ...]:
    return (
        state.job_id,
        state.run,
        None if state.status is None else state.status.value,
        state.completed,
        state.total,
        state.started,
        state.terminal,
        state.watched,
        state.updated_at,
        state.attempt,
        state.watched and not state.terminal,
    )


def _state(row: tuple[Any, ...]) -> JobState:
    """A job's state from its row: ``JobState(...)``, built through the slots' own setters
    (every job of every batch is read back), with statuses looked up by value."""
    job_id, run, status, completed, total, started, terminal, watched, updated_at, attempt = row
    return make_state(
        job_id,
        run,
        attempt,
        None if status is None else _STATUSES.get(status) or JobStatus(status),
        completed,
        total,
        bool(started),
        bool(terminal),
        bool(watched),
        updated_at,
    )


def _add_columns(db: sqlite3.Connection) -> None:
    """Add the columns a file written by an older jobwatch lacks (``jobs.attempt``,
    ``inbox.replayed``)."""
    for table, column in (("jobs", "attempt"), ("inbox", "replayed")):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column in columns:
            continue
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it meanwhile
                raise


class _Thread:
    """The store's own worker thread: runs one function at a time, in order, off the loop.

    A trip costs one wake-up each way, a fraction of a general-purpose worker pool's, which
    matters when every webhook delivery waits for one.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._work: _WorkQueue = queue.SimpleQueue()
        self._finalizer: weakref.finalize[..., Any] | None = None

    async def run(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the thread and wait until it returns; ``fn`` handles its errors."""
        if self._thread is None or not self._thread.is_alive():
            # A queue of its own: no thread ever takes another's work or its stop signal.
            self._work = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=_serve, args=(self._work,), name=self._name, daemon=True
            )
            self._thread.start()
            # A store dropped without aclose() lets its thread end with it.
            if self._finalizer is not None:
                self._finalizer.detach()
            self._finalizer = weakref.finalize(self, self._work.put, None)
        done = anyio.Event()
        self._work.put((fn, _from_thread(done.set)))
        interrupted: BaseException | None = None
        while not done.is_set():
            try:
                await done.wait()
            except BaseException as exc:
                # Cancelled natively (asyncio.wait_for, say: anyio's shields do not stop
                # that) or interrupted: the thread is still using the connection, so wait
                # for it, or the next batch would run inside this one's transaction.
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted

    async def stop(self) -> None:
        """Let the thread end once its work is done."""
        if self._finalizer is not None:
            self._finalizer.detach()  # one per thread, not one per store's lifetime
            self._finalizer = None
        if self._thread is not None:
            thread, self._thread = self._thread, None
            self._work.put(None)
            await anyio.to_thread.run_sync(thread.join)


_WorkQueue = queue.SimpleQueue[tuple[Callable[[], object], Callable[[], object]] | None]


def _serve(work: _WorkQueue) -> None:
    while (item := work.get()) is not None:
        _serve_one(*item)
        del item  # holding the last work while waiting would keep its store alive


def _serve_one(fn: Callable[[], object], done: Callable[[], object]) -> None:
    try:
        fn()
    except BaseException:  # fn's own bug: say so, and still answer its caller
        logging.getLogger("jobwatch.sqlite").exception("the sqlite store's work failed")
    finally:
        try:
            done()
        except Exception:  # the loop that waited has ended; nobody is left to wake
            pass


def _from_thread(callback: Callable[[], None]) -> Callable[[], object]:
    """A function that any thread may call to run ``callback`` soon on the running loop."""
    if sniffio.current_async_library() == "trio":
        import trio

        return functools.partial(trio.lowlevel.current_trio_token().run_sync_soon, callback)
    return functools.partial(asyncio.get_running_loop().call_soon_threadsafe, callback)


def _runs(batch: list[_Call[Any]]) -> list[_Call[Any] | list[_Call[Any]]]:
    """The batch with each stretch of records gathered into one list."""
    out: list[_Call[Any] | list[_Call[Any]]] = []
    run: list[_Call[Any]] = []
    for call in batch:
        if call.records is None:  # another kind of call: what it reads or writes comes between
            if run:
                out.append(run)
                run = []
            out.append(call)
        else:
            run.append(call)
    if run:
        out.append(run)
    return out


@attrs.define
class _Outcome:
    """A run of records decided in order: each call's verdicts, the keys claimed (with
    their expiry), the events for the inbox in order, and each job's last state."""

    verdicts: list[list[Verdict]] = attrs.Factory(list)
    claims: dict[str, float] = attrs.Factory(dict)
    inbox: list[JobEvent] = attrs.Factory(list)
    states: dict[str, JobState] = attrs.Factory(dict)


def _decide_run(
    calls: list[_Call[list[Verdict]]],
    saved: Mapping[str | None, JobState],
    live: set[str],
    now: float,
) -> _Outcome:
    """Decide every record of ``calls`` in order, as :meth:`Store.record` would one after
    another, taking keys in ``live`` and those claimed earlier in the run as seen."""
    outcome = _Outcome()
    states = dict(saved)
    claims, inbox, new_states = outcome.claims, outcome.inbox, outcome.states
    for call in calls:
        verdicts: list[Verdict] = []
        for job_id, decide, ttl in call.records or ():
            verdict = decide(None if job_id is None else states.get(job_id))
            event = verdict.event
            if event is not None:
                if event.key in live or event.key in claims:
                    verdicts.append(Verdict(event=None, check=verdict.check, dropped="duplicate"))
                    continue
                claims[event.key] = now + ttl
                inbox.append(event)
            state = verdict.state
            if state is not None:
                states[state.job_id] = new_states[state.job_id] = state
            verdicts.append(verdict)
        outcome.verdicts.append(verdicts)
    return outcome


def _unless_locked(db: sqlite3.Connection, sql: str, parameters: tuple[Any, ...]) -> bool:
    """Run a statement on its own unless another connection holds the lock; True if run."""
    try:
        db.execute(sql, parameters)
    except sqlite3.OperationalError as exc:
        if _busy(exc):
            return False
        raise
    return True


def _busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because another connection holds the lock: SQLITE_BUSY or one
    of its extended codes (a WAL being recovered, a stale snapshot), which Python reports."""
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == sqlite3.SQLITE_BUSY


def _begin(db: sqlite3.Connection, on_loop: bool) -> None:
    """BEGIN IMMEDIATE: on the loop, raise _Locked rather than wait for another process."""
    if on_loop:
        if not _unless_locked(db, "BEGIN IMMEDIATE", ()):
            raise _Locked
        return
    db.execute(f"PRAGMA busy_timeout = {_LOCK_WAIT_MS}")
    try:
        db.execute("BEGIN IMMEDIATE")
    finally:
        db.execute("PRAGMA busy_timeout = 0")


def _not_open(batch: list[_Call[Any]]) -> None:
    _fail(batch, JobwatchError(_NOT_OPEN))


def _failed(path: object, error: Exception) -> JobwatchError:
    """What a caller of the store sees of an error of SQLite's."""
    message = f"the sqlite store at {path!r} failed: {error}"
    if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
        message += (
            f"; another process held the file's lock for over {_LOCK_WAIT_MS / 1000:g} s (a "
            "sqlite3 shell or a database tool with a transaction open on it, or a process "
            "stopped mid-commit): end that transaction or stop that process, then try again"
        )
    return JobwatchError(message)


def _fail(batch: list[_Call[Any]], error: BaseException) -> None:
    for call in batch:
        if not call.done:
            call.fail(error)
            call.done = True


class _Locked(Exception):
    """Another connection holds the database's write lock; the batch has not started."""


class _CallFailed(Exception):
    """A call of a batch raised; the batch is run again with a savepoint per call."""


class _Call(Generic[T]):
    """One store call waiting for its group commit."""

    def __init__(self, fn: Callable[[], T], path: str) -> None:
        self.fn = fn
        self.path = path
        self.done = False
        #: (job_id, decide, ttl) of each event of a record_batch() call, which a batch runs
        #: with its neighbours.
        self.records: (
            list[tuple[str | None, Callable[[JobState | None], Verdict], float]] | None
        ) = None
        #: (key, ttl) of a record_batch() call's claim, written with its records.
        self.claim: tuple[str, float] | None = None
        #: A call that may run on the event loop with the records (it waits for nothing).
        self.quick = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def run(self, db: sqlite3.Connection) -> None:
        """Run without a savepoint; a failure aborts the batch (which then runs carefully)."""
        try:
            self._value = self.fn()
        except Exception as exc:
            raise _CallFailed from exc

    def settle(self) -> None:
        """Run alone, outside any transaction, keeping the outcome for :meth:`result`."""
        try:
            self._value = self.fn()
        except BaseException as exc:  # raised again by result(), in the caller's task
            self._error = exc
        self.done = True

    def run_in(self, db: sqlite3.Connection) -> None:
        # A savepoint per call: a call that raises undoes only its own writes.
        db.execute("SAVEPOINT call")
        try:
            self._value = self.fn()
        except Exception as exc:
            db.execute("ROLLBACK TO call")
            self._error = exc
        db.execute("RELEASE call")

    def reset(self) -> None:
        self._value = None
        self._error = None

    def fail(self, error: BaseException) -> None:
        self._error = error

    def settled(self, value: T) -> None:
        self._value = value

    def result(self) -> T:
        if self._error is not None:
            if isinstance(self._error, sqlite3.Error):
                raise _failed(self.path, self._error) from self._error
            raise self._error
        return self._value  # type: ignore[return-value]
