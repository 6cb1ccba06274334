"""When something is wrong, the command says what, in one line on standard error, early."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_support import Sim, run

import jobwatch
from jobwatch._cli import main


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port


def _one_error_line(out: str, err: str) -> str:
    assert out == "", out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobwatch: error: "), err
    assert "Traceback" not in err and "jobwatch retries" not in err
    return lines[0]


@pytest.mark.parametrize("transport", ["poll", "sse"])
def test_a_refused_key_is_one_line_on_stderr(
    sim: Sim,
    config: Path,
    transport: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIM_KEY", "rdr_wrong")
    jobs = [sim.job(*["page"] * 50, delay=5.0), sim.job(*["page"] * 50, delay=5.0)]
    code, out, err = run(capsys, "watch", *jobs, "--config", str(config), "--transport", transport)
    line = _one_error_line(out, err)
    assert code == 1 and "401" in line and "api_key" in line and "rdr_wrong" not in line


def test_a_store_that_is_down_is_one_line(
    sim: Sim, config: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(
        config.read_text().replace('transport = "poll"\n', 'transport = "poll"\nstore = "redis"\n')
        + f'[jobwatch.redis]\nurl = "redis://127.0.0.1:{closed_port}"\n'
    )
    code, out, err = run(capsys, "watch", sim.job("page"), "--config", str(config))
    line = _one_error_line(out, err)
    assert code == 1 and f"127.0.0.1:{closed_port}" in line
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 1 and "store redis: cannot be opened" in out
    assert out.splitlines()[-1].startswith("doctor: jobwatch watch would fail: the store redis")


@pytest.mark.parametrize(
    ("scheme", "transport"), [("http", "poll"), ("https", "poll"), ("http", "sse")]
)
def test_an_api_that_does_not_answer_is_said_early(
    sim: Sim,
    config: Path,
    closed_port: int,
    scheme: str,
    transport: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # http: nothing listens there. https: the simulator listens, but speaks plain HTTP. A
    # stream that cannot connect backs off for a while before it falls back to polling:
    # watch does not wait for that.
    port = closed_port if scheme == "http" else int(sim.url.rsplit(":", 1)[1])
    config.write_text(config.read_text().replace(sim.url, f"{scheme}://127.0.0.1:{port}"))
    started = time.monotonic()
    code, out, err = run(
        capsys, "watch", "job_1", "job_2", "--config", str(config), "--transport", transport
    )
    elapsed = time.monotonic() - started
    line = _one_error_line(out, err)
    assert code == 1 and elapsed < 15, (elapsed, line)
    assert "does not answer" in line and "check base_url" in line
    assert "ConnectError: ;" not in line and "ConnectError (no detail" not in line
    if scheme == "https":
        assert "TLS" in line and "http://" in line


def test_a_base_url_with_the_version_prefix_gets_a_hint(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(config.read_text().replace(sim.url, f"{sim.url}/v1"))
    job = sim.job("page")
    code, out, err = run(capsys, "watch", job, "--config", str(config))
    assert code == 1 and out.count("\n") == 1 and "404" in out
    assert err.splitlines() == [
        f"jobwatch: hint: base_url {sim.url}/v1 ends in /v1, which the reader provider adds "
        f"itself (requests went to {sim.url}/v1/v1/jobs/{job}); remove /v1 from base_url"
    ]
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 1 and "remove /v1 from base_url" in out.splitlines()[-1]


def test_doctor_claims_the_key_accepted_only_when_it_was_checked(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 0 and "accepted the key" in out
    # Under this path the simulator answers 404 whatever the key: nothing was checked.
    config.write_text(config.read_text().replace(sim.url, f"{sim.url}/elsewhere"))
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert "accepted the key" not in out and "the key was not checked" in out


def test_listen_on_a_taken_port_is_a_usage_error_suggesting_port_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "jobwatch.toml"
    config.write_text(
        '[jobwatch]\nstore = "memory"\ntransport = "webhook"\n'
        '[jobwatch.webhook]\nsecrets = ["whsec-cli-port-0123456789"]\n'
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run(
            capsys, "listen", "--config", str(config), "--listen", f"127.0.0.1:{port}"
        )
        sim_run = subprocess.run(
            [sys.executable, "-m", "jobwatch", "sim", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    line = _one_error_line(out, err)
    assert code == 2 and "cannot listen on" in line and "port 0" in line
    assert sim_run.returncode == code and "port 0" in sim_run.stderr


@pytest.mark.parametrize("mode", [["--transport", "poll"], ["--compare"]])
def test_ctrl_c_in_the_demo_leaves_cleanly(mode: list[str]) -> None:
    # The demo's watcher runs inside the simulator's task group: the interrupt arrives there
    # wrapped in an exception group, and must still end as `watch`'s Ctrl-C does.
    import os
    import signal

    demo = subprocess.Popen(
        [sys.executable, "-m", "jobwatch", "demo", *mode, "--pages", "500", "--time-scale", "1"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    assert demo.stdout.readline().startswith("simulator listening on ")
    assert demo.stdout.readline().startswith("submitted batch job ")  # watching
    demo.send_signal(signal.SIGINT)
    _, err = demo.communicate(timeout=20)
    assert demo.returncode == 130, err
    assert err.strip() == "jobwatch: interrupted"


@pytest.mark.parametrize("command", [["watch", "job_1"], ["listen"], ["dashboard"]])
@pytest.mark.parametrize("file", ["jobwatch.toml", "pyproject.toml"])
def test_an_unknown_transport_in_the_file_names_the_file_and_key(
    command: list[str],
    file: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBWATCH_TRANSPORT", raising=False)
    table = "[tool.jobwatch]" if file == "pyproject.toml" else "[jobwatch]"
    (tmp_path / file).write_text(
        f'{table}\ntransport = ["poll", "pol"]\nstore = "memory"\n'
        f'{table[:-1]}.webhook]\nsecrets = ["s"]\n'
    )
    code, out, err = run(capsys, *command)
    line = _one_error_line(out, err)
    assert code == 2
    assert line.startswith(f"jobwatch: error: {file}: {table} transport: unknown transport 'pol'")


@pytest.mark.parametrize("key", ["none", "environment"])
def test_a_refused_key_says_where_it_came_from(
    sim: Sim,
    config: Path,
    key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The file has no key, or JOBWATCH_API_KEY overrides the file's: "check api_key in
    # [jobwatch]" alone sends the user to the wrong place.
    if key == "none":
        config.write_text(config.read_text().replace('api_key = "${SIM_KEY}"\n', ""))
        expected = "[jobwatch] api_key is not set, nor JOBWATCH_API_KEY: set one of them"
    else:
        monkeypatch.setenv("JOBWATCH_API_KEY", "rdr_wrong")
        expected = "the key sent is JOBWATCH_API_KEY's, which overrides [jobwatch] api_key"
    code, out, err = run(capsys, "watch", sim.job("page"), "--config", str(config))
    line = _one_error_line(out, err)
    assert code == 1 and "401" in line and line.endswith(expected), line
    assert "rdr_wrong" not in line


@pytest.fixture
def refusing_api() -> Iterator[str]:
    """A loopback API that answers every request 401, as to a wrong key: its base URL."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"error": {"message": "Incorrect API key provided"}}'
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_refused_key_the_provider_read_itself_is_not_said_to_be_missing(
    refusing_api: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # openai-batch reads OPENAI_API_KEY when [jobwatch] api_key is not set: that key was
    # sent and refused, so "set one of them" would send the user to set a key they have.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBWATCH_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    (tmp_path / "jobwatch.toml").write_text(
        f'[jobwatch]\nprovider = "openai-batch"\nbase_url = "{refusing_api}"\n'
        'transport = "poll"\nstore = "memory"\n'
    )
    code, out, err = run(capsys, "watch", "batch_abc")
    line = _one_error_line(out, err)
    assert code == 1 and "401" in line and "OPENAI_API_KEY" in line, line
    assert "is not set" not in line and "sk-wrong" not in line, line


