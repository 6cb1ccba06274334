"""The sqlite store's own thread and group commit (its contract is in test_store_machine.py)."""

from __future__ import annotations

import asyncio
import functools
import gc
import sqlite3
import threading
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwatch import JobEvent, JobwatchError
from jobwatch._guard import decide
from jobwatch.abc import JobState, Store, Verdict
from jobwatch.stores import sqlite as sqlite_store
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import _CHECKPOINT_EVERY, SQLiteStore
from jobwatch.testing import make_event


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jobwatch-sqlite")]


@pytest.mark.anyio
async def test_calls_that_arrive_together_share_one_commit() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    commits: list[int] = []
    commit = store._commit

    def counting(batch: list, acks: list[str], **where: bool) -> bool:  # type: ignore[type-arg]
        commits.append(len(batch))
        return commit(batch, acks, **where)

    store._commit = counting  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(store.put_job, JobState(job_id=f"job_{n}", watched=True))
    assert commits == [20]
    assert len(await store.active_jobs()) == 20
    await store.aclose()


@pytest.mark.anyio
async def test_closing_the_store_ends_its_thread() -> None:
    before = len(_store_threads())
    store = SQLiteStore(":memory:")
    await store.open()
    assert len(_store_threads()) == before + 1
    await store.aclose()
    assert len(_store_threads()) == before


@pytest.mark.parametrize("backends", [("trio", "asyncio"), ("asyncio", "trio")])
def test_one_store_serves_event_loops_one_after_another(
    tmp_path: Path, backends: tuple[str, str]
) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    first, second = backends

    async def write(prefix: str) -> None:
        async with anyio.create_task_group() as tg:  # calls that wait for one another's batch
            for n in range(5):
                tg.start_soon(store.put_job, JobState(job_id=f"{prefix}{n}", watched=True))

    async def first_loop() -> None:
        await store.open()
        await write("a")

    async def second_loop() -> list[JobState]:
        try:
            await write("b")
            return await store.active_jobs()
        finally:
            await store.aclose()

    anyio.run(first_loop, backend=first)
    states = anyio.run(second_loop, backend=second)
    assert sorted(s.job_id for s in states) == [f"{p}{n}" for p in "ab" for n in range(5)]


class Interrupted(BaseException):
    """Not an Exception: what a KeyboardInterrupt-like failure inside a call looks like."""


@pytest.mark.anyio
async def test_a_call_that_raises_a_base_exception_fails_its_caller_without_a_hang() -> None:
    def clock() -> float:
        raise Interrupted

    store = SQLiteStore(":memory:", clock=clock)
    await store.open()
    with anyio.fail_after(5), pytest.raises(Interrupted):
        await store.record("job_1", lambda state: pytest.fail("not reached"), ttl=60)
    await store.put_job(JobState(job_id="job_1", watched=True))  # the store still works
    assert [s.job_id for s in await store.active_jobs()] == ["job_1"]
    await store.aclose()


@pytest.mark.anyio
async def test_a_call_after_closing_fails_and_starts_no_thread() -> None:
    before = len(_store_threads())
    store = SQLiteStore(":memory:")
    await store.open()
    await store.aclose()
    with pytest.raises(JobwatchError, match="not open"):
        await store.put_job(JobState(job_id="job_1", watched=True))
    assert len(_store_threads()) == before


@pytest.mark.anyio
async def test_a_store_dropped_without_closing_lets_its_thread_end() -> None:
    before = len(_store_threads())
    store = SQLiteStore(":memory:")
    await store.open()
    await store.put_job(JobState(job_id="job_1", watched=True))
    del store
    gc.collect()
    with anyio.fail_after(5):
        while len(_store_threads()) > before:  # noqa: ASYNC110 - a thread's end has no event
            await anyio.sleep(0.01)


_KINDS = st.sampled_from(["started", "progress", "completed", "failed", "page"])
_STEPS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", None, None]), _KINDS, st.integers(0, 3)), max_size=24
)


@settings(max_examples=100, deadline=None)
@given(steps=_STEPS)
def test_records_committed_together_decide_as_one_at_a_time(steps: list) -> None:  # type: ignore[type-arg]
    # Calls that meet in one group commit are recorded with a few statements for all of
    # them; the verdicts and the saved state must be those of recording them in turn.
    events = []
    for job_id, kind, n in steps:
        if job_id is None:
            events.append(make_event("credit_low", None, key=f"workspace:credit_low:{n}"))
        elif kind == "page":
            events.append(make_event("page", job_id, url=f"https://example.com/{n}"))
        else:
            events.append(make_event(kind, job_id, completed=n, total=5))

    async def run(store: Store, together: bool) -> tuple[list[Verdict], list[JobEvent]]:
        await store.open()
        verdicts: list[Verdict | None] = [None] * len(events)

        async def one(i: int) -> None:
            event = events[i]
            verdicts[i] = await store.record(
                event.job_id, functools.partial(decide, event=event), ttl=60
            )

        if together:
            async with anyio.create_task_group() as tg:
                for i in range(len(events)):
                    tg.start_soon(one, i)  # queued in this order, committed together
        else:
            for i in range(len(events)):
                await one(i)
        pending = await store.pending()
        await store.aclose()
        return [v for v in verdicts if v is not None], pending

    together = anyio.run(run, SQLiteStore(":memory:"), True)
    in_turn = anyio.run(run, MemoryStore(), False)
    assert together == in_turn


