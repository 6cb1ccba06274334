"""A subscription's retry policy, and dead letters listed, replayed and dropped."""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import pytest
import trio
import trio.testing
from _cancellation import cancellation_from_elsewhere

import jobwatch
from jobwatch._dispatch import Dispatcher
from jobwatch.abc import Store, Verdict
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import ScriptedTransport, make_event

CONFIG = jobwatch.Config.from_mapping({"jobwatch": {"api_key": "rdr_test", "store": "memory"}})


def failing_calls(
    retry: jobwatch.Retry | None, *, use_on: bool = False
) -> tuple[list[float], list[float], int]:
    """Run a Watcher on trio's MockClock with a callback that always raises on the first
    event: when it was called, when a later event reached it, and the dead letters kept."""
    failed: list[float] = []
    later: list[float] = []
    store = MemoryStore()

    def callback(event: jobwatch.JobEvent) -> None:
        if event.job_id == "later":
            later.append(trio.current_time())
            return
        failed.append(trio.current_time())
        raise RuntimeError("boom")

    async def main() -> None:
        transport = ScriptedTransport(
            [make_event("completed", "first"), make_event("completed", "later")]
        )
        watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
        options: dict[str, Any] = {} if retry is None else {"retry": retry}
        if use_on:
            watcher.on("completed", **options)(callback)
        else:
            watcher.subscribe(callback, **options)
        async with watcher:
            await trio.sleep(100)

    start = 0.0

    async def timed() -> None:
        nonlocal start
        start = trio.current_time()
        await main()

    trio.run(timed, clock=trio.testing.MockClock(autojump_threshold=0))
    dead = trio.run(store.dead_letters)
    return [t - start for t in failed], [t - start for t in later], len(dead)


def close(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(
        math.isclose(g, w, abs_tol=0.01) for g, w in zip(got, want, strict=True)
    )


def test_the_default_is_four_calls_0_5_2_and_8_s_apart() -> None:
    failed, later, dead = failing_calls(None)
    start = failed[0]
    assert close([t - start for t in failed], [0, 0.5, 2.5, 10.5])
    assert close([t - start for t in later], [10.5]) and dead == 1
    assert jobwatch.Retry() == jobwatch.Retry(attempts=4, backoff=(0.5, 2, 8))


def test_a_subscription_retries_as_its_policy_says() -> None:
    failed, later, dead = failing_calls(jobwatch.Retry(attempts=3, backoff=(1, 5)))
    start = failed[0]
    assert close([t - start for t in failed], [0, 1, 6])
    assert close([t - start for t in later], [6]) and dead == 1


def test_the_last_wait_repeats_and_one_number_is_every_wait() -> None:
    failed, _, _ = failing_calls(jobwatch.Retry(attempts=4, backoff=2), use_on=True)
    assert close([t - failed[0] for t in failed], [0, 2, 4, 6])
    assert jobwatch.Retry(attempts=5, backoff=(1, 3)).backoff == (1.0, 3.0)
    assert [jobwatch.Retry(backoff=(1, 3)).delay(n) for n in (1, 2, 3)] == [1.0, 3.0, 3.0]


def test_one_attempt_keeps_the_dead_letter_at_once_and_holds_nothing_up() -> None:
    failed, later, dead = failing_calls(jobwatch.Retry(attempts=1), use_on=True)
    assert len(failed) == 1 and close(later, failed) and dead == 1


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"attempts": -1},
        {"attempts": 2.5},
        {"attempts": True},
        {"backoff": -1},
        {"backoff": "1s"},
        {"backoff": (1, math.nan)},
        {"backoff": (math.inf,)},
        {"backoff": None},
        {"backoff": (True,)},
        {"timeout": 0},
        {"timeout": -5},
        {"timeout": math.nan},
        {"timeout": math.inf},
        {"timeout": True},
        {"timeout": "30s"},
        {"timeout": 10**400},
        {"backoff": 10**400},
    ],
)
def test_nonsense_is_refused_saying_what_is_expected(options: dict[str, object]) -> None:
    with pytest.raises(jobwatch.ConfigError, match=r"Retry (attempts|backoff|timeout) must be"):
        jobwatch.Retry(**options)  # type: ignore[arg-type]


