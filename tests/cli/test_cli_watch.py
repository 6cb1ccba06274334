"""``jobwatch watch`` as a new user meets it: what it prints, what it leaves behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli_support import Sim, run

import jobwatch
from jobwatch._cli import main


def test_version_and_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    out, _ = capsys.readouterr()
    assert exit_.value.code == 0 and out.strip() == f"jobwatch {jobwatch.__version__}"
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    assert out.startswith("usage: jobwatch") and "watch" in out and "listen" in out


def test_watch_leaves_no_state_in_the_folder(
    sim: Sim, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "watch", sim.job("page"), "--config", str(config))
    assert code == 0, err
    assert not (tmp_path / ".jobwatch").exists()


def test_a_job_that_was_not_found_is_not_polled_by_later_watches(
    sim: Sim, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With a store configured, state is kept between runs, but not the watch of a job that
    # ended in an error: the next run asks about its own job only.
    config.write_text(
        config.read_text().replace('transport = "poll"\n', 'transport = "poll"\nstore = "sqlite"\n')
    )
    code, _, _ = run(capsys, "watch", "job_mistyped", "--config", str(config))
    assert code == 1 and (tmp_path / ".jobwatch" / "state.db").exists()
    job = sim.job("page")
    time.sleep(0.2)  # finished before it is watched: one poll says so
    before = sim.requests()
    code, _, err = run(capsys, "watch", job, "--config", str(config))
    assert code == 0, err
    assert sim.requests() - before == 1
    assert "job_mistyped" not in err


def test_json_leaves_the_raw_payload_out_unless_asked(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sim.job("page", "page")
    code, out, _ = run(capsys, "watch", job, "--config", str(config), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines and all("data" not in line for line in lines)
    assert jobwatch.JobEvent.from_json(out.splitlines()[-1]).kind == "completed"
    code, out, _ = run(capsys, "watch", job, "--config", str(config), "--json", "--raw")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines and all(isinstance(line["data"], dict) for line in lines)


def test_a_job_seen_first_half_done_is_not_shown_twice_at_that_count(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sim.job(*["page"] * 40, delay=1.0)
    time.sleep(0.3)  # some pages are done when it is first polled
    code, out, err = run(capsys, "watch", job, "--config", str(config))
    assert code == 0, err
    counts = [
        line.split()[2] for line in out.splitlines() if line.split()[1] in ("started", "progress")
    ]
    assert counts[0] != "0/40", out  # the job was indeed seen half done
    assert len(counts) == len(set(counts)), out


def test_watch_says_why_a_job_failed(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sim.job("page", "fail")
    code, out, _ = run(capsys, "watch", job, "--config", str(config))
    reason = sim.portal.call(sim.sim.job, job)["error"]
    assert code == 1 and isinstance(reason, str) and reason
    failed = [line for line in out.splitlines() if line.split()[1] == "failed"]
    assert len(failed) == 1 and f"error: {reason}" in failed[0], out


def test_base_url_from_the_command_line_or_the_environment(
    sim: Sim, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No file at all: what `jobwatch sim` prints is enough to watch it.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBWATCH_API_KEY", sim.sim.api_key)
    job = sim.job("page")
    code, out, err = run(capsys, "watch", job, "--base-url", sim.url, "--transport", "poll")
    assert code == 0 and "completed" in out, err
    monkeypatch.setenv("JOBWATCH_BASE_URL", sim.url)
    code, out, err = run(capsys, "watch", job, "--transport", "poll")
    assert code == 0 and "completed" in out, err
    code, _, err = run(capsys, "watch", job, "--base-url", "localhost:9")
    assert code == 2 and err.startswith("jobwatch: error: --base-url: ") and "http://" in err
    monkeypatch.setenv("JOBWATCH_BASE_URL", "ftp://x")
    code, _, err = run(capsys, "watch", job)
    assert code == 2 and err.startswith("jobwatch: error: JOBWATCH_BASE_URL: ")


@pytest.mark.parametrize("job_id", ["", "   ", "x" * 600, "job\n1"])
def test_an_impossible_job_id_is_a_usage_error(
    job_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "watch", "job_ok", job_id)
    assert code == 2 and out == ""
    assert err.startswith("jobwatch: error: ") and err.count("\n") == 1


def test_a_transport_from_the_environment_is_named_as_such(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBWATCH_TRANSPORT", "carrier")
    code, _, err = run(capsys, "watch", "job_1", "--config", str(config))
    assert code == 2 and err.startswith("jobwatch: error: JOBWATCH_TRANSPORT='carrier': ")
    assert "installed transports are" in err
    # The flag is the more specific choice: it wins over the environment.
    code, out, err = run(
        capsys, "watch", sim.job("page"), "--config", str(config), "--transport", "poll"
    )
    assert code == 0 and "completed" in out, err


def test_iter_events_takes_a_transport(sim: Sim, config: Path) -> None:
    job = sim.job("page", "page")
    loaded = jobwatch.load_config(config).replace(transport="sse", store="memory")
    events = list(jobwatch.iter_events(job, config=loaded, transport="poll", timeout=30))
    assert events[-1].kind == "completed" and {e.source for e in events} == {"poll"}


def test_a_wait_that_times_out_on_an_unreachable_api_says_so(tmp_path: Path) -> None:
    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": "http://127.0.0.1:9",
                "api_key": "rdr_x",
                "transport": "poll",
                "store": "memory",
                "poll": {"interval": 0.1, "max_interval": 0.2},
            }
        }
    )
    with pytest.raises(jobwatch.WatchTimeout) as caught:
        jobwatch.wait("job_1", config=config, timeout=2)
    message = str(caught.value)
    assert "did not answer" in message and "ConnectError" in message, message


def test_the_demo_says_it_is_jobwatch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobwatch.sim

    made: list[jobwatch.sim.Simulator] = []

    class Recorded(jobwatch.sim.Simulator):
        def __init__(self, **options: object) -> None:
            super().__init__(**options)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jobwatch.sim, "Simulator", Recorded)
    code, out, _ = run(capsys, "demo", "--transport", "poll", "--pages", "3", "--time-scale", "60")
    assert code == 0, out
    agents = made[0].request_counts().by_user_agent
    assert set(agents) == {f"jobwatch/{jobwatch.__version__}"}, agents


@pytest.mark.parametrize("form", [[], ["--json"]])
def test_a_reader_that_closes_the_pipe_early_stops_the_watch_quietly(
    sim: Sim, config: Path, tmp_path: Path, form: list[str]
) -> None:
    # `jobwatch watch JOB | head -1`: the next line met a closed pipe, and the command ended
    # with a BrokenPipeError traceback.
    job = sim.job(*["page"] * 400, delay=5.0)  # a page every 0.1 s: 40 s in all
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobwatch", "watch", job, "--config", str(config), *form],
        cwd=tmp_path,
        # the jobwatch this test imports, wherever it is
        env={**os.environ, "PYTHONPATH": str(Path(jobwatch.__file__).parents[1])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with proc:
        assert proc.stdout is not None
        assert job in proc.stdout.readline()
        proc.stdout.close()  # what head does once it has its line
        try:
            _, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 141, err  # as a shell says of a command SIGPIPE stopped
    assert err == ""


def test_a_job_named_twice_is_watched_and_shown_once(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sim.job("page", "page")
    code, out, err = run(capsys, "watch", job, job, "--config", str(config), "--json")
    assert code == 0, err
    keys = [json.loads(line)["key"] for line in out.splitlines()]
    assert keys and len(keys) == len(set(keys)), out
