"""``jobwatch listen`` stops as a service should: on SIGTERM or SIGINT, after what is in flight."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from _cli_support import signed

import jobwatch
from jobwatch.stores.sqlite import SQLiteStore

SECRET = "whsec-cli-listen-0123456789"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _listen(config: Path, backend: str = "trio") -> subprocess.Popen[str]:
    return subprocess.Popen(
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
            "--backend",
            backend,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _address(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    assert first.startswith("listening on http://127.0.0.1:"), first
    return first.removeprefix("listening on ")


def _stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[str, str]:
    os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=20)
    return out, err


def _config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "jobwatch.toml"
    path.write_text(
        f'[jobwatch]\ntransport = "webhook"\nsafety_poll = 0\n{store}\n'
        f'[jobwatch.webhook]\nsecrets = ["{SECRET}"]\n'
    )
    return path


@pytest.mark.parametrize(
    ("signum", "backend"),
    [(signal.SIGTERM, "trio"), (signal.SIGINT, "trio"), (signal.SIGTERM, "asyncio")],
)
def test_a_delivery_in_flight_is_finished_then_listen_exits_0(
    tmp_path: Path, signum: int, backend: str
) -> None:
    config = _config(
        tmp_path, f'store = "sqlite"\n[jobwatch.sqlite]\npath = "{tmp_path / "state.db"}"'
    )
    proc = _listen(config, backend)
    try:
        host, port = _address(proc).removeprefix("http://").split(":")
        body, headers = signed(
            SECRET,
            "job.completed",
            {
                "jobId": "job_stop",
                "status": "completed",
                "completed": 2,
                "total": 2,
                "creditsUsed": 2,
            },
            "d-stop",
        )
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            # The server says "100 Continue" once the receiver reads the body: from then on
            # the delivery is in flight.
            conn.sendall(
                f"POST /hooks/reader HTTP/1.1\r\nhost: {host}\r\n{head}"
                f"expect: 100-continue\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            )
            assert conn.recv(100).startswith(b"HTTP/1.1 100")
            conn.sendall(body[:10])
            os.kill(proc.pid, signum)
            assert proc.stderr is not None
            said = proc.stderr.readline()
            assert signal.Signals(signum).name in said and "stopping" in said, said
            conn.sendall(body[10:])  # the rest of a delivery that was in flight
            assert conn.recv(100).startswith(b"HTTP/1.1 200")
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    # Answered 200 means recorded: the next start hands it to the application.
    again = _listen(config)
    try:
        _address(again)
        assert again.stdout is not None
        event = jobwatch.JobEvent.from_json(again.stdout.readline())
        assert (event.job_id, event.kind) == ("job_stop", "completed")
    finally:
        _stop(again)


@pytest.fixture
def redis_store() -> Iterator[tuple[str, str]]:
    """``[jobwatch.redis]`` lines for a fresh prefix and owner, and the owner's lease key."""
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"this test needs Redis on 127.0.0.1:6379 ({exc})")
    prefix, owner = f"jw-cli-{uuid.uuid4().hex[:8]}", "cli-listener"
    yield (
        (
            f'store = "redis"\n[jobwatch.redis]\nurl = "redis://127.0.0.1:6379/15"\n'
            f'prefix = "{prefix}"\nowner = "{owner}"\nlease = 4.0'
        ),
        f"{prefix}:lease:{owner}",
    )
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.mark.redis
def test_listen_gives_its_lease_back_and_a_start_that_must_wait_says_so(
    tmp_path: Path, redis_store: tuple[str, str]
) -> None:
    import redis

    table, lease = redis_store
    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    config = _config(tmp_path, table)
    first = _listen(config)
    try:
        url = _address(first)
        assert client.exists(lease)
        # A second process under the same owner waits for the lease, and says so at once.
        second = _listen(config)
        assert second.stderr is not None
        said = second.stderr.readline()
        assert "holds a lease" in said and "waiting" in said, said
        out, err = _stop(second)
        assert second.returncode == 0 and out == "", err
        body, headers = signed(
            SECRET,
            "job.completed",
            {
                "jobId": "job_lease",
                "status": "completed",
                "completed": 1,
                "total": 1,
                "creditsUsed": 1,
            },
            "d-lease",
        )
        assert httpx.post(f"{url}/hooks/reader", content=body, headers=headers).status_code == 200
        out, err = _stop(first)
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == 0 and "Traceback" not in err, err
    assert "job_lease" in out
    assert not client.exists(lease)  # given back: a restart under this owner starts at once
    client.close()


