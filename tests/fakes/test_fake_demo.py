"""``jobwatch demo --provider NAME``: the preset of that name watches its fake, in-process."""

from __future__ import annotations

import pytest

from jobwatch import _cli
from jobwatch._fakes import _demo
from jobwatch._registry import installed

RUNS = [
    ("openai-batch", "poll"),
    ("openai-batch", "webhook"),
    ("github-actions", "poll"),
    ("github-actions", "webhook"),
    ("replicate", "poll"),
    ("replicate", "sse"),
    ("replicate", "webhook"),
]


def preset(name: str) -> pytest.MarkDecorator:
    # The presets register as providers of their own names; until one is installed, its demo
    # says so (see the test below) and this test waits for it.
    return pytest.mark.skipif(
        name not in installed("provider"), reason=f"the {name} provider is not installed yet"
    )


@pytest.mark.parametrize(
    ("provider", "transport"), [pytest.param(p, t, marks=preset(p)) for p, t in RUNS]
)
def test_the_demo_watches_each_fake_to_the_end(
    provider: str, transport: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _cli.main(
        [
            "demo",
            "--provider",
            provider,
            "--transport",
            transport,
            "--pages",
            "3",
            "--time-scale",
            "20",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith(f"fake {provider} API listening on http://127.0.0.1:")
    assert f"watching with {transport}" in out
    assert "  completed  " in out
    if transport == "webhook":  # a thin delivery is answered by one status request
        assert "0 webhook deliveries" not in out


def test_without_the_provider_the_demo_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_demo, "installed", lambda kind: ["reader"])
    assert _cli.main(["demo", "--provider", "replicate"]) == 2
    err = capsys.readouterr().err
    assert "the replicate provider is not installed in this jobwatch (installed: reader)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--provider", "stripe"], "there is no fake of a 'stripe' API; --provider takes reader, "),
        (["--provider", "replicate", "--compare"], "--compare runs on the Reader simulator only"),
    ],
)
def test_a_wrong_provider_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli.main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err
