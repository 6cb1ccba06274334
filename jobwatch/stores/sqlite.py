"""The ``sqlite`` store: the embedded, durable default.

One SQLite file in WAL mode holds dedup keys (with expiry), per-job state, stream checkpoints,
the inbox of recorded-but-undispatched events and dead letters. Every call runs in a worker
thread, one at a time, so the event loop never waits on the disk.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import attrs

from .._config import Config
from .._errors import ConfigError, JobwatchError
from .._events import JobEvent
from .._values import state_from_dict, state_to_dict
from ..abc import JobState, Store, Verdict

__all__ = ["SQLiteOptions", "SQLiteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL,
                                 active INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE,
                                  event TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber TEXT NOT NULL, error TEXT NOT NULL, event TEXT NOT NULL);
"""
_PURGE_EVERY = 4096


@attrs.frozen(kw_only=True)
class SQLiteOptions:
    """``[jobwatch.sqlite]``: ``path`` of the database file; ``synchronous`` is ``normal``
    (survives a process crash) or ``full`` (survives a power loss too, slower)."""

    path: str = ".jobwatch/state.db"
    synchronous: Literal["normal", "full"] = "normal"


class SQLiteStore(Store):
    """A durable store in one SQLite file; ``path=":memory:"`` keeps it in memory."""

    name = "sqlite"

    def __init__(
        self,
        path: str | Path = ".jobwatch/state.db",
        *,
        synchronous: str = "normal",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self._synchronous = synchronous
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._records = 0

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
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"[jobwatch.sqlite] path {self.path!r} is not a usable SQLite database: {exc}"
            ) from None
        self._db = db

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise JobwatchError(f"the sqlite store at {self.path!r} failed: {exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise JobwatchError("the sqlite store is not open; use it inside a Watcher")
        return self._db

    async def record(
        self, job_id: str | None, decide: Callable[[JobState | None], Verdict], *, ttl: float
    ) -> Verdict:
        return await self._run(lambda: self._record(job_id, decide, ttl))

    def _record(
        self, job_id: str | None, decide: Callable[[JobState | None], Verdict], ttl: float
    ) -> Verdict:
        db, now = self.db, self._clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            verdict = decide(None if job_id is None else self._get_job(job_id))
            event = verdict.event
            if event is not None:
                row = db.execute("SELECT expires FROM seen WHERE key=?", (event.key,)).fetchone()
                if row is not None and row[0] > now:
                    db.execute("ROLLBACK")
                    return Verdict(event=None, check=verdict.check, dropped="duplicate")
                db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (event.key, now + ttl))
                db.execute(
                    "INSERT OR REPLACE INTO inbox (key, event) VALUES (?, ?)",
                    (event.key, event.to_json()),
                )
            if verdict.state is not None:
                self._put_job(verdict.state)
            self._maybe_purge(now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return verdict

    def _maybe_purge(self, now: float) -> None:
        self._records += 1
        if self._records % _PURGE_EVERY == 0:
            self.db.execute("DELETE FROM seen WHERE expires <= ?", (now,))

    def _get_job(self, job_id: str) -> JobState | None:
        row = self.db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return None if row is None else state_from_dict(json.loads(row[0]))

    def _put_job(self, state: JobState) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)",
            (state.job_id, json.dumps(state_to_dict(state)), state.watched and not state.terminal),
        )

    async def get_job(self, job_id: str) -> JobState | None:
        return await self._run(lambda: self._get_job(job_id))

    async def put_job(self, state: JobState) -> None:
        await self._run(lambda: self._put_job(state))

    async def active_jobs(self) -> list[JobState]:
        rows = await self._run(
            lambda: self.db.execute("SELECT state FROM jobs WHERE active").fetchall()
        )
        return [state_from_dict(json.loads(r[0])) for r in rows]

    async def pending(self) -> list[JobEvent]:
        rows = await self._run(
            lambda: self.db.execute("SELECT event FROM inbox ORDER BY seq").fetchall()
        )
        return [JobEvent.from_json(r[0]) for r in rows]

    async def ack(self, key: str) -> None:
        await self._run(lambda: self.db.execute("DELETE FROM inbox WHERE key=?", (key,)))

    async def get_checkpoint(self, name: str) -> str | None:
        row = await self._run(
            lambda: self.db.execute(
                "SELECT value FROM checkpoints WHERE name=?", (name,)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def put_checkpoint(self, name: str, value: str) -> None:
        sql = "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)"
        await self._run(lambda: self.db.execute(sql, (name, value)))

    async def dead_letter(self, event: JobEvent, subscriber: str, error: str) -> None:
        await self._run(
            lambda: self.db.execute(
                "INSERT INTO dead_letters (subscriber, error, event) VALUES (?, ?, ?)",
                (subscriber, error, event.to_json()),
            )
        )

    async def dead_letters(self) -> list[tuple[JobEvent, str, str]]:
        """Events whose callback kept failing: (event, subscriber, error), oldest first."""
        rows = await self._run(
            lambda: self.db.execute(
                "SELECT event, subscriber, error FROM dead_letters ORDER BY seq"
            ).fetchall()
        )
        return [(JobEvent.from_json(e), s, err) for e, s, err in rows]