def hanging_calls(
    *, sync: bool, swallow: bool = False
) -> tuple[list[float], list[float], list[str]]:
    """A callback whose call for the first job never returns, under Retry(attempts=2,
    backoff=1, timeout=5), on trio's MockClock: when it was called, when the next job's event
    reached it, and the dead letters' errors. With ``swallow``, the call catches the
    cancellation and returns."""
    calls: list[float] = []
    later: list[float] = []
    store = MemoryStore()

    async def hang() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            if not swallow:
                raise

    async def async_callback(event: jobwatch.JobEvent) -> None:
        if event.job_id == "later":
            later.append(trio.current_time())
            return
        calls.append(trio.current_time())
        await hang()

    def sync_callback(event: jobwatch.JobEvent) -> Any:
        if event.job_id == "later":
            later.append(trio.current_time())
            return None
        calls.append(trio.current_time())
        return hang()  # an awaitable, awaited by the Watcher

    async def main() -> None:
        transport = ScriptedTransport(
            [make_event("completed", "first"), make_event("completed", "later")]
        )
        watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
        retry = jobwatch.Retry(attempts=2, backoff=1, timeout=5)
        watcher.subscribe(sync_callback if sync else async_callback, retry=retry)
        async with watcher:
            await trio.sleep(100)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    errors = [error for _, _, error in trio.run(store.dead_letters)]
    return [t - calls[0] for t in calls], [t - calls[0] for t in later], errors


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync returning an awaitable"])
def test_a_call_longer_than_its_timeout_is_cut_short_retried_and_kept(sync: bool) -> None:
    # A callback that never returned held its events, then every transport's, for ever.
    calls, later, errors = hanging_calls(sync=sync)
    assert close(calls, [0, 6]) and close(later, [11])
    assert errors == ["TimeoutError: the callback took longer than 5 s (its Retry timeout)"]
    assert jobwatch.Retry(timeout=2.5).timeout == 2.5 and jobwatch.Retry().timeout is None


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync returning an awaitable"])
def test_a_call_that_swallows_its_timeout_and_returns_still_fails(sync: bool) -> None:
    # A call that caught the cancellation of its timeout and returned (a cleanup that ends
    # without re-raising) took longer all the same: it counted as handled, never retried,
    # never kept.
    calls, later, errors = hanging_calls(sync=sync, swallow=True)
    assert close(calls, [0, 6]) and close(later, [11])
    assert errors == ["TimeoutError: the callback took longer than 5 s (its Retry timeout)"]


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync returning an awaitable"])
def test_a_watcher_closing_after_a_swallowed_timeout_keeps_no_dead_letter(sync: bool) -> None:
    # The callback catches its timeout's cancellation, then finishes a cleanup that outlasts
    # the Watcher's closing: the Watcher closes as asked, keeps no dead letter, and leaves the
    # event in the inbox for the next Watcher.
    store = MemoryStore()
    cut_short = trio.Event()
    closing = trio.Event()

    async def cleanup() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cut_short.set()
            with trio.CancelScope(shield=True):
                await closing.wait()

    async def async_callback(event: jobwatch.JobEvent) -> None:
        await cleanup()

    def sync_callback(event: jobwatch.JobEvent) -> Any:
        return cleanup()

    async def main() -> None:
        transport = ScriptedTransport([make_event("completed", "j")])
        watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
        retry = jobwatch.Retry(attempts=1, timeout=5)
        watcher.subscribe(sync_callback if sync else async_callback, retry=retry)
        async with trio.open_nursery() as nursery:
            async with watcher:
                await cut_short.wait()
                nursery.start_soon(closing_after)
        assert watcher.statistics().dead_letters == 0

    async def closing_after() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the Watcher waits for the cleanup
        closing.set()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert trio.run(store.dead_letters) == []
    assert [event.key for event in trio.run(store.pending)] == ["j:terminal#1"]