@pytest.mark.parametrize(
    ("transport", "said"),
    [
        ("carrier", "--transport 'carrier': unknown transport 'carrier'"),
        ("poll,sse", "--transport 'poll,sse': the demo watches with one transport"),
    ],
)
def test_a_bad_demo_transport_is_said_before_the_simulator_starts(
    transport: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "demo", "--transport", transport)
    line = _one_error_line(out, err)
    assert code == 2 and line.startswith(f"jobwatch: error: {said}"), line


def test_a_missing_file_named_by_jobwatch_config_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exported variable is easy to forget: the message names it, not just the path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBWATCH_CONFIG", "gone.toml")
    code, out, err = run(capsys, "watch", "job_1")
    line = _one_error_line(out, err)
    assert code == 2
    assert line.startswith(
        "jobwatch: error: JOBWATCH_CONFIG names the configuration file 'gone.toml', "
        "which does not exist; point it at the file, or unset it"
    ), line


@pytest.mark.parametrize(
    "argv",
    [
        ["--debug", "watch", "job_1"],
        ["watch", "job_1", "--debug"],
        ["doctor", "--debug"],
        ["inbox", "list", "--debug"],
    ],
)
def test_debug_before_or_after_the_command_shows_the_error_itself(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With --debug the error is raised (a traceback) instead of said in one line.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBWATCH_CONFIG", "gone.toml")
    with pytest.raises(jobwatch.ConfigError, match="gone.toml"):
        main(argv)


def test_a_flag_transport_the_provider_cannot_serve_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file says nothing of sse: the message must not send the user to it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobwatch.toml").write_text(
        '[jobwatch]\nprovider = "openai-batch"\napi_key = "sk-test"\nstore = "memory"\n'
    )
    code, out, err = run(capsys, "watch", "batch_1", "--transport", "sse")
    line = _one_error_line(out, err)
    assert code == 2
    assert line.startswith(
        "jobwatch: error: --transport 'sse' asks for sse, but the openai-batch provider has no "
        "event stream; it offers poll, webhook"
    ), line


