"""The command line, in-process against the simulator served on a loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _cli_support import Sim, run, signed

import jobwatch
from jobwatch._cli import main


def test_watch_json_prints_events_and_exits_0(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sim.job("page", "page", "page")
    code, out, err = run(capsys, "watch", job, "--config", str(config), "--json")
    events = [jobwatch.JobEvent.from_json(line) for line in out.splitlines()]
    assert code == 0, err
    assert events[-1].kind is jobwatch.EventKind.COMPLETED and events[-1].job_id == job
    assert len({e.key for e in events}) == len(events)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (("page", "fail"), 1),
        (("page", "page_error", "page"), 0),
    ],
)
def test_watch_exit_codes(
    sim: Sim,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    steps: tuple[str, ...],
    expected: int,
) -> None:
    job = sim.job(*steps)
    code, _, err = run(capsys, "watch", job, "--config", str(config))
    assert code == expected, err


def test_watch_cancelled_exits_3(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sim.job(*["page"] * 200, delay=5.0)
    sim.cancel(job)
    code, out, _ = run(capsys, "watch", job, "--config", str(config))
    assert code == 3 and "cancelled" in out


def test_watch_timeout_exits_4_and_wins(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = sim.job(*["page"] * 500, delay=50.0)
    failed = sim.job("fail")
    code, out, _ = run(capsys, "watch", slow, failed, "--config", str(config), "--timeout", "1.5")
    assert code == 4
    assert "timeout" in out and "failed" in out


def test_watch_unknown_job_is_one_clear_line(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "watch", "job_nope", "--config", str(config))
    assert code == 1
    assert "job_nope" in out and "404" in out and "Traceback" not in out + err


def test_bad_config_is_usage_error_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[jobwatch]\nbogus = 1\n")
    code, _, err = run(capsys, "watch", "job_1", "--config", str(path))
    assert code == 2
    assert err.count("\n") == 1 and "bogus" in err and "Traceback" not in err


def test_unknown_transport_lists_installed(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "watch", "j", "--config", str(config), "--transport", "carrier")
    assert code == 2 and "'carrier'" in err and "poll" in err


def test_doctor_redacts_and_reports(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 0, out
    assert out.splitlines()[0] == f"configuration file: {config}"
    assert out.splitlines()[-1] == "doctor: ok"
    assert sim.sim.api_key not in out and '"api_key": "***"' in out
    assert "policy: transports poll" in out and "transport = poll" in out
    assert "jobwatch.transports: sse" in out and "HTTP 404" in out


def test_doctor_shows_a_literal_dollar_brace_as_the_configuration_holds_it(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK", "reader")
    with config.open("a") as file:
        file.write(
            '[jobwatch.webhook]\nallow_unsigned = true\npath = "/hooks/$${HOOK}/$$${HOOK}"\n'
        )
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 0, out
    assert '"path": "/hooks/${HOOK}/$reader"' in out


def test_doctor_flags_a_refused_key(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_KEY", "rdr_wrong")
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 1 and "refused the api_key" in out and "rdr_wrong" not in out


def test_demo_poll_completes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "demo", "--transport", "poll", "--pages", "6", "--time-scale", "60")
    assert code == 0, out
    assert "submitted batch job" in out and "completed" in out


def test_sim_command_prints_its_address_first(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobwatch", "sim", "--port", "0", "--api-key", "rdr_cli"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:")
        url = first.removeprefix("listening on ")
        ok = httpx.get(f"{url}/v1/usage/credits", headers={"x-api-key": "rdr_cli"})
        refused = httpx.get(f"{url}/v1/usage/credits", headers={"x-api-key": "rdr_other"})
        assert ok.status_code == 200 and refused.status_code == 401
        assert json.loads(refused.text)["error"]["code"] == "unauthenticated"
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_listen_prints_its_address_then_each_event_once(tmp_path: Path) -> None:
    secret = "whsec-cli-test-0123456789"
    config = tmp_path / "jobwatch.toml"
    config.write_text(
        '[jobwatch]\nstore = "memory"\ntransport = "webhook"\nsafety_poll = 0\n'
        f'[jobwatch.webhook]\nsecrets = ["{secret}"]\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobwatch",
            "listen",
            "--config",
            str(config),
            "--json",
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:"), first
        url = first.removeprefix("listening on ").rstrip("/") + "/hooks/reader"
        body, headers = signed(
            secret,
            "job.completed",
            {
                "jobId": "job_cli",
                "status": "completed",
                "completed": 2,
                "total": 2,
                "creditsUsed": 2,
            },
            "d-1",
        )
        for _ in range(2):  # a retried delivery is dispatched once
            assert httpx.post(url, content=body, headers=headers).status_code == 200
        forged = {**headers, "x-reader-signature": "sha256=" + "0" * 64}
        assert httpx.post(url, content=body, headers=forged).status_code == 401
        event = jobwatch.JobEvent.from_json(proc.stdout.readline())
        assert (event.kind, event.job_id, event.source) == ("completed", "job_cli", "webhook")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert out.strip() == ""  # nothing more was dispatched


def test_demo_compare_prints_the_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "demo", "--compare", "--pages", "6", "--time-scale", "30")
    assert code == 0, out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["poll"], ["sse"], ["webhook"])
    }
    assert set(rows) == {"poll", "sse", "webhook"}
    assert all(row[2] != "n/a" for row in rows.values()), out
    assert rows["webhook"][1] == "0"  # webhooks cost no request


def test_ctrl_c_leaves_cleanly(tmp_path: Path) -> None:
    import signal

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sim = subprocess.Popen(
        [sys.executable, "-m", "jobwatch", "sim", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip().removeprefix("listening on ")
        reply = httpx.post(
            f"{url}/v1/read",
            headers={"x-api-key": "rdr_sim"},
            json={"urls": [f"https://example.com/{n}" for n in range(500)]},
        )
        job = reply.json()["data"]["id"]
        (tmp_path / "jobwatch.toml").write_text(
            f'[jobwatch]\nbase_url = "{url}"\napi_key = "rdr_sim"\ntransport = "poll"\n'
            'store = "memory"\n'
        )
        watch = subprocess.Popen(
            [sys.executable, "-m", "jobwatch", "watch", job],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watch.stdout is not None
        assert job in watch.stdout.readline()  # watching
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=20)
        assert watch.returncode == 130, err
        assert err.strip() == "jobwatch: interrupted"
    finally:
        sim.terminate()
        sim.communicate(timeout=10)


def test_doctor_checks_each_configured_table(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(config.read_text() + '[jobwatch.sse]\nscope = "galaxy"\n')
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 1
    assert f"transport sse: {config}: invalid configuration" in out and "galaxy" in out
    assert "transport poll: options ok" in out


def test_demo_webhook_receives_the_job_by_webhook(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo runs its own receiver, with a secret of its own, and submits the job with a
    # webhook pointing at it: nothing for the user to configure.
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys, "demo", "--transport", "webhook", "--pages", "4", "--time-scale", "60"
    )
    assert code == 0, out + err
    assert "completed" in out and "(via webhook)" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("demo", "--pages", "0"),
        ("demo", "--pages", "-3"),
        ("demo", "--time-scale", "0"),
        ("watch", "j", "--timeout", "-5"),
        ("watch", "j", "--timeout", "0"),
        ("watch", "j", "--timeout", "nan"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    _, err = capsys.readouterr()
    assert exit_.value.code == 2 and "must be greater than 0" in err and "Traceback" not in err


def test_an_empty_transport_list_is_a_usage_error(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not an hour of watching with no transport at all.
    code, _, err = run(capsys, "watch", "j", "--config", str(config), "--transport", ",")
    assert code == 2 and "names no transport" in err
    monkeypatch.setenv("JOBWATCH_TRANSPORT", " , ")
    code, _, err = run(capsys, "watch", "j", "--config", str(config))
    assert code == 2 and "JOBWATCH_TRANSPORT" in err and "names no transport" in err
    with pytest.raises(jobwatch.ConfigError, match="empty list"):
        jobwatch.Config.from_mapping({"jobwatch": {}}).replace(transport=())


@pytest.mark.parametrize("key", ["right", "rdr_wrong"])
def test_a_job_that_cannot_be_watched_is_reported_once(
    sim: Sim,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
) -> None:
    # Both the poll transport and the first reconcile learn it: the user hears it once.
    if key != "right":
        monkeypatch.setenv("SIM_KEY", key)
    code, out, err = run(capsys, "watch", "job_nope", "--config", str(config))
    said = [r.getMessage() for r in caplog.records if "stopped watching" in r.getMessage()]
    assert code == 1
    assert len(said) == 1, said
    assert "job job_nope: job job_nope" not in " ".join(said) + out + err


def test_doctor_builds_the_transports_the_policy_chose(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `watch` would refuse, doctor reports: here a webhook transport with no secret, and
    # a transport that is not installed.
    config.write_text(config.read_text().replace('transport = "poll"', 'transport = "webhook"'))
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 1 and f"transport webhook: {config}: [jobwatch.webhook] secrets is empty" in out
    assert out.splitlines()[-1].startswith("doctor: jobwatch watch would fail: transport webhook")
    config.write_text(config.read_text().replace('transport = "webhook"', 'transport = "pol"'))
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 1 and "policy: error: unknown transport 'pol'" in out


def test_sim_on_a_taken_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "jobwatch", "--debug", "sim", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    # A usage error, as for `jobwatch listen`, with the way out.
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "cannot listen on" in done.stderr
    assert "port 0" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_a_bad_listen_flag_is_named_as_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "listen", "--listen", "nonsense")
    assert code == 2 and err.startswith("jobwatch: error: --listen must be 'HOST:PORT'")


# -- a provider that cannot serve every transport ------------------------------------------------

QUIET = '''
from jobwatch.abc import Capabilities
from jobwatch.providers.reader import ReaderProvider


class QuietReader(ReaderProvider):
    """Reader's wire formats, but an API that only answers polls, at an address of its own."""

    name = "quiet"
    capabilities = Capabilities()
    default_base_url = None
