"""A password in ``base_url`` never reaches a log line, an error message or doctor's report."""

from __future__ import annotations

import io
import logging
import socket
import string

import anyio
import httpx
import pytest
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import jobwatch
from jobwatch import ConfigError, Watcher
from jobwatch._config import redact_url
from jobwatch._doctor import doctor
from jobwatch._policy import Signals
from jobwatch.sim import Simulator, running

PASSWORD = "s3cret-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@host/v1", "https://user:***@host/v1"),
        ("https://user:p@ss@host:8443/v1?x=1", "https://user:***@host:8443/v1?x=1"),
        ("https://:pw@host", "https://:***@host"),
        ("https://ghp_token@host/", "https://***@host/"),
        ("https://host/v1?next=a@b", "https://host/v1?next=a@b"),
        ("mail alice@example.com", "mail alice@example.com"),
        ("https://host/v1?api_key=abc&page=2", "https://host/v1?api_key=***&page=2"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
        (
            'GET HTTPS://u:pw@h/x "HTTP/1.1 200 OK" then http://v:pw2@g',
            'GET HTTPS://u:***@h/x "HTTP/1.1 200 OK" then http://v:***@g',
        ),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


PASSWORDS = st.text(string.ascii_letters + string.digits + "@:!$&'()*+,;=-._~%", min_size=1)


@given(password=PASSWORDS)
def test_no_password_survives_redaction(password: str) -> None:
    shown = redact_url(f"https://user:{password}@api.example.com/v1/jobs")
    assert shown == "https://user:***@api.example.com/v1/jobs"
    assert httpx.URL(shown).password == "***"


def _config(base_url: str, **extra: object) -> jobwatch.Config:
    return jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "base_url": base_url,
                "api_key": "rdr_sim",
                "transport": "poll",
                "store": "memory",
                "safety_poll": 0,
                **extra,
            }
        }
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_httpx_request_lines_and_poll_lines_show_no_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = Simulator(time_scale=100)
    job_id = sim.create_job(urls=["https://example.com/a"])
    with caplog.at_level(logging.DEBUG):
        async with running(sim) as url:
            config = _config(
                url.replace("http://", f"http://reader:{PASSWORD}@"), api_key=sim.api_key
            )
            async with Watcher(config) as watcher:
                final = await watcher.wait(job_id, timeout=30)
    assert final.kind == "completed"
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert requests and all("reader:***@" in line for line in requests)
    assert PASSWORD not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param(
            ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
        )
    ],
)
async def test_an_unreachable_api_is_reported_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base_url = f"http://reader:{PASSWORD}@127.0.0.1:{_closed_port()}"
    with caplog.at_level(logging.DEBUG):
        async with Watcher(_config(base_url)) as watcher:
            with anyio.move_on_after(1.0):
                await watcher.wait("job_1", timeout=5)
            with pytest.raises(jobwatch.JobwatchError) as failed:
                with anyio.fail_after(30):
                    async for _ in watcher.results("job_1"):
                        pass
    assert "poll of job job_1 failed" in caplog.text
    assert "reader:***@127.0.0.1" in str(failed.value)
    assert PASSWORD not in caplog.text and PASSWORD not in str(failed.value)


@pytest.mark.anyio
async def test_doctor_shows_no_password_in_its_reachability_line() -> None:
    sim = Simulator()
    async with running(sim) as url:
        reachable = url.replace("http://", f"http://reader:{PASSWORD}@")
        unreachable = f"http://reader:{PASSWORD}@127.0.0.1:{_closed_port()}"
        for base_url in (reachable, unreachable):
            out = io.StringIO()
            await doctor(
                _config(base_url, api_key=sim.api_key),
                out,
                environ={},
                signals=Signals(tty=False, notebook=False, web_server=False),
            )
            report = out.getvalue()
            assert "reachability:" in report and "reader:***@" in report
            assert PASSWORD not in report


def test_a_bad_base_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        _config(f"htps://reader:{PASSWORD}@api.example.com")
    assert "reader:***@" in str(refused.value) and PASSWORD not in str(refused.value)


def test_the_log_filter_keeps_arguments_it_does_not_change() -> None:
    from jobwatch._redact import RedactingFilter

    clean, leaking = (
        jobwatch.NetworkError("refused"),
        jobwatch.NetworkError(f"GET http://u:{PASSWORD}@h/x failed"),
    )
    record = logging.LogRecord(
        "jobwatch.poll",
        logging.INFO,
        __file__,
        1,
        "poll failed: %s; then %s (%d)",
        (clean, leaking, 3),
        None,
    )
    assert RedactingFilter().filter(record)
    assert isinstance(record.args, tuple) and record.args[0] is clean
    assert record.getMessage() == "poll failed: refused; then GET http://u:***@h/x failed (3)"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param(
            ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
        )
    ],
)
async def test_a_header_value_httpx_refuses_is_not_repeated_in_errors_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A provider's credential with a newline: httpx's refusal names the value.
    from jobwatch.providers.reader import ReaderProvider

    class Careless(ReaderProvider):
        def headers(self) -> dict[str, str]:
            return {"x-api-key": f"{PASSWORD}\n"}

    with socket.socket() as listening:  # connections complete; the headers never leave
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        config = _config(f"http://127.0.0.1:{listening.getsockname()[1]}")
        with caplog.at_level(logging.DEBUG):
            async with Watcher(config, provider=Careless(config)) as watcher:
                with pytest.raises(jobwatch.JobwatchError) as failed:
                    with anyio.fail_after(30):
                        async for _ in watcher.results("job_1"):
                            pass
    assert "a header's value is not sendable" in str(failed.value)
    assert "send_request_headers.failed" in caplog.text  # httpcore's trace, redacted
    assert PASSWORD not in caplog.text and PASSWORD not in str(failed.value)


@pytest.mark.parametrize("key", ["rdr_s\u00e9cret", "\u201crdr_secret\u201d", "rdr_secret\n"])
def test_an_api_key_no_header_can_carry_is_refused_without_showing_it(key: str) -> None:
    with pytest.raises(ConfigError, match=r"^\[jobwatch\] api_key .* remove them") as refused:
        _config("https://api.example.com", api_key=key)
    assert "secret" not in str(refused.value)
