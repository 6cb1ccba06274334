"""``jobwatch dashboard``: the address first, port 0, a clean stop on SIGTERM and SIGINT, and
a refusal to serve beyond loopback without a token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _dashboard_support import TOKEN, Process, Sim, running, write_config

from jobwatch._cli import main
from jobwatch.transports._serve import GRACEFUL_TIMEOUT


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with running(["sim", "--port", "0"], cwd=tmp_path_factory.mktemp("sim")) as proc:
        sim = Sim(proc.url)
        yield sim
        sim.client.close()


@pytest.mark.parametrize(
    ("signum", "backend"),
    [(signal.SIGTERM, "asyncio"), (signal.SIGINT, "asyncio"), (signal.SIGTERM, "trio")],
)
def test_it_prints_the_bound_address_first_and_stops_cleanly_on_a_signal(
    tmp_path: Path, sim: Sim, signum: int, backend: str
) -> None:
    config = write_config(tmp_path, sim.url)
    dashboard = Process(
        ["dashboard", "--config", str(config), "--listen", "127.0.0.1:0", "--backend", backend],
        cwd=tmp_path,
    )
    try:
        assert dashboard.url.startswith("http://127.0.0.1:")
        assert not dashboard.url.endswith(":0")
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.get(dashboard.url + "/jobs", headers=bearer).status_code == 200
        # A browser keeps its stream open: the stop ends it rather than waiting for it.
        with httpx.stream("GET", dashboard.url + "/events", headers=bearer) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) == "retry: 1000"
            assert next(lines) == "event: snapshot"
            # The Watcher watches and the stream relays, on either loop: a job the simulator
            # runs now reaches the open stream.
            job_id = sim.job(2, delay=0.01)
            assert any(job_id in line for line in lines if line.startswith("data: "))
            dashboard.popen.send_signal(signum)
            # The streams end at once: the server need not wait out its grace period. A
            # stream the server ends closes with its last chunk, and the browser reconnects;
            # one still open when the grace period runs out is cut off. Read first, so the
            # order is the server's and not the machine's speed.
            try:
                for _ in lines:
                    pass
            except httpx.RemoteProtocolError as exc:
                raise AssertionError(
                    f"the stop cut the stream off ({exc}): it was still open when the "
                    f"server's grace period ({GRACEFUL_TIMEOUT} s) ran out"
                ) from None
            assert dashboard.popen.wait(10) == 0
        assert f"jobwatch: {signal.Signals(signum).name}: stopping" in dashboard.output()
    finally:
        dashboard.close()


def test_it_refuses_to_listen_beyond_loopback_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", token=None)
    code = main(["dashboard", "--config", str(config), "--listen", "0.0.0.0:0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "[jobwatch.dashboard] token" in err and "listen on 127.0.0.1" in err


def test_a_bad_listen_address_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    assert main(["dashboard", "--config", str(config), "--listen", "here"]) == 2
    assert "--listen must be 'HOST:PORT'" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["file", "environment"])
def test_a_refused_key_ends_it_saying_what_to_do(tmp_path: Path, sim: Sim, key: str) -> None:
    # The workspace stream was refused and the dashboard went on serving "live" with no jobs
    # and nothing in its statistics: with no transport left, it ends, and says why.
    config = write_config(tmp_path, sim.url)
    env = {**os.environ}
    env.pop("JOBWATCH_API_KEY", None)
    if key == "file":
        config.write_text(config.read_text().replace('"rdr_sim"', '"rdr_wrong"'), "utf-8")
    else:
        env["JOBWATCH_API_KEY"] = "rdr_wrong"
    done = subprocess.run(
        [sys.executable, "-m", "jobwatch", "dashboard", "--config", str(config)]
        + ["--listen", "127.0.0.1:0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done
    errors = [line for line in done.stderr.splitlines() if line.startswith("jobwatch: error: ")]
    assert len(errors) == 1 and "401" in errors[0], done.stderr
    assert "check api_key" in errors[0] and "rdr_wrong" not in done.stderr
    overridden = "the key sent is JOBWATCH_API_KEY's, which overrides [jobwatch] api_key"
    assert errors[0].endswith(overridden) == (key == "environment"), errors[0]