def test_a_provider_table_that_nothing_reads_is_a_warning(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A preset copied into the file without `provider = ...`: the default provider watches,
    # and the table the user wrote is silently ignored.
    config.write_text(config.read_text() + '[jobwatch.github-actions]\nrepository = "o/r"\n')
    code, _, err = run(capsys, "watch", sim.job("page"), "--config", str(config))
    assert code == 0
    assert err == (
        f"jobwatch: warning: {config} has [jobwatch.github-actions], but provider = "
        '"reader", which does not read it; set provider = "github-actions" under [jobwatch] '
        "to watch that API\n"
    )


def test_watching_with_webhooks_and_no_receiver_is_a_warning(
    sim: Sim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No [jobwatch.webhook] listen: no receiver runs, and the watch would sit until a safety
    # poll (600 s) or its timeout, saying nothing.
    config.write_text(config.read_text() + '[jobwatch.webhook]\nsecrets = ["s"]\n')
    job = sim.job(*["page"] * 50, delay=5.0)
    code, _, err = run(
        capsys, "watch", job, "--config", str(config), "--transport", "webhook", "--timeout", "0.2"
    )
    assert code == 4
    assert err == (
        "jobwatch: warning: the webhook transport receives nothing here: [jobwatch.webhook] "
        "listen is not set, so no receiver runs, and a job's end is seen only through a safety "
        "poll after 600 s of silence; set listen to an address the API's webhooks reach, or "
        "watch with --transport poll\n"
    )
    config.write_text(config.read_text() + 'listen = "127.0.0.1:0"\n')
    code, _, err = run(
        capsys, "watch", job, "--config", str(config), "--transport", "webhook", "--timeout", "0.2"
    )
    assert code == 4 and err == ""


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--certfile", "cert.pem"], "--certfile and --keyfile go together: give both, or neither"),
        (
            ["--certfile", "gone.pem", "--keyfile", "gone.key"],
            "--certfile/--keyfile: cannot use the TLS certificate 'gone.pem'",
        ),
    ],
)
def test_tls_flags_that_cannot_work_are_named_as_flags(
    flags: list[str],
    said: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The file says nothing of TLS: the message must not send the user to it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobwatch.toml").write_text(
        '[jobwatch]\nstore = "memory"\n[jobwatch.webhook]\nsecrets = ["s"]\n'
    )
    code, out, err = run(capsys, "listen", "--listen", "127.0.0.1:0", *flags)
    line = _one_error_line(out, err)
    assert code == 2 and line.startswith(f"jobwatch: error: {said}"), line