_HUGE = JobState(job_id="huge", completed=2**70)  # more than SQLite's integers hold
_FINE = JobState(job_id="fine", completed=3, watched=True)


async def _record_refused_beside_fine(store: Store) -> dict[str, object]:
    """Record _HUGE and _FINE in one group commit; each one's verdict or error, by job."""
    results: dict[str, object] = {}

    async def record(state: JobState) -> None:
        try:
            results[state.job_id] = await store.record(
                state.job_id, lambda _: Verdict(event=None, state=state), ttl=60
            )
        except Exception as exc:
            results[state.job_id] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(record, _HUGE)
        tg.start_soon(record, _FINE)
    return results


@pytest.mark.anyio
async def test_a_record_sqlite_refuses_fails_alone_in_its_batch() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    results = await _record_refused_beside_fine(store)
    assert isinstance(results["huge"], OverflowError)
    assert isinstance(results["fine"], Verdict)
    assert await store.get_job("fine") == _FINE and await store.get_job("huge") is None
    await store.aclose()


def _completed(job_id: str) -> Callable[[JobState | None], Verdict]:
    return functools.partial(decide, event=make_event("completed", job_id, completed=1, total=1))


@pytest.mark.anyio
async def test_a_record_waits_for_another_connections_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    # Records commit on the event loop; a lock held elsewhere must send the batch to the
    # thread (which waits for it) instead of failing it or stalling the loop.
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    turns = 0
    verdicts: list[Verdict] = []

    async def tick() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.sleep(0.01)

    async def record() -> None:
        verdicts.append(await store.record("job_1", _completed("job_1"), ttl=60))

    with anyio.fail_after(4):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            tg.start_soon(record)
            await anyio.sleep(0.3)
            assert verdicts == [] and turns >= 10  # waiting, and the loop went on
            other.execute("ROLLBACK")
            while not verdicts:  # noqa: ASYNC110 - the thread's wait has no event to await
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    other.close()
    assert verdicts[0].event is not None
    assert [e.job_id for e in await store.pending()] == ["job_1"]
    await store.aclose()


@pytest.mark.anyio
async def test_a_lock_held_too_long_elsewhere_is_said_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sqlite3 shell left with a transaction open on the file: "database is locked" alone
    # names no culprit and no way out.
    monkeypatch.setattr(sqlite_store, "_LOCK_WAIT_MS", 100)
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    await store.aclose()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(JobwatchError) as raised:
            await store.open()
            await store.pending()
    finally:
        other.execute("ROLLBACK")
        other.close()
        await store.aclose()
    message = str(raised.value)
    assert "database is locked" in message and "held the file's lock for over 0.1 s" in message
    assert "end that transaction or stop that process, then try again" in message


@pytest.mark.anyio
async def test_the_wal_stops_growing_as_commits_are_checkpointed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    sizes = []
    for round_ in range(4):
        for n in range(_CHECKPOINT_EVERY):  # one commit each
            job_id = f"job_{round_}_{n}"
            await store.record(job_id, _completed(job_id), ttl=60)
        sizes.append((await anyio.Path(f"{path}-wal").stat()).st_size)
    # Without checkpoints every commit appends its pages: four times the first round's size.
    assert sizes[-1] < 1.5 * sizes[0], sizes
    assert len(await store.pending()) == 4 * _CHECKPOINT_EVERY
    await store.aclose()


@pytest.mark.anyio
async def test_expired_keys_are_purged_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "_PURGE_EVERY", 4)
    now = 1_000.0
    store = SQLiteStore(":memory:", clock=lambda: now)
    await store.open()
    for n in range(3):
        await store.record(f"old_{n}", _completed(f"old_{n}"), ttl=10)
    now += 60
    for n in range(3):
        await store.record(f"new_{n}", _completed(f"new_{n}"), ttl=10)
    # The fourth record asked for a purge, done after its batch: the old keys are gone.
    keys = [key for (key,) in store.db.execute("SELECT key FROM seen")]
    assert len(keys) == 3 and all(key.startswith("new_") for key in keys), keys
    await store.aclose()