@pytest.mark.parametrize("timeout", [1234.5678, 0.1234567, 2.5, 5])
def test_a_dead_letter_of_a_timeout_names_the_timeout_as_given(timeout: float) -> None:
    # The error text rounded the timeout to six digits: "took longer than 1234.57 s".
    store = MemoryStore()

    async def hang(event: jobwatch.JobEvent) -> None:
        await trio.sleep_forever()

    async def main() -> None:
        transport = ScriptedTransport([make_event("completed", "j")])
        watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
        watcher.subscribe(hang, retry=jobwatch.Retry(attempts=1, timeout=timeout))
        async with watcher:
            await trio.sleep(2 * timeout)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [error for _, _, error in trio.run(store.dead_letters)] == [
        f"TimeoutError: the callback took longer than {timeout} s (its Retry timeout)"
    ]


def test_a_retry_is_a_frozen_value() -> None:
    retry = jobwatch.Retry(attempts=2, backoff=[1])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        retry.attempts = 3  # type: ignore[misc]
    assert retry == jobwatch.Retry(attempts=2, backoff=(1.0,))
    with pytest.raises(TypeError):
        jobwatch.Retry(3)  # type: ignore[call-arg]


def test_a_subscription_cancelled_while_its_callback_waits_to_be_retried_is_not_called_again() -> (
    None
):
    # cancel() says: stop calling this callback. It was called three more times, 10 s on,
    # and its event kept as a dead letter for a subscriber that had gone.
    calls: list[float] = []
    store = MemoryStore()

    async def main() -> None:
        transport = ScriptedTransport([make_event("completed", "j")])
        watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)

        def broken(event: jobwatch.JobEvent) -> None:
            calls.append(trio.current_time())
            raise RuntimeError("boom")

        sub = watcher.subscribe(broken)
        async with watcher:
            await anyio.wait_all_tasks_blocked()  # failed once; waits 0.5 s for its retry
            sub.cancel()
            await trio.sleep(100)
        assert watcher.statistics().dead_letters == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(calls) == 1
    assert trio.run(store.dead_letters) == [] and trio.run(store.pending) == []


@pytest.mark.anyio
async def test_retry_must_be_a_retry() -> None:
    watcher = jobwatch.Watcher(CONFIG, transports=[ScriptedTransport()], store=MemoryStore())
    for wrong in (3, False, None):
        with pytest.raises(jobwatch.ConfigError, match="retry must be a jobwatch.Retry"):
            watcher.subscribe(print, retry=wrong)  # type: ignore[arg-type]
        with pytest.raises(jobwatch.ConfigError, match="retry must be a jobwatch.Retry"):
            watcher.on("completed", retry=wrong)(print)  # type: ignore[arg-type]


# -- dead letters, on the stores ---------------------------------------------------------------

Stores = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    """Each call: the store a new process would open (one MemoryStore stands in for one)."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
    return lambda: SQLiteStore(tmp_path / "state.db")


async def kept_dead_letter(store: Store) -> str:
    """A Watcher whose only callback fails on a job's final event: its key, once kept."""
    watcher = jobwatch.Watcher(
        CONFIG, store=store, transports=[ScriptedTransport([make_event("completed", "j")])]
    )

    def broken(event: jobwatch.JobEvent) -> None:
        raise RuntimeError("mail server down")

    kept = anyio.Event()
    keep = store.dead_letter

    async def dead_letter(event: jobwatch.JobEvent, subscriber: str, error: str) -> None:
        await keep(event, subscriber, error)
        kept.set()

    store.dead_letter = dead_letter  # type: ignore[method-assign]
    watcher.subscribe(broken, retry=jobwatch.Retry(attempts=1))
    async with watcher:
        with anyio.fail_after(5):
            await kept.wait()
    return "j:terminal#1"