@pytest.mark.parametrize("command", [["watch", "job_1"], ["listen"]])
def test_raw_without_json_is_a_usage_error(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # It was ignored: the plain lines came out with no payload, and no word why.
    code, out, err = run(capsys, *command, "--raw")
    line = _one_error_line(out, err)
    assert code == 2 and line == (
        "jobwatch: error: --raw adds each event's payload to the lines of --json; give --json too"
    )


@pytest.mark.parametrize("where", ["file", "environment"])
def test_a_key_with_whitespace_is_a_usage_error_that_does_not_print_it(
    where: str,
    sim: Sim,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # httpx refuses such a header, naming its value: the key reached standard error, under
    # "the API does not answer ... check base_url and the network".
    monkeypatch.chdir(tmp_path)
    key = " rdr_secret_value\n"
    body = f'[jobwatch]\nbase_url = "{sim.url}"\nstore = "memory"\n'
    if where == "file":
        monkeypatch.setenv("KEY", key)
        body += 'api_key = "${KEY}"\n'
    else:
        monkeypatch.setenv("JOBWATCH_API_KEY", key)
    (tmp_path / "jobwatch.toml").write_text(body)
    code, out, err = run(capsys, "watch", "job_1")
    line = _one_error_line(out, err)
    prefix = "JOBWATCH_API_KEY: " if where == "environment" else "jobwatch.toml: "
    assert code == 2 and "rdr_secret_value" not in line
    assert line.startswith(
        f"jobwatch: error: {prefix}[jobwatch] api_key has whitespace or control characters"
    ), line


@pytest.mark.parametrize("command", ["listen", "dashboard"])
@pytest.mark.parametrize("source", ["flag", "file"])
def test_a_taken_port_says_where_its_address_came_from(
    command: str,
    source: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "choose another port" — in the file, or with --listen? The message says which.
    monkeypatch.chdir(tmp_path)
    table = "webhook" if command == "listen" else "dashboard"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        body = f'[jobwatch]\nstore = "memory"\n[jobwatch.{table}]\n'
        body += 'secrets = ["s"]\n' if table == "webhook" else ""
        flags: list[str] = ["--listen", address]
        if source == "file":
            body += f'listen = "{address}"\n'
            flags = []
        (tmp_path / "jobwatch.toml").write_text(body)
        code, out, err = run(capsys, command, *flags)
    line = _one_error_line(out, err)
    where = (
        "(the address of --listen)"
        if source == "flag"
        else f"(the address of [jobwatch.{table}] listen in jobwatch.toml)"
    )
    assert code == 2 and line.startswith("jobwatch: error: cannot listen on ")
    assert line.endswith(where), line


@pytest.mark.parametrize(
    ("command", "default"), [("listen", 8787), ("dashboard", 8788)], ids=["listen", "dashboard"]
)
def test_a_taken_default_address_is_said_to_be_the_default(
    command: str,
    default: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A jobwatch.toml without listen: the address is the default, not "[...] listen in
    # jobwatch.toml", which would send the user to a key the file does not have.
    monkeypatch.chdir(tmp_path)
    table = "webhook" if command == "listen" else "dashboard"
    body = f'[jobwatch]\nstore = "memory"\n[jobwatch.{table}]\n'
    body += 'secrets = ["s"]\n' if table == "webhook" else ""
    (tmp_path / "jobwatch.toml").write_text(body)
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(socket.socket())
        try:
            holder.bind(("127.0.0.1", default))
            holder.listen()
        except OSError:
            pass  # taken already, by another program: as good for this test
        code, out, err = run(capsys, command)
    line = _one_error_line(out, err)
    assert code == 2 and line.startswith("jobwatch: error: cannot listen on "), line
    assert line.endswith(
        f"(the default address: --listen HOST:PORT or [jobwatch.{table}] listen sets another)"
    ), line


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--port", "99999"], "a port is 1 to 65535, or 0 for any free one"),
        (["--port", "-1"], "a port is 1 to 65535, or 0 for any free one"),
        (["--host", "nothere.invalid"], "'nothere.invalid' is not a host name known here"),
        (["--host", "192.0.2.1"], "192.0.2.1 is not an address of this machine"),
    ],
)
def test_sim_on_an_address_it_cannot_have_says_why_in_one_line(
    flags: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A port out of range escaped as an OverflowError traceback; an unknown or foreign host
    # was told to choose another port.
    from jobwatch.sim._runner import main as sim_main

    code = sim_main(flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("jobwatch sim: error: cannot listen on ") and said in err, err


def test_listen_on_a_host_not_known_here_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was told to choose another port.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobwatch.toml").write_text(
        '[jobwatch]\nstore = "memory"\n[jobwatch.webhook]\nsecrets = ["s"]\n'
    )
    code, out, err = run(capsys, "listen", "--listen", "nothere.invalid:0")
    line = _one_error_line(out, err)
    assert code == 2 and line.startswith("jobwatch: error: cannot listen on "), line
    assert "'nothere.invalid' is not a host name known here" in line
    assert "another port" not in line and line.endswith("(the address of --listen)")


@pytest.mark.parametrize("provider", ["openai-batch", "github-actions"])
def test_a_demo_transport_the_provider_cannot_serve_is_named_as_the_flag(
    provider: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # It blamed '[jobwatch] transport = "sse"' in a file the demo does not read, after the
    # fake API had started.
    code, out, err = run(capsys, "demo", "--provider", provider, "--transport", "sse")
    assert code == 2 and out == "", out
    assert err.strip() == (
        f"jobwatch demo: --transport 'sse' asks for sse, but the {provider} provider has no "
        'event stream; it offers poll, webhook: choose from those, or "auto"'
    )
