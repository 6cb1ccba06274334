"""The command on the presets (OpenAI batches, GitHub Actions runs, Replicate predictions),
against the fakes of their APIs served on loopback ports: what doctor and watch say."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import pytest
from _cli_support import run

from jobwatch._fakes import GitHubActionsFake, OpenAIBatchFake, running_fake


@pytest.fixture
def served() -> Iterator[anyio.from_thread.BlockingPortal]:
    with anyio.from_thread.start_blocking_portal("trio") as portal:
        yield portal


@pytest.fixture
def openai(served: anyio.from_thread.BlockingPortal) -> Iterator[OpenAIBatchFake]:
    with served.wrap_async_context_manager(running_fake(OpenAIBatchFake(time_scale=100))) as fake:
        yield fake


@pytest.fixture
def github(served: anyio.from_thread.BlockingPortal) -> Iterator[GitHubActionsFake]:
    with served.wrap_async_context_manager(running_fake(GitHubActionsFake(time_scale=100))) as fake:
        yield fake


def _config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str, base_url: str, more: str = ""
) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "jobwatch.toml"
    path.write_text(
        f'[jobwatch]\nprovider = "{provider}"\nbase_url = "{base_url}"\nstore = "memory"\n'
        'transport = "poll"\n' + more
    )
    return path


def test_doctor_checks_the_key_a_preset_reads_from_the_environment(
    openai: OpenAIBatchFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # api_key is left out, as docs/providers.md allows: OPENAI_API_KEY is read then.
    config = _config(tmp_path, monkeypatch, "openai-batch", openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 0 and "accepted the key" in out, out
    assert "not checked" not in out

    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    last = out.splitlines()[-1]
    assert code == 1 and "no api_key is set" not in out, out
    assert "refused" in last and "OPENAI_API_KEY" in last and "sk-wrong" not in out

    monkeypatch.delenv("OPENAI_API_KEY")
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    last = out.splitlines()[-1]
    assert code == 1 and "no api_key is set" in last and "OPENAI_API_KEY" in last, out


def test_doctor_says_a_key_given_in_the_file_was_checked(
    github: GitHubActionsFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    more = (
        f'api_key = "{github.api_key}"\n'
        f'[jobwatch.github-actions]\nrepository = "{github.repository}"\n'
    )
    config = _config(tmp_path, monkeypatch, "github-actions", github.base_url, more)
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 0 and "accepted the key" in out and "not checked" not in out, out


def test_an_unknown_batch_gets_no_hint_against_the_presets_own_base_url(
    openai: OpenAIBatchFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The preset's base URL is https://api.openai.com/v1: a path is what it should have.
    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    config = _config(tmp_path, monkeypatch, "openai-batch", openai.base_url)
    code, out, err = run(capsys, "watch", "batch_unknown", "--config", str(config))
    assert code == 1 and "404" in out and "check the job id" in out
    assert err == "", err


def test_a_base_url_without_the_presets_path_gets_a_hint(
    served: anyio.from_thread.BlockingPortal,
    openai: OpenAIBatchFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    root = openai.base_url.removesuffix("/v1")
    config = _config(tmp_path, monkeypatch, "openai-batch", root)
    batch_id = served.call(openai.create_batch)
    code, out, err = run(capsys, "watch", batch_id, "--config", str(config))
    assert code == 1 and "404" in out
    assert err.splitlines() == [
        f"jobwatch: hint: no job was found, and base_url {root} lacks /v1, which the "
        "openai-batch provider's base URL (https://api.openai.com/v1) has (requests went to "
        f"{root}/batches/{batch_id}); add /v1 to base_url"
    ]


def test_a_run_not_found_names_the_repository_it_was_looked_for_in(
    served: anyio.from_thread.BlockingPortal,
    github: GitHubActionsFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GitHub answers 404 both for a run that is not there and for a repository the token
    # cannot see: the line says which repository was asked, and where it is configured.
    monkeypatch.setenv("GITHUB_TOKEN", github.api_key)
    more = '[jobwatch.github-actions]\nrepository = "octo-org/elsewhere"\n'
    config = _config(tmp_path, monkeypatch, "github-actions", github.base_url, more)
    run_id = served.call(lambda: github.create_run(outcome="success"))
    code, out, _ = run(capsys, "watch", run_id, "--config", str(config))
    assert code == 1 and "HTTP 404" in out and "check the job id" in out, out
    assert "repository 'octo-org/elsewhere' ([jobwatch.github-actions] repository" in out, out


def test_doctor_fails_a_base_url_without_the_presets_path(
    openai: OpenAIBatchFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every status request then asks for /batches/... instead of /v1/batches/...: a 404.
    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    root = openai.base_url.removesuffix("/v1")
    config = _config(tmp_path, monkeypatch, "openai-batch", root)
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 1, out
    assert out.splitlines()[-1] == (
        f"doctor: jobwatch watch would fail: base_url {root} lacks /v1, which the openai-batch "
        "provider's base URL (https://api.openai.com/v1) has (requests go to "
        f"{root}/batches/...); add /v1 to base_url"
    )
    config = _config(tmp_path, monkeypatch, "openai-batch", openai.base_url)
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 0 and "lacks" not in out, out


@pytest.mark.parametrize("repository", ["https://github.com/octo-org/octo-repo", "octo-org/"])
def test_a_repository_that_is_not_owner_slash_repo_says_what_it_should_be(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    repository: str,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_fake")
    more = f'[jobwatch.github-actions]\nrepository = "{repository}"\n'
    config = _config(tmp_path, monkeypatch, "github-actions", "http://127.0.0.1:9", more)
    code, out, err = run(capsys, "watch", "123", "--config", str(config))
    assert code == 2 and out == "", out
    assert "[jobwatch.github-actions]" in err and "OWNER/REPO" in err, err