@pytest.mark.anyio
async def test_a_dead_letter_is_listed_then_replayed_to_the_next_watcher(stores: Stores) -> None:
    key = await kept_dead_letter(stores())
    store = stores()
    await store.open()
    try:
        [(event, subscriber, error)] = await store.dead_letters()
        assert (event.key, error) == (key, "RuntimeError: mail server down")
        assert subscriber.endswith("broken") and await store.pending() == []
        assert await store.replay_dead_letter(key)
        assert await store.dead_letters() == [] and await store.pending() == [event]
    finally:
        await store.aclose()

    got: list[jobwatch.JobEvent] = []
    arrived = anyio.Event()

    def fixed(event: jobwatch.JobEvent) -> None:
        got.append(event)
        arrived.set()

    store = stores()
    watcher = jobwatch.Watcher(CONFIG, store=store, transports=[ScriptedTransport()])
    watcher.subscribe(fixed)
    async with watcher:
        with anyio.fail_after(5):
            await arrived.wait()
    assert [e.key for e in got] == [key]
    async with jobwatch.Watcher(CONFIG, store=stores(), transports=[ScriptedTransport()]) as w:
        assert await w.store.pending() == [] and await w.store.dead_letters() == []


@pytest.mark.anyio
async def test_a_dropped_dead_letter_is_never_dispatched(stores: Stores) -> None:
    key = await kept_dead_letter(stores())
    store = stores()
    await store.open()
    try:
        assert await store.drop(key)
        assert await store.dead_letters() == []
        assert not await store.drop(key) and not await store.replay_dead_letter(key)
    finally:
        await store.aclose()


class Plain(MemoryStore):
    """A third-party store from before dead letters could be listed: the defaults serve it."""

    name = "plain"
    dead_letter = Store.dead_letter
    dead_letters = Store.dead_letters
    replay_dead_letter = Store.replay_dead_letter
    drop = Store.drop


@pytest.mark.anyio
async def test_a_store_without_dead_letters_lists_none_and_drops_inbox_rows() -> None:
    store = Plain()
    event = make_event("started", "j")
    await store.record("j", lambda _: Verdict(event=event), ttl=60)
    await store.dead_letter(event, "cb", "boom")
    assert await store.dead_letters() == [] and not await store.replay_dead_letter(event.key)
    assert await store.drop(event.key) and await store.pending() == []
    assert not await store.drop(event.key)


async def first_dead_letter(store: Store) -> jobwatch.JobEvent:
    """The event of the first dead letter ``store`` keeps, once it keeps one."""
    with anyio.fail_after(5):
        while not await store.dead_letters():
            await anyio.wait_all_tasks_blocked()
    [(event, _, _)] = await store.dead_letters()
    return event


@pytest.mark.anyio
async def test_a_running_watcher_replays_a_dead_letter_now(stores: Stores) -> None:
    calls: list[str] = []
    failing = True
    handled = anyio.Event()
    store = stores()
    transport = ScriptedTransport()
    watcher = jobwatch.Watcher(CONFIG, store=store, transports=[transport])

    def mailer(event: jobwatch.JobEvent) -> None:
        calls.append(event.key)
        if failing:
            raise RuntimeError("mail server down")
        handled.set()

    watcher.subscribe(mailer, kinds=("completed",), retry=jobwatch.Retry(attempts=1))
    async with watcher:
        await transport.send(make_event("started", "j"), make_event("completed", "j"))
        event = await first_dead_letter(store)
        final_before = watcher._pipeline.jobs["j"].final
        failing = False
        assert not await watcher.replay_dead_letter("no-such-key")
        assert await watcher.replay_dead_letter(event.key)
        with anyio.fail_after(5):
            await handled.wait()
        await anyio.wait_all_tasks_blocked()
        assert await store.dead_letters() == [] and await store.pending() == []
        assert not await watcher.replay_dead_letter(event.key)  # handed over once
        # The job's runs are as they were: the event is old news to them.
        assert watcher._pipeline.jobs["j"].final is final_before
    assert calls == [event.key, event.key]


