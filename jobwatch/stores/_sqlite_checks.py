"""What the sqlite store checks when it opens, so that a damaged store never loses events silently.

A store acknowledges webhook deliveries once they are recorded; a store that comes back empty or
short would forget them without a word. Before SQLite reads the files (its own recovery would
quietly drop what is lost), and then with SQLite:

- the database, once created, has a marker beside it (``state.db-store-id``) holding the id
  that the database's ``meta`` table holds too: a database deleted, emptied or replaced while
  the marker stays is refused;
- a write-ahead log (``-wal``) without its database is refused;
- a log shorter than its index (``-shm``) says it is — committed writes cut off — is refused;
- ``PRAGMA quick_check`` must pass, within ``CHECK_SECONDS``.

Each refusal is a :class:`~jobwatch.ConfigError` of one line saying what is wrong and how to
recover (``docs/damaged-store.md``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import time
import uuid
from pathlib import Path

from .._errors import ConfigError

__all__ = [
    "CHECK_SECONDS",
    "GUIDE",
    "check_database",
    "check_files",
    "mark_database",
    "marker_path",
]

log = logging.getLogger("jobwatch.sqlite")

#: Seconds the integrity check may take at open; a larger database is checked only that long.
CHECK_SECONDS = 10.0
GUIDE = "see docs/damaged-store.md"
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_INDEX_VERSION = 3007000


def marker_path(path: str) -> Path:
    """Where the marker of the database at ``path`` lives."""
    return Path(f"{path}-store-id")


def check_files(path: str) -> None:
    """Refuse files that SQLite would open without a word about what they lost."""
    db, wal, shm, marker = Path(path), Path(f"{path}-wal"), Path(f"{path}-shm"), marker_path(path)
    if not _size(db):
        if _size(wal):
            raise _damaged(
                path,
                f"{wal} exists but the database is missing or empty (deleted or "
                f"truncated): the store's latest writes are only in the log. Restore {db} "
                f"from a backup; or, to start with an empty store, delete {wal}, {shm} and "
                f"{marker}",
            )
        if marker.exists():
            raise _damaged(
                path,
                f"the database is missing or empty, but {marker} says a store was "
                "created here: it was deleted, truncated or replaced, and the events it "
                f"recorded would be lost. Restore it from a backup; or, to start with an empty "
                f"store, delete {marker}",
            )
        return
    if _size(wal) is not None and shm.exists():
        _check_log_length(path, wal, shm)


def _check_log_length(path: str, wal: Path, shm: Path) -> None:
    # The index (-shm) records how many frames of the log (-wal) are committed; SQLite, finding
    # fewer, would rebuild the index from what is left and carry on.
    with shm.open("rb") as f:
        index = f.read(96)
    if len(index) < 96 or index[:48] != index[48:]:
        return  # not written, or being written: nothing to compare with
    version, _, _, initialized, _, _, frames = struct.unpack("=IIIBBHI", index[:20])
    if version != _WAL_INDEX_VERSION or not initialized or not frames:
        return
    with wal.open("rb") as f:
        header = f.read(32)
    size = _size(wal) or 0
    if len(header) == 32:
        magic, _, page_size = struct.unpack(">III", header[:12])
        if magic in _WAL_MAGIC and header[16:24] != index[32:40]:
            return  # the index describes an earlier generation of the log
        need = 32 + frames * (24 + page_size) if magic in _WAL_MAGIC else size + 1
    else:
        need = size + 1
    if size < need:
        raise _damaged(
            path,
            f"{wal} is shorter than {shm} says ({size} of at least {need} bytes): "
            "committed writes were cut off. Restore the database and both files from a "
            f"backup; or, to keep the complete writes that remain, delete {shm} and start "
            "again (events in the lost part will not be dispatched)",
        )


def check_database(db: sqlite3.Connection, path: str) -> str | None:
    """Run the integrity check and compare the database's id with its marker; the id (None:
    a new database, or one from before markers)."""
    _quick_check(db, path)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    stored = None
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()
        stored = None if row is None else str(row[0])
    expected = _read_marker(path)
    if expected is not None and stored != expected:
        marker = marker_path(path)
        found = f"id {stored}" if stored else ("no id" if tables else "no tables at all")
        raise _damaged(
            path,
            f"it is not the database this store created ({marker} names {expected}, the "
            f"file holds {found}): it was replaced or emptied, and the events it recorded "
            f"would be lost. Put the right file back; or, to use this one, delete {marker}",
        )
    return stored


def mark_database(db: sqlite3.Connection, path: str, stored: str | None) -> None:
    """Give a database without an id one, and write its marker where it is missing."""
    if stored is None:
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        # OR IGNORE, read back: two processes creating the store at once agree on one id.
        db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
        (stored,) = db.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()
    if _read_marker(path) != stored:
        _write_marker(path, str(stored))


def _quick_check(db: sqlite3.Connection, path: str) -> None:
    deadline = time.monotonic() + CHECK_SECONDS
    db.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
    try:
        (result,) = db.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode != sqlite3.SQLITE_INTERRUPT:
            raise
        log.warning(
            "the integrity check of the sqlite store at %r stopped after %g s (a large "
            "database); it is used unchecked",
            path,
            CHECK_SECONDS,
        )
        return
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_NOTADB:
            raise  # not a database at all: said as such by the caller
        result = str(exc)
    finally:
        db.set_progress_handler(None, 0)
    if result != "ok":
        raise _damaged(
            path,
            f"PRAGMA quick_check reports {result!r}. Salvage what it holds "
            "(sqlite3's .recover), restore a backup, or start with an empty store",
        )


def _read_marker(path: str) -> str | None:
    try:
        text = marker_path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return text.split("\n", 1)[0].strip() or None


def _write_marker(path: str, store_id: str) -> None:
    marker = marker_path(path)
    temporary = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    temporary.write_text(
        f"{store_id}\nThe id of the jobwatch store in {Path(path).name}, which holds the same "
        "id: jobwatch refuses to start if that database is lost, emptied or replaced. Delete "
        "this file only to start afresh, with the database and its -wal and -shm files.\n",
        encoding="utf-8",
    )
    os.replace(temporary, marker)


def _size(file: Path) -> int | None:
    try:
        return file.stat().st_size
    except FileNotFoundError:
        return None


def _damaged(path: str, what: str) -> ConfigError:
    return ConfigError(f"[jobwatch.sqlite] path {path!r} is damaged: {what}; {GUIDE}")
