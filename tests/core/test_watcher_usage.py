"""Mistakes a new user makes with the Python API get a clear answer at once."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import anyio
import httpx
import pytest

import jobwatch
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import ScriptedTransport
from jobwatch.testing._sim import RunningSimulator


def _config(**core: object) -> jobwatch.Config:
    return jobwatch.Config.from_mapping({"jobwatch": {"store": "memory", **core}}, environ={})


@pytest.mark.anyio
async def test_waiting_on_a_watcher_that_was_never_entered_fails_at_once() -> None:
    # Not the whole timeout of nothing, then "check the job".
    watcher = jobwatch.Watcher(_config(), transports=[ScriptedTransport()])
    with anyio.fail_after(5):
        with pytest.raises(jobwatch.WatcherClosed, match="async with"):
            await watcher.wait("job_1", timeout=600)
        with pytest.raises(jobwatch.WatcherClosed, match="async with"):
            async for _ in watcher.watch("job_1"):
                pass
        with pytest.raises(jobwatch.WatcherClosed, match="async with"):
            async for _ in watcher.results("job_1"):
                pass
    # Registering callbacks before entering stays allowed.
    watcher.subscribe(lambda event: None, job_id="job_1")


@pytest.mark.parametrize("kinds", [("complete",), ("completed", "faild")])
def test_an_unknown_event_kind_is_a_jobwatch_error_listing_the_kinds(
    kinds: tuple[str, ...],
) -> None:
    watcher = jobwatch.Watcher(_config(), transports=[ScriptedTransport()])
    with pytest.raises(jobwatch.ConfigError) as caught:
        watcher.on(*kinds)(lambda event: None)
    message = str(caught.value)
    assert repr(kinds[-1]) in message
    assert all(kind.value in message for kind in jobwatch.EventKind)


@pytest.mark.parametrize("kinds", [(), [], set()])
def test_no_kinds_at_all_is_refused_rather_than_never_calling_back(kinds: object) -> None:
    # An empty list matched no event: the callback was never called, and a subscription to a
    # job kept it watched in vain.
    watcher = jobwatch.Watcher(_config(), transports=[ScriptedTransport()])
    with pytest.raises(jobwatch.ConfigError, match=r"kinds is empty.*\"\*\" for every kind"):
        watcher.subscribe(lambda event: None, kinds=kinds, job_id="job_1")  # type: ignore[arg-type]
    with pytest.raises(jobwatch.ConfigError, match="kinds must be event kind names"):
        watcher.subscribe(lambda event: None, kinds=3)  # type: ignore[arg-type]
    assert not watcher._watching  # the job is not watched for a refused subscription


def test_a_single_kind_as_a_string_is_that_kind() -> None:
    watcher = jobwatch.Watcher(_config(), transports=[ScriptedTransport()])
    sub = watcher.subscribe(lambda event: None, kinds="completed")
    assert sub.kinds == frozenset({jobwatch.EventKind.COMPLETED})


def test_a_subscription_shows_what_it_is_not_how_it_works() -> None:
    watcher = jobwatch.Watcher(_config(), transports=[ScriptedTransport()])

    def on_done(event: jobwatch.JobEvent) -> None: ...

    sub = watcher.subscribe(on_done, kinds=("completed", "failed"), job_id="job_9")
    shown = repr(sub)
    assert "on_done" in shown and "completed,failed" in shown and "'job_9'" in shown
    assert "queue" not in shown and "deque" not in shown and "function" not in shown
    sub.cancel()
    assert repr(sub).endswith("cancelled>")


@pytest.mark.parametrize(
    ("core", "warned"),
    [
        ({"transport": "poll"}, True),
        ({"transport": "sse", "sse": {"scope": "job"}}, True),
        ({"transport": "sse", "sse": {"scope": "workspace"}}, False),
        ({"transport": "webhook", "webhook": {"secrets": ["whsec-usage-test-0123456789"]}}, False),
    ],
)
def test_callbacks_for_every_job_warn_once_where_only_watched_jobs_are_reported(
    caplog: pytest.LogCaptureFixture, core: dict[str, object], warned: bool
) -> None:
    watcher = jobwatch.Watcher(_config(**core))
    with caplog.at_level(logging.WARNING, logger="jobwatch"):
        watcher.on("completed")(lambda event: None)
        watcher.on("failed")(lambda event: None)
        watcher.subscribe(lambda event: None, job_id="job_1")
    said = [r.getMessage() for r in caplog.records if "every job" in r.getMessage()]
    assert len(said) == (1 if warned else 0), said
    if warned:
        assert "subscribe(job_id=" in said[0] and "webhooks" in said[0]


@pytest.mark.anyio
async def test_a_job_whose_watch_ended_in_an_error_is_not_watched_by_the_next_watcher(
    reader_sim: RunningSimulator, tmp_path: Path
) -> None:
    # A mistyped id (404) must not be polled again by every later Watcher on the same store.
    path = tmp_path / "state.db"
    config = _config(
        base_url=reader_sim.url,
        api_key=reader_sim.api_key,
        transport="poll",
        poll={"interval": 0.05},
    )
    async with jobwatch.Watcher(config, store=SQLiteStore(path)) as watcher:
        with pytest.raises(jobwatch.JobNotFound):
            await watcher.wait("job_nope", timeout=30)
    store = SQLiteStore(path)
    await store.open()
    try:
        assert [s.job_id for s in await store.active_jobs()] == []
        state = await store.get_job("job_nope")
        assert state is not None and not state.watched
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_every_request_says_it_comes_from_jobwatch(reader_sim: RunningSimulator) -> None:
    job = reader_sim.simulator.create_job(urls=["https://example.com/a"])
    for transport in ("poll", "sse"):
        config = _config(
            base_url=reader_sim.url,
            api_key=reader_sim.api_key,
            transport=transport,
            poll={"interval": 0.05},
        )
        async with jobwatch.Watcher(config, store=MemoryStore()) as watcher:
            await watcher.wait(job, timeout=30)
    agents = reader_sim.simulator.request_counts().by_user_agent
    assert set(agents) == {f"jobwatch/{jobwatch.__version__}"}, agents


def test_errors_in_the_pyproject_table_name_it_as_written(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.jobwatch]\nbogus = 1\n")
    with pytest.raises(jobwatch.ConfigError) as caught:
        jobwatch.load_config(path)
    assert "[tool.jobwatch]" in str(caught.value)
    assert "[jobwatch]" not in str(caught.value).replace("[tool.jobwatch]", "")
    path.write_text('[tool.jobwatch]\nstore = "memory"\n[tool.jobwatch.poll]\ninterval = -1\n')
    with pytest.raises(jobwatch.ConfigError, match=r"\[tool\.jobwatch\.poll\] interval"):
        jobwatch.Watcher(jobwatch.load_config(path))
    path.write_text("[jobwatch]\nbogus = 1\n")
    (tmp_path / "jobwatch.toml").write_text("[jobwatch]\nbogus = 1\n")
    with pytest.raises(jobwatch.ConfigError, match=r"^\S+jobwatch.toml: invalid configuration"):
        jobwatch.load_config(tmp_path / "jobwatch.toml")


@pytest.mark.anyio
async def test_a_direct_wait_that_times_out_on_an_unreachable_api_says_so() -> None:
    # Watcher.wait itself, not only the blocking helpers, names the failures behind a timeout.
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    config = _config(api_key="rdr_x", transport="poll", poll={"interval": 0.1, "max_interval": 0.2})
    async with jobwatch.Watcher(config, http_transport=httpx.MockTransport(refuse)) as watcher:
        with pytest.raises(jobwatch.WatchTimeout) as caught:
            await watcher.wait("job_1", timeout=2)
    message = str(caught.value)
    assert "did not answer" in message and "connection refused" in message, message


@pytest.mark.anyio
@pytest.mark.parametrize("seconds", [float("nan"), "600", True])
async def test_a_timeout_that_is_not_seconds_is_refused_saying_what_is_expected(
    seconds: object,
) -> None:
    # NaN failed with "deadline must not be NaN" from deep inside, and a string read from the
    # environment with "unsupported operand type(s) for +: 'float' and 'str'".
    watcher = jobwatch.Watcher(_config(), transports=[ScriptedTransport()], store=MemoryStore())
    match = r"timeout must be seconds \(a number, e.g. 600\) or None for no deadline, got"
    async with watcher:
        with anyio.fail_after(5), pytest.raises(jobwatch.ConfigError, match=match):
            await watcher.wait("job_1", timeout=seconds)  # type: ignore[arg-type]
    with pytest.raises(jobwatch.ConfigError, match=match):
        jobwatch.wait("job_1", config=_config(), timeout=seconds)  # type: ignore[arg-type]
    with pytest.raises(jobwatch.ConfigError, match=match):
        next(jobwatch.iter_events("job_1", config=_config(), timeout=seconds))  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["wait", "iter_events"])
def test_a_transport_argument_the_provider_cannot_serve_is_named_as_the_argument(
    call: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The argument replaced the file's transport, and the error blamed the file's
    # '[jobwatch] transport = "sse"', which says "poll".
    monkeypatch.delenv("JOBWATCH_TRANSPORT", raising=False)
    path = tmp_path / "jobwatch.toml"
    path.write_text(
        '[jobwatch]\nprovider = "openai-batch"\napi_key = "sk-test"\ntransport = "poll"\n'
        'store = "memory"\n'
    )
    config = jobwatch.load_config(path)
    with pytest.raises(jobwatch.ConfigError) as caught:
        if call == "wait":
            jobwatch.wait("batch_1", config=config, transport="sse", timeout=5)
        else:
            next(jobwatch.iter_events("batch_1", config=config, transport="sse", timeout=5))
    message = str(caught.value)
    assert message.startswith("transport='sse' asks for sse, but the openai-batch provider"), (
        message
    )
    assert "jobwatch.toml" not in message


@pytest.mark.anyio
async def test_a_timeout_of_any_real_number_type_is_seconds() -> None:
    # (A NumPy integer is a numbers.Real, as a Fraction is: such timeouts worked before.)
    watcher = jobwatch.Watcher(_config(), transports=[ScriptedTransport()], store=MemoryStore())
    async with watcher:
        with anyio.fail_after(5), pytest.raises(jobwatch.WatchTimeout):
            await watcher.wait("job_1", timeout=Fraction(1, 20))  # type: ignore[arg-type]