@pytest.mark.anyio
async def test_a_replayed_dead_letter_is_news_to_callbacks_only(stores: Stores) -> None:
    # The job was retried after the end its callback failed on: a wait() on the new run and
    # the dashboard's row of it are not given the old run's end.
    failing = True
    handled = anyio.Event()
    store = stores()
    transport = ScriptedTransport()
    watcher = jobwatch.Watcher(CONFIG, store=store, transports=[transport])
    dashboard = watcher.dashboard_app()

    def pager(event: jobwatch.JobEvent) -> None:
        if failing:
            raise RuntimeError("pager down")
        handled.set()

    watcher.subscribe(pager, kinds=("failed",), retry=jobwatch.Retry(attempts=1))
    async with watcher:
        await transport.send(make_event("started", "j"), make_event("failed", "j"))
        event = await first_dead_letter(store)
        await transport.send(make_event("progress", "j", completed=2), authoritative=True)
        ended: list[jobwatch.JobEvent] = []

        async def wait() -> None:
            ended.append(await watcher.wait("j"))

        async with anyio.create_task_group() as nursery:
            nursery.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            failing = False
            assert await watcher.replay_dead_letter(event.key)
            with anyio.fail_after(5):
                await handled.wait()
            await anyio.wait_all_tasks_blocked()
            assert ended == []  # run 2 has not ended
            [row] = dashboard.relay.table()["jobs"]
            assert (row["status"], row["completed"], row["error"]) == ("processing", 2, None)
            await transport.send(make_event("completed", "j", completed=3, total=3))
        assert [e.key for e in ended] == ["j:terminal#2"]


@pytest.mark.anyio
async def test_a_dead_letter_of_a_run_left_since_is_news_to_callbacks_only_at_start(
    stores: Stores,
) -> None:
    # Run 1's end failed its callback; the job was retried (run 2); the dead letter is moved
    # back to the inbox (`jobwatch inbox replay`). The next Watcher hands it to the callbacks,
    # and not to wait(): run 2 has not ended.
    def api(request: httpx.Request) -> httpx.Response:
        data = {"id": "j1", "status": "processing", "completed": 1, "total": 2}
        return httpx.Response(200, json={"success": True, "data": data})

    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"api_key": "rdr_x", "safety_poll": 0}}, environ={}
    )
    push, retried = ScriptedTransport(), anyio.Event()

    def flaky(event: jobwatch.JobEvent) -> None:
        if event.key == "j1:started#2":
            retried.set()
        if event.key == "j1:terminal#1":
            raise RuntimeError("the application was down")

    first = jobwatch.Watcher(
        config, transports=[push], store=stores(), http_transport=httpx.MockTransport(api)
    )
    first.subscribe(flaky, retry=jobwatch.Retry(attempts=1))
    async with first:
        await push.send(make_event("started", "j1"))
        await push.send(make_event("completed", "j1", completed=2, total=2))
        await push.send(make_event("started", "j1"))  # a retry: the check poll confirms it
        # (An event for run 2, not a loop of wait_all_tasks_blocked(): on trio that loop spins
        # while the sqlite store's thread keeps the dead letter, and the thread then waits for
        # the interpreter at each step. Each look at the dead letters waits for the store.)
        with anyio.fail_after(5):
            await retried.wait()
            while not await first.store.dead_letters():
                await anyio.wait_all_tasks_blocked()
    store = stores()
    await store.open()
    try:
        assert await store.replay_dead_letter("j1:terminal#1")
    finally:
        await store.aclose()

    handed: list[str] = []
    arrived = anyio.Event()

    def hand(event: jobwatch.JobEvent) -> None:
        handed.append(event.key)
        arrived.set()

    second = jobwatch.Watcher(
        config,
        transports=[ScriptedTransport()],
        store=stores(),
        http_transport=httpx.MockTransport(api),
    )
    second.subscribe(hand)
    async with second:
        # (An event, not a loop of wait_all_tasks_blocked(): on trio that loop spins while the
        # sqlite store's thread works, and the thread waits for the interpreter at each step.)
        with anyio.fail_after(5):
            await arrived.wait()
        await anyio.wait_all_tasks_blocked()
        assert handed == ["j1:terminal#1"]
        with pytest.raises(jobwatch.WatchTimeout):
            await second.wait("j1", timeout=0.5)
        assert await second.store.pending() == []