@pytest.mark.anyio
async def test_a_lock_taken_between_a_batchs_two_passes_sends_the_batch_to_the_thread(
    tmp_path: Path,
) -> None:
    # One record SQLite refuses makes the batch run again call by call; if another process
    # takes the lock just then, the batch must wait for it in the thread, not fail whole.
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    transaction = store._transaction

    def locking_before_the_second_pass(
        batch: list[Any],
        acks: list[str],
        *,
        careful: bool,
        on_loop: bool,
    ) -> None:
        if careful and on_loop:
            other.execute("BEGIN IMMEDIATE")
            threading.Timer(0.05, other.execute, ("ROLLBACK",)).start()
        transaction(batch, acks, careful=careful, on_loop=on_loop)

    store._transaction = locking_before_the_second_pass  # type: ignore[method-assign]
    with anyio.fail_after(5):
        results = await _record_refused_beside_fine(store)
    other.close()
    assert isinstance(results["huge"], OverflowError)
    assert isinstance(results["fine"], Verdict)
    assert await store.get_job("fine") == _FINE
    await store.aclose()


@pytest.mark.anyio
async def test_an_interrupt_after_a_commit_on_the_loop_reaches_the_caller() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    commit = store._commit

    def interrupted(batch: list, acks: list[str], **where: bool) -> bool:  # type: ignore[type-arg]
        commit(batch, acks, **where)
        raise KeyboardInterrupt  # Ctrl-C right after the batch committed

    store._commit = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        await store.record("job_1", _completed("job_1"), ttl=60)
    store._commit = commit  # type: ignore[method-assign]
    assert [e.job_id for e in await store.pending()] == ["job_1"]  # committed, not lost
    await store.aclose()


@pytest.mark.anyio
async def test_a_long_reader_on_the_file_does_not_stall_records(tmp_path: Path) -> None:
    # A backup or an sqlite3 shell holding a read transaction keeps checkpoints from
    # finishing; maintenance must then leave the WAL for later, not wait for the reader.
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    await store.record("job_0", _completed("job_0"), ttl=60)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM seen").fetchone()
    with anyio.fail_after(3):  # about 0.1 s; waiting for the reader would take 5 s a turn
        for n in range(1, 3 * _CHECKPOINT_EVERY):
            await store.record(f"job_{n}", _completed(f"job_{n}"), ttl=60)
    reader.execute("COMMIT")
    reader.close()
    assert len(await store.pending()) == 3 * _CHECKPOINT_EVERY
    await store.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_leader_cancelled_by_asyncio_itself_still_waits_for_its_batch(
    tmp_path: Path,
) -> None:
    # asyncio.wait_for cancels past anyio's shields. The batch the leader handed to the
    # thread still runs; no call may be told it was cancelled for it, and the next batch
    # must not start inside that batch's transaction.
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process writes for a while
    threading.Timer(0.3, other.execute, ("COMMIT",)).start()
    outcomes: dict[str, str] = {}

    async def call(name: str, pending: Awaitable[object]) -> None:
        try:
            await pending
            outcomes[name] = "ok"
        except BaseException as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[name] = type(exc).__name__

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            leader = JobState(job_id="leader", watched=True)  # a thread batch: not a record
            tg.start_soon(call, "leader", asyncio.wait_for(store.put_job(leader), 0.1))
            await anyio.lowlevel.checkpoint()
            tg.start_soon(call, "follower", store.record("f", _completed("f"), ttl=60))
            await anyio.sleep(0.15)  # the leader has been cancelled
            tg.start_soon(call, "next", store.record("n", _completed("n"), ttl=60))
    other.close()
    assert outcomes == {"leader": "TimeoutError", "follower": "ok", "next": "ok"}
    assert sorted(e.job_id or "" for e in await store.pending()) == ["f", "n"]
    await store.aclose()


@pytest.mark.anyio
async def test_opening_and_closing_a_store_again_and_again_leaves_nothing_behind() -> None:
    store = SQLiteStore(":memory:")
    for _ in range(50):
        await store.open()
        await store.put_job(JobState(job_id="job_1", watched=True))
        await store.aclose()
    # The finalizer that ends a dropped store's thread is one per thread, not one per cycle.
    assert weakref.getweakrefcount(store._thread) == 0


