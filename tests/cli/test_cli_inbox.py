"""``jobwatch inbox``: list, show, replay and drop dead letters and undelivered events."""

from __future__ import annotations

import functools
import json
import sqlite3
from pathlib import Path

import pytest
import trio
from _cli_support import run

import jobwatch
from jobwatch.abc import Verdict
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import ScriptedTransport, make_event

DEAD = make_event("completed", "job_1", data={"pages": 3})
UNDELIVERED = make_event("started", "job_2")


def recorded(event: jobwatch.JobEvent, state: object) -> Verdict:
    return Verdict(event=event)


def keep(
    path: Path,
    *undelivered: jobwatch.JobEvent,
    dead: jobwatch.JobEvent | None = None,
    error: str = "",
) -> None:
    """A sqlite store at ``path`` that keeps ``undelivered`` in its inbox and ``dead``, if
    given, as a dead letter of ``notify`` that failed with ``error``."""

    async def main() -> None:
        store = SQLiteStore(path)
        await store.open()
        for event in (*([dead] if dead else []), *undelivered):
            await store.record(event.job_id, functools.partial(recorded, event), ttl=60)
        if dead is not None:
            await store.ack(dead.key)
            await store.dead_letter(dead, "notify", error)
        await store.aclose()

    trio.run(main)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A jobwatch.toml whose sqlite store keeps a dead letter and an undelivered event."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "jobwatch.toml"
    path.write_text(
        '[jobwatch]\napi_key = "rdr_test"\nstore = "sqlite"\n[jobwatch.sqlite]\npath = "state.db"\n'
    )

    keep(tmp_path / "state.db", UNDELIVERED, dead=DEAD, error="RuntimeError: mail server down")
    return path


def test_list_shows_dead_letters_and_undelivered_events(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = run(capsys, "inbox", "--config", str(config), "list")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{DEAD.key}  dead  completed  job job_1  notify: RuntimeError: mail server down",
        f"{UNDELIVERED.key}  undelivered  started  job job_2",
    ]
    code, out, _ = run(capsys, "inbox", "list", "--json")  # jobwatch.toml in the folder
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(x["key"], x["state"]) for x in lines] == [
        (DEAD.key, "dead"),
        (UNDELIVERED.key, "undelivered"),
    ]
    assert jobwatch.JobEvent.from_dict(lines[0]["event"]) == DEAD