def test_a_callback_may_replay_a_dead_letter_of_a_job_whose_events_fill_its_queue() -> None:
    # The callback asks for the replay while a batch of the same job holds the job's turn and
    # waits for room in that callback's queue: the replay must not wait for the turn there.
    async def main() -> list[str]:
        store = MemoryStore()
        transport = ScriptedTransport()
        watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
        kept, asked, replayed = trio.Event(), trio.Event(), trio.Event()
        handed: list[str] = []
        keep = store.dead_letter

        async def dead_letter(event: jobwatch.JobEvent, subscriber: str, error: str) -> None:
            await keep(event, subscriber, error)
            kept.set()

        store.dead_letter = dead_letter  # type: ignore[method-assign]

        async def operator(event: jobwatch.JobEvent) -> None:
            if event.kind == "page" and not handed:
                handed.append("failed")
                raise RuntimeError("fails once: kept as a dead letter")
            if event.kind == "page":
                handed.append("page replayed")
                replayed.set()
            elif event.kind == "started":
                await asked.wait()
                [(dead, _, _)] = await store.dead_letters()
                assert await watcher.replay_dead_letter(dead.key)
                handed.append("replay asked")

        watcher.subscribe(operator, retry=jobwatch.Retry(attempts=1))
        async with watcher:
            await transport.send(make_event("page", "j", url="https://example.com/a"))
            await kept.wait()
            await transport.send(make_event("started", "j"))
            async with trio.open_nursery() as nursery:

                async def flood() -> None:
                    for n in range(1, 1200):  # more than a subscription's queue holds
                        await transport.send(make_event("progress", "j", completed=n))

                nursery.start_soon(flood)
                await trio.testing.wait_all_tasks_blocked()  # the flood waits, holding j's turn
                asked.set()
                with trio.fail_after(60):
                    await replayed.wait()
        return handed

    handed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert handed == ["failed", "replay asked", "page replayed"]


@pytest.mark.anyio
async def test_a_dead_letter_replayed_from_another_process_outlives_the_running_watcher(
    tmp_path: Path,
) -> None:
    # `jobwatch inbox replay` while the service still runs, then the service's restart (what
    # docs/cli.md tells a user to do): the service's ack of the event, held back to ride with
    # its next commit, was written at its close and took the replayed event out of the inbox
    # again, so the next start dispatched nothing, and the dead letter was gone too.
    store = SQLiteStore(tmp_path / "state.db")
    transport = ScriptedTransport()
    watcher = jobwatch.Watcher(CONFIG, store=store, transports=[transport])

    def broken(event: jobwatch.JobEvent) -> None:
        raise RuntimeError("mail server down")

    watcher.subscribe(broken, retry=jobwatch.Retry(attempts=1))
    async with watcher:
        await transport.send(make_event("completed", "j"))
        await anyio.wait_all_tasks_blocked()  # the callback is done with it: acked
        command = SQLiteStore(tmp_path / "state.db")  # the `jobwatch inbox replay` process
        await command.open()
        try:
            event = await first_dead_letter(command)
            assert await command.replay_dead_letter(event.key)
        finally:
            await command.aclose()
    restarted = SQLiteStore(tmp_path / "state.db")
    await restarted.open()
    try:
        assert await restarted.pending() == [event]
    finally:
        await restarted.aclose()