@pytest.mark.anyio
async def test_acks_flushed_with_records_commit_on_the_loop(tmp_path: Path) -> None:
    # Acks ride along with records; when enough pile up, their own commit joins the records'
    # on the event loop instead of sending the whole batch to the store's thread.
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    where: list[bool] = []
    commit = store._commit

    def noting(batch: list, acks: list[str], *, on_loop: bool) -> bool:  # type: ignore[type-arg]
        where.append(on_loop)
        return commit(batch, acks, on_loop=on_loop)

    store._commit = noting  # type: ignore[method-assign]
    try:
        events = [make_event("progress", f"j{n}", completed=1) for n in range(300)]
        verdicts = await store.record_batch(
            [(e.job_id, functools.partial(decide, event=e)) for e in events], ttl=60
        )
        async with anyio.create_task_group() as tg:
            for verdict in verdicts:
                assert verdict.event is not None
                tg.start_soon(store.ack, verdict.event.key)
            later = make_event("progress", "j0", completed=2)
            tg.start_soon(
                functools.partial(
                    store.record_batch, [("j0", functools.partial(decide, event=later))], ttl=60
                )
            )
        assert where and all(where)
        assert len(await store.pending()) == 1
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_claim_is_written_in_its_records_transaction(tmp_path: Path) -> None:
    # A webhook delivery's identity and its events commit together: a crash keeps both or
    # neither, and the delivery costs one group commit.
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    commits: list[int] = []
    commit = store._commit

    def counting(batch: list, acks: list[str], **where: bool) -> bool:  # type: ignore[type-arg]
        commits.append(len(batch))
        return commit(batch, acks, **where)

    store._commit = counting  # type: ignore[method-assign]
    try:
        await store.record_batch([("job_1", _completed("job_1"))], ttl=60, claim=("d:1", 60))
        assert commits == [1]
        other = sqlite3.connect(tmp_path / "state.db")
        try:
            assert other.execute("SELECT key FROM claims").fetchall() == [("d:1",)]
            assert other.execute("SELECT count(*) FROM inbox").fetchone() == (1,)
        finally:
            other.close()
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_record_sqlite_refuses_takes_its_claim_back_alone() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    errors: list[Exception] = []

    async def record(state: JobState) -> None:
        try:
            await store.record_batch(
                [(state.job_id, lambda _: Verdict(event=None, state=state))],
                ttl=60,
                claim=(f"delivery:{state.job_id}", 60),
            )
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:  # one group commit
        tg.start_soon(record, _HUGE)
        tg.start_soon(record, _FINE)
    assert [type(e) for e in errors] == [OverflowError]
    assert not await store.claimed("delivery:huge")
    assert await store.claimed("delivery:fine")
    await store.aclose()


@pytest.mark.anyio
async def test_a_claim_is_read_without_waiting_for_the_commit_in_flight() -> None:
    # The receiver asks before recording whether a delivery was recorded; a read needs no
    # group commit, and waiting for one cost the receiver a whole commit's turns.
    store = SQLiteStore(":memory:")
    await store.open()
    await store.claim("delivery:a", ttl=60)
    recorded: list[bool] = []

    async def record() -> None:
        await store.record_batch([("job_1", _completed("job_1"))], ttl=60)
        recorded.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(record)
        while not store._leading:  # the record leads its batch, letting others join it
            await anyio.lowlevel.checkpoint()
        assert await store.claimed("delivery:a")
        assert not await store.claimed("delivery:b")
        assert recorded == []
    assert recorded == [True]
    await store.aclose()


@pytest.mark.anyio
async def test_a_claim_is_read_in_a_batch_while_the_thread_uses_the_connection(
    tmp_path: Path,
) -> None:
    # Another process holds the write lock: the batch waits for it in the thread, and a read
    # meanwhile must not use the connection under it.
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    await store.claim("delivery:a", ttl=60)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    answers: list[bool] = []

    async def record() -> None:
        await store.record("job_1", _completed("job_1"), ttl=60)

    with anyio.fail_after(4):
        async with anyio.create_task_group() as tg:
            tg.start_soon(record)
            while not store._in_thread:  # noqa: ASYNC110 - the lock has no event to await
                await anyio.sleep(0.01)

            async def ask() -> None:
                answers.append(await store.claimed("delivery:a"))

            tg.start_soon(ask)
            # The claim answers at once, or joins the batch after the one the thread holds.
            while not answers and not store._queue:
                await anyio.lowlevel.checkpoint()
            assert answers == []  # queued behind the batch the thread holds
            other.execute("ROLLBACK")
    other.close()
    assert answers == [True]
    await store.aclose()


@pytest.mark.parametrize(
    ("code", "locked"),
    [
        (sqlite3.SQLITE_BUSY, True),
        (261, True),  # SQLITE_BUSY_RECOVERY: another process recovers the WAL
        (517, True),  # SQLITE_BUSY_SNAPSHOT
        (sqlite3.SQLITE_LOCKED, False),
        (sqlite3.SQLITE_IOERR, False),
    ],
)
def test_a_lock_held_elsewhere_is_told_by_its_extended_codes_too(code: int, locked: bool) -> None:
    class Locked:
        def execute(self, sql: str, parameters: tuple[Any, ...]) -> None:
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = code
            raise error

    db: Any = Locked()  # a connection whose statement meets the lock
    run = functools.partial(sqlite_store._unless_locked, db, "DELETE FROM seen", ())
    if locked:
        assert run() is False
    else:
        with pytest.raises(sqlite3.OperationalError):
            run()