def test_show_tells_why_it_failed(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, _ = run(capsys, "inbox", "show", DEAD.key)
    assert code == 0 and "notify: RuntimeError: mail server down" in out
    assert '"pages": 3' in out
    code, out, _ = run(capsys, "inbox", "show", DEAD.key, "--json")
    shown = json.loads(out)
    assert shown["dead_letters"] == [
        {"subscriber": "notify", "error": "RuntimeError: mail server down"}
    ]
    assert shown["undelivered"] is False and shown["event"]["data"] == {"pages": 3}


def test_a_replayed_dead_letter_is_dispatched_by_the_next_watcher(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = run(capsys, "inbox", "replay", DEAD.key)
    assert (code, err) == (0, "")
    assert out.startswith(f"replayed {DEAD.key}: back in the inbox; the next Watcher")
    assert "dispatches it when it starts" in out
    code, out, _ = run(capsys, "inbox", "list")
    assert code == 0 and " dead " not in out and f"{DEAD.key}  undelivered" in out
    code, out, _ = run(capsys, "inbox", "replay", UNDELIVERED.key)
    assert code == 0 and "in the inbox already" in out

    got: list[str] = []

    async def next_start() -> None:
        both = trio.Event()

        def handle(event: jobwatch.JobEvent) -> None:
            got.append(event.key)
            if len(got) == 2:
                both.set()

        watcher = jobwatch.Watcher(jobwatch.load_config(config), transports=[ScriptedTransport()])
        watcher.subscribe(handle)
        async with watcher:
            with trio.fail_after(5):
                await both.wait()

    trio.run(next_start)
    assert sorted(got) == sorted([DEAD.key, UNDELIVERED.key])
    code, out, _ = run(capsys, "inbox", "list")
    assert (code, out) == (0, "")


def test_drop_forgets_for_good(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    for key in (DEAD.key, UNDELIVERED.key):
        code, out, _ = run(capsys, "inbox", "drop", key)
        assert (code, out) == (0, f"dropped {key}: it will not be dispatched\n")
    assert run(capsys, "inbox", "list") == (0, "", "")


@pytest.mark.parametrize("action", ["show", "replay", "drop"])
def test_an_unknown_key_is_one_line_saying_where_to_look(
    capsys: pytest.CaptureFixture[str], config: Path, action: str
) -> None:
    code, out, err = run(capsys, "inbox", action, "job_9:terminal")
    assert (code, out) == (1, "")
    assert err == (
        "jobwatch: error: no dead letter or undelivered event has the key "
        "'job_9:terminal'; `jobwatch inbox list` shows them\n"
    )


def test_a_store_that_keeps_nothing_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "memory.toml").write_text('[jobwatch]\napi_key = "k"\nstore = "memory"\n')
    code, _, err = run(capsys, "inbox", "--config", "memory.toml", "list")
    assert code == 2 and "the memory store keeps nothing" in err
    (tmp_path / "sqlite.toml").write_text('[jobwatch]\napi_key = "k"\nstore = "sqlite"\n')
    code, _, err = run(capsys, "inbox", "--config", "sqlite.toml", "list")
    assert code == 2 and "no sqlite store at .jobwatch/state.db" in err
    assert not (tmp_path / ".jobwatch").exists()  # looking created nothing


def test_an_action_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "inbox")
    assert exit_.value.code == 2 and "list" in capsys.readouterr().err


@pytest.mark.parametrize("table", ["dead_letters", "inbox"])
def test_an_entry_this_jobwatch_cannot_read_is_named_and_can_be_dropped(
    table: str, capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    # An event kind a newer jobwatch wrote: every inbox command failed with "malformed
    # event", naming no entry and no way out, and the entry could not be dropped.
    key = DEAD.key if table == "dead_letters" else UNDELIVERED.key
    db = sqlite3.connect(config.parent / "state.db")
    with db:
        db.execute(f"UPDATE {table} SET event = json_set(event, '$.kind', 'paused')")
    db.close()
    code, out, err = run(capsys, "inbox", "list")
    assert code != 0 and out == ""
    assert f"{key!r} cannot be read by this jobwatch" in err, err
    assert f"jobwatch inbox drop {key}" in err and "Traceback" not in err
    code, out, _ = run(capsys, "inbox", "drop", key)
    assert code == 0 and out.startswith(f"dropped {key}")
    code, out, _ = run(capsys, "inbox", "list")
    assert code == 0 and key not in out and out.count("\n") == 1


def test_list_keeps_each_entry_on_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A callback's error spanning lines (a traceback, an HTTP error with its body) and a job id
    # holding a terminal's escape sequence broke `list` into lines that were no entries, and
    # the escape reached the terminal.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobwatch.toml").write_text(
        '[jobwatch]\napi_key = "k"\nstore = "sqlite"\n[jobwatch.sqlite]\npath = "state.db"\n'
    )
    dead = make_event("completed", "job_\x1b[2Jü")
    undelivered = make_event("started", "job\n2")

    keep(
        tmp_path / "state.db", undelivered, dead=dead, error="HTTPError: 502\r\n<html>\tdown</html>"
    )
    code, out, err = run(capsys, "inbox", "list")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "job_\\x1b[2Jü:terminal  dead  completed  job job_\\x1b[2Jü"
        "  notify: HTTPError: 502\\r\\n<html>\\tdown</html>",
        "job\\n2:started  undelivered  started  job job\\n2",
    ]
    code, out, _ = run(capsys, "inbox", "list", "--json")  # as kept, for scripts
    assert [json.loads(line)["key"] for line in out.splitlines()] == [dead.key, undelivered.key]


def test_a_key_that_begins_with_a_dash_is_given_after_double_dash(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    # The event of a job whose id begins with - has a key argparse reads as an option: the
    # error said only that KEY was missing, or that -h took no argument.
    flagged = make_event("started", "-h")
    unknown = make_event("started", "--x")

    keep(config.parent / "state.db", flagged, unknown)
    for key in (flagged.key, unknown.key):
        with pytest.raises(SystemExit) as exit_:
            run(capsys, "inbox", "drop", key)
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        assert "a KEY that begins with - goes after --: jobwatch inbox drop -- KEY" in err
        code, out, _ = run(capsys, "inbox", "drop", "--", key)
        assert (code, out) == (0, f"dropped {key}: it will not be dispatched\n")


def test_the_way_out_of_an_unreadable_entry_is_a_command_that_runs(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    flagged = make_event("started", "-job 7")

    keep(config.parent / "state.db", flagged)
    db = sqlite3.connect(config.parent / "state.db")
    with db:
        db.execute(
            "UPDATE inbox SET event = json_set(event, '$.kind', 'paused') "
            "WHERE json_extract(event, '$.key') = ?",
            (flagged.key,),
        )
    db.close()
    code, _, err = run(capsys, "inbox", "list")
    assert code != 0 and "`jobwatch inbox drop -- '-job 7:started'`" in err, err
    code, out, _ = run(capsys, "inbox", "drop", "--", flagged.key)  # as the shell passes it
    assert code == 0 and out.startswith(f"dropped {flagged.key}")