'''


@pytest.fixture
def quiet(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``config`` with ``provider = "quiet"``, an installed plugin provider."""
    site = tmp_path / "site"
    info = site / "fake_quiet-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-quiet\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[jobwatch.providers]\nquiet = fake_jw_quiet:QuietReader\n"
    )
    (site / "fake_jw_quiet.py").write_text(QUIET)
    monkeypatch.syspath_prepend(str(site))
    config.write_text(
        config.read_text().replace("[jobwatch]\n", '[jobwatch]\nprovider = "quiet"\n')
    )
    yield config
    sys.modules.pop("fake_jw_quiet", None)


def test_doctor_fails_where_watch_fails(
    sim: Sim, quiet: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream the provider does not have, asked for in the file or the environment; a
    # provider without a default address and none configured: `watch` refuses to start, and
    # `doctor` fails with the same sentence.
    quiet.write_text(quiet.read_text().replace('transport = "poll"', 'transport = "sse"'))
    code, _, err = run(capsys, "watch", "job_1", "--config", str(quiet))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        f'jobwatch: error: {quiet}: [jobwatch] transport = "sse" asks for '
        "sse, but the quiet provider has no event stream; it offers poll"
    )
    code, out, _ = run(capsys, "doctor", "--config", str(quiet))
    assert (
        code == 1
        and out.splitlines()[-1]
        == f"doctor: jobwatch watch would fail: {err.removeprefix('jobwatch: error: ').strip()}"
    )
    quiet.write_text(quiet.read_text().replace('transport = "sse"', 'transport = "poll"'))
    monkeypatch.setenv("JOBWATCH_TRANSPORT", "webhook")
    code, _, err = run(capsys, "watch", "job_1", "--config", str(quiet))
    assert (
        code == 2
        and "JOBWATCH_TRANSPORT='webhook' asks for webhook, but the quiet provider has no webhooks"
        in err
    )
    code, out, _ = run(capsys, "doctor", "--config", str(quiet))
    assert (
        code == 1
        and out.splitlines()[-1]
        == f"doctor: jobwatch watch would fail: {err.removeprefix('jobwatch: error: ').strip()}"
    )
    monkeypatch.delenv("JOBWATCH_TRANSPORT")
    quiet.write_text(
        "\n".join(
            line for line in quiet.read_text().splitlines() if not line.startswith("base_url")
        )
        + "\n"
    )
    code, _, err = run(capsys, "watch", "job_1", "--config", str(quiet))
    assert code == 2 and "[jobwatch] base_url is not set" in err
    code, out, _ = run(capsys, "doctor", "--config", str(quiet))
    assert code == 1 and "reachability" not in out
    assert (
        out.splitlines()[-1]
        == f"doctor: jobwatch watch would fail: {err.removeprefix('jobwatch: error: ').strip()}"
    )


def test_doctor_and_watch_poll_a_provider_without_streams_in_a_service(
    sim: Sim, quiet: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet.write_text(quiet.read_text().replace('transport = "poll"', 'transport = "auto"'))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    code, out, _ = run(capsys, "doctor", "--config", str(quiet))
    assert code == 0, out
    assert "policy: transports poll; safety net off" in out
    assert "the quiet provider has no event stream: poll" in out
    job = sim.job("page", "page")
    code, out, err = run(capsys, "watch", job, "--config", str(quiet), "--json")
    assert code == 0, err
    assert jobwatch.JobEvent.from_json(out.splitlines()[-1]).source == "poll"


def test_json_says_a_job_that_could_not_be_watched_in_the_documented_shape(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/cli.md: no `kind`; `error` is "error" or "timeout"; `message` says why.
    code, out, _ = run(capsys, "watch", "job_nope", "--json", "--config", str(config))
    [line] = out.splitlines()
    assert code == 1 and json.loads(line) == {
        "job_id": "job_nope",
        "error": "error",
        "message": "Reader answered HTTP 404 not_found: Job not found; check the job id",
    }
    running = sim.job(*["page"] * 50, delay=5.0)
    code, out, _ = run(
        capsys, "watch", running, "--json", "--timeout", "0.5", "--config", str(config)
    )
    last = json.loads(out.splitlines()[-1])
    assert code == 4 and last["error"] == "timeout" and "kind" not in last


def test_the_progress_rate_counts_only_what_was_done_while_watching() -> None:
    # A job 40 pages in when the watch began did not do 40 pages in its first half second.
    import io

    from jobwatch._cli import _RichRenderer
    from jobwatch.testing import make_event

    renderer = _RichRenderer(io.StringIO())
    now = [100.0]
    renderer.progress.get_time = lambda: now[0]
    with renderer:
        renderer.begin("job_1")
        now[0] = 100.5
        renderer.event(make_event("started", completed=40, total=50))
        assert renderer.progress.tasks[0].fields["rate"] == ""
        now[0] = 102.5
        renderer.event(make_event("progress", completed=50, total=50))
        assert renderer.progress.tasks[0].fields["rate"] == "5.0/s"