@pytest.mark.redis
def test_a_dashboard_waiting_for_the_lease_stops_on_a_signal(
    tmp_path: Path, redis_store: tuple[str, str]
) -> None:
    table, _ = redis_store
    config = _config(tmp_path, table)
    config.write_text(config.read_text() + 'listen = "127.0.0.1:0"\n')  # [jobwatch.webhook]
    holder = _listen(config)
    try:
        _address(holder)
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "jobwatch", "dashboard", "--config", str(config)]
            + ["--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert dashboard.stderr is not None
        said = dashboard.stderr.readline()
        assert "holds a lease" in said, said  # it waits for the owner's lease...
        began = time.monotonic()
        out, err = _stop(dashboard)  # ... and hears the signal meanwhile
        assert dashboard.returncode == 0, err
        assert "SIGTERM: stopping" in err and "Traceback" not in err
        assert time.monotonic() - began < 4.0  # sooner than the lease could pass
    finally:
        _stop(holder)


def test_a_reader_that_closes_the_pipe_stops_listen_quietly(tmp_path: Path) -> None:
    # `jobwatch listen --json | head -1`: the events are printed by a callback, whose
    # BrokenPipeError the Watcher took for a failing callback (retried, then a dead letter),
    # so listen went on serving, printing nothing, for ever.
    proc = _listen(_config(tmp_path, 'store = "memory"'))
    try:
        url = _address(proc)
        assert proc.stdout is not None
        proc.stdout.close()  # what head does once it has its line
        for n in range(2):  # the first line may still fit in the pipe's buffer
            body, headers = signed(
                SECRET,
                "job.completed",
                {
                    "jobId": f"job_pipe_{n}",
                    "status": "completed",
                    "completed": 1,
                    "total": 1,
                    "creditsUsed": 1,
                },
                f"d-pipe-{n}",
            )
            try:
                httpx.post(f"{url}/hooks/reader", content=body, headers=headers, timeout=10)
            except httpx.TransportError:  # listen has stopped
                break
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 141, err  # as a shell says of a command SIGPIPE stopped
    assert "Traceback" not in err, err


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_an_event_listen_could_not_print_stays_in_the_inbox(tmp_path: Path, backend: str) -> None:
    # A closed pipe is no reader that has seen the event: it stays in the store's inbox, and
    # the next `jobwatch listen` on that store prints it.
    config = _config(
        tmp_path, f'store = "sqlite"\n[jobwatch.sqlite]\npath = "{tmp_path / "state.db"}"'
    )
    proc = _listen(config, backend)
    try:
        url = _address(proc)
        assert proc.stdout is not None
        proc.stdout.close()
        body, headers = signed(
            SECRET,
            "job.completed",
            {
                "jobId": "job_unread",
                "status": "completed",
                "completed": 1,
                "total": 1,
                "creditsUsed": 1,
            },
            "d-unread",
        )
        reply = httpx.post(f"{url}/hooks/reader", content=body, headers=headers, timeout=10)
        assert reply.status_code == 200  # recorded before it is printed
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 141, err

    async def inbox() -> tuple[list[str | None], int]:
        store = SQLiteStore(tmp_path / "state.db")
        await store.open()
        try:
            return [e.job_id for e in await store.pending()], len(await store.dead_letters())
        finally:
            await store.aclose()

    assert anyio.run(inbox) == (["job_unread"], 0)
