"""``jobwatch providers`` lists every provider and what it offers; ``jobwatch providers NAME``
prints a preset's description, which loads as the generic provider unchanged."""

from __future__ import annotations

import tomllib

import pytest
from _samples import GITHUB, OPENAI, REPLICATE, REPOSITORY

import jobwatch
from jobwatch._cli import main
from jobwatch.providers.generic import GenericProvider
from jobwatch.providers.presets import PRESETS
from jobwatch.testing import ProviderSamples


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_provider_is_listed_with_what_it_offers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "providers")
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and not err
    assert set(rows) >= {"generic", "reader", *PRESETS}
    assert "poll, webhook (standard-webhooks)" in rows["openai-batch"]
    assert "https://api.openai.com/v1" in rows["openai-batch"]
    assert "poll, webhook (github)" in rows["github-actions"]
    assert "poll, sse, webhook (standard-webhooks)" in rows["replicate"]
    assert "[jobwatch.generic]" in rows["generic"]


@pytest.mark.parametrize(
    ("name", "samples", "values"),
    [
        ("openai-batch", OPENAI, None),
        ("github-actions", GITHUB, {"repository": REPOSITORY}),
        ("replicate", REPLICATE, None),
    ],
)
def test_a_printed_preset_watches_the_same_as_generic(
    capsys: pytest.CaptureFixture[str],
    name: str,
    samples: ProviderSamples,
    values: dict[str, str] | None,
) -> None:
    code, out, _ = run(capsys, "providers", name)
    document = tomllib.loads(out)
    assert code == 0 and list(document) == ["jobwatch"]
    document["jobwatch"]["provider"] = "generic"
    if values:
        document["jobwatch"]["generic"]["values"] = values
    copied = GenericProvider.from_config(jobwatch.Config.from_mapping(document, environ={}))
    preset_document: dict[str, object] = {"provider": name}
    if values:
        preset_document[name] = values
    preset = jobwatch.Config.from_mapping({"jobwatch": preset_document}, environ={})
    from jobwatch._registry import base, load

    original = load("provider", name, base("provider")).from_config(preset)
    assert copied.capabilities == original.capabilities
    assert copied.status_request("x") == original.status_request("x")
    for response in samples.statuses.values():
        ours = copied.decode_status(samples.job_id, response, None, source="poll")
        theirs = original.decode_status(samples.job_id, response, None, source="poll")
        assert ours == theirs


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("reader", ["reader is not described in TOML", "openai-batch"]),
        ("nope", ["unknown provider 'nope'", "installed providers are"]),
    ],
)
def test_only_presets_print(
    capsys: pytest.CaptureFixture[str], name: str, words: list[str]
) -> None:
    code, out, err = run(capsys, "providers", name)
    assert code == 2 and out == ""
    assert all(word in err for word in words) and len(err.splitlines()) == 1