@pytest.mark.anyio
async def test_a_store_file_of_an_older_jobwatch_replays_too(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute(
        "CREATE TABLE inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE, "
        "event TEXT NOT NULL)"
    )
    db.close()
    event = make_event("completed", "j")
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    try:
        await store.dead_letter(event, "notify", "RuntimeError: down")
        assert await store.replay_dead_letter(event.key)
        assert await store.pending() == [event]
        await store.ack(event.key)
    finally:
        await store.aclose()
    again = SQLiteStore(tmp_path / "state.db")
    await again.open()
    try:
        assert await again.pending() == []
    finally:
        await again.aclose()


# -- a callback that raises a cancellation of its own ------------------------------------------


@pytest.mark.anyio
async def test_a_callback_that_raises_a_cancellation_not_its_own_fails_like_any_other() -> None:
    # The callback was not cancelled: the work it awaited was. It ended the Watcher instead,
    # leaving the body of `async with` without a word, and the other callbacks heard nothing.
    store = MemoryStore()
    transport = ScriptedTransport([make_event("completed", "a"), make_event("completed", "b")])
    watcher = jobwatch.Watcher(CONFIG, transports=[transport], store=store)
    calls: list[str | None] = []
    others: list[str | None] = []

    async def awaits_cancelled_work(event: jobwatch.JobEvent) -> None:
        calls.append(event.job_id)
        if event.job_id == "a":
            raise await cancellation_from_elsewhere()

    watcher.subscribe(awaits_cancelled_work, retry=jobwatch.Retry(attempts=2, backoff=0))
    watcher.subscribe(lambda event: others.append(event.job_id))
    body_ran = False
    async with watcher:
        for _ in range(10):
            await anyio.wait_all_tasks_blocked()
        body_ran = True
    assert body_ran
    assert calls == ["a", "a", "b"] and others == ["a", "b"]
    dead = await store.dead_letters()
    assert [(event.key, error.split(":")[0]) for event, _, error in dead] == [
        ("a:terminal#1", type(await cancellation_from_elsewhere()).__name__)
    ]
    assert watcher.statistics().dead_letters == 1 and await store.pending() == []


def full_queue_warnings(*, stuck: bool) -> list[float]:
    """Dispatch 50 events to a callback with a queue of 2, on trio's MockClock; the callback
    hangs on its first event for 25 s when ``stuck``. When the full-queue warning was said."""
    said: list[float] = []

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Retry(timeout=" in record.getMessage():
                said.append(trio.current_time() - start)

    async def main() -> None:
        store = MemoryStore()
        dispatcher = Dispatcher(store, queue_size=2)

        async def callback(event: jobwatch.JobEvent) -> None:
            if stuck and event.completed == 1:
                await trio.sleep(25)

        dispatcher.subscribe(callback, retry=jobwatch.Retry(timeout=None))
        events = [make_event("progress", "job_1", completed=n) for n in range(1, 51)]
        async with trio.open_nursery() as nursery:
            dispatcher.start(nursery)  # type: ignore[arg-type]
            await dispatcher.dispatch_batch(events)
            await trio.testing.wait_all_tasks_blocked()
            dispatcher.close()

    handler = Said()
    logging.getLogger("jobwatch").addHandler(handler)
    try:
        start = 0.0

        async def timed() -> None:
            nonlocal start
            start = trio.current_time()
            await main()

        trio.run(timed, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logging.getLogger("jobwatch").removeHandler(handler)
    return said


def test_a_queue_full_for_ten_seconds_is_said_once_naming_the_way_out() -> None:
    # A callback that never returned held every transport once its queue was full, silently.
    assert close(full_queue_warnings(stuck=True), [10])


def test_a_flood_through_a_fast_callback_is_not_said() -> None:
    # A fast callback's queue fills for a moment under a flood: that is no hang.
    assert full_queue_warnings(stuck=False) == []


def test_a_watch_whose_loop_does_not_take_its_events_is_said_as_such() -> None:
    # The Watcher's own subscription of a watch() names the loop, not a Retry it cannot have.
    said: list[str] = []

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "for 10 s" in record.getMessage():
                said.append(record.getMessage())

    async def api(request: httpx.Request) -> httpx.Response:
        data = {"id": "job_1", "status": "processing", "completed": 0, "total": 9}
        return httpx.Response(200, json={"success": True, "data": data})

    async def main() -> None:
        transport = ScriptedTransport()
        watcher = jobwatch.Watcher(
            CONFIG,
            transports=[transport],
            store=MemoryStore(),
            http_transport=httpx.MockTransport(api),
        )
        pages = [make_event("page", "job_1", url=f"https://e/{n}") for n in range(2100)]
        async with watcher, trio.open_nursery() as nursery:
            async with contextlib.aclosing(watcher.watch("job_1")) as events:
                async for _ in events:
                    nursery.start_soon(transport.send, *pages)
                    await trio.sleep(30)  # a loop body that takes long
                    break
            nursery.cancel_scope.cancel()

    handler = Said()
    logging.getLogger("jobwatch").addHandler(handler)
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logging.getLogger("jobwatch").removeHandler(handler)
    assert len(said) == 1 and "watch('job_1')" in said[0] and "Retry" not in said[0], said
