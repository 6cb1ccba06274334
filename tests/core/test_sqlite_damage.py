"""A damaged sqlite store is refused at open with one line saying what is wrong and how to
recover; an undamaged one, even one left by a crash, opens with every event it recorded."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from jobwatch import ConfigError
from jobwatch._guard import decide
from jobwatch.stores import _sqlite_checks
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import make_event

pytestmark = pytest.mark.anyio

EVENTS = 200


async def _recorded(path: Path, count: int = EVENTS, *, crash_copy: Path | None = None) -> None:
    """Record ``count`` events in the store at ``path``; with ``crash_copy``, copy its files
    there while it is still open (what a SIGKILL leaves: the log and its index), then close."""
    store = SQLiteStore(path)
    await store.open()
    for n in range(count):
        event = make_event(
            "page", f"job_{n % 7}", url=f"https://example.com/{n}", data={"markdown": "x" * 200}
        )
        await store.record(event.job_id, functools.partial(decide, event=event), ttl=600)
    if crash_copy is not None:
        _copy_folder(path.parent, crash_copy)
    await store.aclose()


def _copy_folder(folder: Path, to: Path) -> None:
    to.mkdir()
    for file in folder.iterdir():
        shutil.copy(file, to / file.name)


def _truncate(file: Path, size: int = 0, *, half: bool = False) -> None:
    with file.open("r+b") as f:
        f.truncate(file.stat().st_size // 2 if half else size)


def _committed_frames(shm: Path) -> int:
    """The frames of the log its index says are committed (the WAL index header's mxFrame)."""
    (frames,) = struct.unpack("=I", shm.read_bytes()[16:20])
    return int(frames)


async def _pending(path: Path) -> int:
    store = SQLiteStore(path)
    await store.open()
    try:
        return len(await store.pending())
    finally:
        await store.aclose()


async def _refused(path: Path, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as caught:
        await SQLiteStore(path).open()
    message = str(caught.value)
    assert "\n" not in message and "docs/damaged-store.md" in message
    return message


# -- what must not be refused ------------------------------------------------------------------


async def test_a_store_left_by_a_crash_opens_with_every_event(tmp_path: Path) -> None:
    await _recorded(tmp_path / "live" / "state.db", crash_copy=tmp_path / "crashed")
    crashed = tmp_path / "crashed" / "state.db"
    assert _committed_frames(Path(f"{crashed}-shm")) > 0
    assert await _pending(crashed) == EVENTS
    assert await _pending(crashed) == EVENTS  # and again, once SQLite has tidied up


async def test_a_store_reopened_after_a_clean_close_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _recorded(path)
    assert _sqlite_checks.marker_path(str(path)).exists()
    assert await _pending(path) == EVENTS


async def test_a_store_from_before_markers_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _recorded(path, 3)
    _sqlite_checks.marker_path(str(path)).unlink()
    assert await _pending(path) == 3
    assert _sqlite_checks.marker_path(str(path)).exists()


# -- what must be refused, and how each is recovered ------------------------------------------


async def test_a_database_truncated_to_zero_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _recorded(path)
    path.write_bytes(b"")
    await _refused(path, "missing or empty.*Restore it from a backup")
    # Recovery as the message says: delete the marker to start with an empty store.
    _sqlite_checks.marker_path(str(path)).unlink()
    assert await _pending(path) == 0


async def test_a_deleted_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _recorded(path, 3)
    path.unlink()
    await _refused(path, "missing or empty")


async def test_a_log_without_its_database_is_refused(tmp_path: Path) -> None:
    await _recorded(tmp_path / "live" / "state.db", crash_copy=tmp_path / "crashed")
    crashed = tmp_path / "crashed" / "state.db"
    crashed.write_bytes(b"")
    await _refused(crashed, "state.db-wal exists but the database is missing or empty")
    crashed.unlink()
    await _refused(crashed, "state.db-wal exists but the database is missing or empty")


async def test_a_log_cut_in_half_is_refused(tmp_path: Path) -> None:
    await _recorded(tmp_path / "live" / "state.db", crash_copy=tmp_path / "crashed")
    crashed = tmp_path / "crashed" / "state.db"
    _truncate(Path(f"{crashed}-wal"), half=True)
    await _refused(crashed, r"state.db-wal is shorter than .*state.db-shm says")
    # Recovery, keeping what remains: without the index SQLite keeps the complete writes.
    os.remove(f"{crashed}-shm")
    assert 0 < await _pending(crashed) < EVENTS


async def test_a_log_cut_at_a_frame_boundary_is_refused(tmp_path: Path) -> None:
    await _recorded(tmp_path / "live" / "state.db", crash_copy=tmp_path / "crashed")
    crashed = tmp_path / "crashed" / "state.db"
    committed = _committed_frames(Path(f"{crashed}-shm"))
    _truncate(Path(f"{crashed}-wal"), 32 + (committed - 1) * (24 + 4096))
    await _refused(crashed, "shorter than")


async def test_a_zeroed_page_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _recorded(path)
    pages = path.stat().st_size // 4096
    assert pages > 4
    with path.open("r+b") as f:
        f.seek((pages - 2) * 4096)
        f.write(bytes(4096))
    await _refused(path, "PRAGMA quick_check reports")


async def test_a_database_of_another_store_is_refused(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours" / "state.db", tmp_path / "theirs" / "state.db"
    await _recorded(ours, 3)
    await _recorded(theirs, 1)
    shutil.copy(theirs, ours)
    await _refused(ours, "not the database this store created")


async def test_the_integrity_check_is_bounded_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    await _recorded(path)
    monkeypatch.setattr(_sqlite_checks, "CHECK_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING, "jobwatch.sqlite"):
        assert await _pending(path) == EVENTS
    assert "integrity check" in caplog.text and "stopped after" in caplog.text


def test_listen_refuses_a_damaged_store_before_it_listens(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    config = tmp_path / "jobwatch.toml"
    config.write_text(
        '[jobwatch]\nstore = "sqlite"\nsafety_poll = 0\n'
        f"[jobwatch.sqlite]\npath = {str(db)!r}\n"
        '[jobwatch.webhook]\nlisten = "127.0.0.1:0"\nsecrets = ["s3cret"]\n'
    )
    import anyio

    anyio.run(_recorded, db, 50)
    pages = db.stat().st_size // 4096
    with db.open("r+b") as f:
        f.seek((pages - 2) * 4096)
        f.write(bytes(4096))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jobwatch", "listen", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"listen ran with a damaged store: {exc.stdout!r}") from None
    assert "listening on" not in done.stdout
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "is damaged" in line and "quick_check" in line
