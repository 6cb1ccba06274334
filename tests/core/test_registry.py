"""The entry-point registry: built-ins resolve, unknown and broken plugins fail loudly.

Broken plugins are real: a tiny distribution (a ``.dist-info`` folder with an
``entry_points.txt``) is written to a temporary folder put on ``sys.path``.
"""

from __future__ import annotations

import io
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobwatch
from jobwatch import ConfigError, PluginError
from jobwatch._doctor import doctor
from jobwatch._registry import GROUPS, installed, load
from jobwatch.abc import Provider, Store, Transport
from jobwatch.providers.reader import ReaderProvider
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore

MODULES = ("fake_jw_broken", "fake_jw_plugins")

ENTRY_POINTS = """
[jobwatch.stores]
broken = fake_jw_broken:BrokenStore
absent = fake_jw_absent:Store
number = fake_jw_plugins:not_a_class
wrongbase = fake_jw_plugins:NotAStore
missingattr = fake_jw_plugins:NoSuchName
good = fake_jw_plugins:GoodStore

[jobwatch.transports]
wrongseam = fake_jw_plugins:GoodStore
"""

PLUGINS = """
from jobwatch.stores.memory import MemoryStore

not_a_class = 42


class NotAStore:
    pass


class GoodStore(MemoryStore):
    name = "good"
"""


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    info = tmp_path / "fake_jobwatch_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-jobwatch-plugins\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    (tmp_path / "fake_jw_broken.py").write_text(
        "raise ImportError(\"No module named 'fakeredis_client'\")\n"
    )
    (tmp_path / "fake_jw_plugins.py").write_text(textwrap.dedent(PLUGINS))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in MODULES:
        sys.modules.pop(name, None)


def test_groups() -> None:
    assert GROUPS == {
        "transport": "jobwatch.transports",
        "provider": "jobwatch.providers",
        "store": "jobwatch.stores",
    }


def test_builtins_are_entry_points() -> None:
    assert {"memory", "sqlite"} <= set(installed("store"))
    assert "reader" in installed("provider")
    assert {"poll", "sse", "webhook"} <= set(installed("transport"))
    assert installed("store") == sorted(installed("store"))


def test_builtins_load() -> None:
    assert load("store", "memory", Store) is MemoryStore
    assert load("store", "sqlite", Store) is SQLiteStore
    assert load("provider", "reader", Provider) is ReaderProvider


def test_unknown_name_lists_what_is_installed() -> None:
    with pytest.raises(PluginError) as info:
        load("store", "redsi", Store)
    message = str(info.value)
    assert "unknown store 'redsi'" in message
    assert f"installed stores are {', '.join(installed('store'))}" in message
    assert "jobwatch.stores" in message
    assert "install the package" in message


def test_unknown_provider_and_transport() -> None:
    with pytest.raises(PluginError, match=r"installed providers are .*reader"):
        load("provider", "openai", Provider)
    with pytest.raises(PluginError, match=r"installed transports are .*poll.*sse.*webhook"):
        load("transport", "carrier-pigeon", Transport)


def test_plugins_are_found(fake_plugins: Path) -> None:
    assert {"broken", "good", "memory", "sqlite"} <= set(installed("store"))
    good = load("store", "good", Store)
    assert issubclass(good, MemoryStore) and good.name == "good"


def test_broken_import_names_the_plugin_and_how_to_fix_it(fake_plugins: Path) -> None:
    with pytest.raises(PluginError) as info:
        load("store", "broken", Store)
    message = str(info.value)
    assert "the store 'broken' (fake_jw_broken:BrokenStore) failed to import" in message
    assert "fakeredis_client" in message
    assert "reinstall fake-jobwatch-plugins or its dependencies" in message
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_module_names_the_plugin(fake_plugins: Path) -> None:
    with pytest.raises(PluginError, match=r"'absent' \(fake_jw_absent:Store\) failed to import"):
        load("store", "absent", Store)


def test_missing_attribute_names_the_plugin(fake_plugins: Path) -> None:
    with pytest.raises(PluginError, match=r"'missingattr' .* failed to import") as info:
        load("store", "missingattr", Store)
    assert isinstance(info.value.__cause__, AttributeError)


@pytest.mark.parametrize(("name", "found"), [("number", "42"), ("wrongbase", "NotAStore")])
def test_loaded_object_must_subclass_the_seam(fake_plugins: Path, name: str, found: str) -> None:
    with pytest.raises(PluginError) as info:
        load("store", name, Store)
    message = str(info.value)
    assert f"the store {name!r}" in message and found in message
    assert "not a subclass of jobwatch.abc.Store" in message


def test_a_class_of_another_seam_is_refused(fake_plugins: Path) -> None:
    with pytest.raises(PluginError, match="not a subclass of jobwatch.abc.Transport"):
        load("transport", "wrongseam", Transport)


def test_watcher_reports_a_broken_store(fake_plugins: Path) -> None:
    config = jobwatch.Config.from_mapping({"jobwatch": {"store": "broken", "transport": "sse"}})
    with pytest.raises(PluginError, match="'broken'"):
        jobwatch.Watcher(config)


def test_watcher_reports_an_unknown_transport() -> None:
    config = jobwatch.Config.from_mapping({"jobwatch": {"transport": "pigeon"}})
    with pytest.raises(ConfigError, match="unknown transport 'pigeon'") as info:
        jobwatch.Watcher(config)
    assert ", ".join(installed("transport")) in str(info.value)


# -- plugins that break in other ways: each is said, naming its distribution ---------------

TWIN_ENTRY_POINTS = """
[jobwatch.stores]
good = fake_jw_twin:GoodStore
"""

RAISING_ENTRY_POINTS = """
[jobwatch.providers]
raiser = fake_jw_raising:Raiser

[jobwatch.transports]
fitsboom = fake_jw_raising:FitsBoom
"""

RAISING = """
from jobwatch.providers.reader import ReaderProvider
from jobwatch.transports.poll import PollTransport


class Raiser(ReaderProvider):
    name = "raiser"

    @classmethod
    def from_config(cls, config):
        return {}["region"]


class FitsBoom(PollTransport):
    name = "fitsboom"

    @classmethod
    def fits(cls, config, environ, signals):
        raise RuntimeError("no fit today")
"""


def _distribution(folder: Path, name: str, entry_points: str) -> None:
    info = folder / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def twin_plugins(fake_plugins: Path) -> Iterator[Path]:
    """A second distribution that registers a store under a name fake_plugins uses."""
    _distribution(fake_plugins, "fake-jobwatch-twin", TWIN_ENTRY_POINTS)
    (fake_plugins / "fake_jw_twin.py").write_text(textwrap.dedent(PLUGINS))
    yield fake_plugins
    sys.modules.pop("fake_jw_twin", None)


@pytest.fixture
def raising_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    _distribution(tmp_path, "fake-jobwatch-raising", RAISING_ENTRY_POINTS)
    (tmp_path / "fake_jw_raising.py").write_text(textwrap.dedent(RAISING))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("fake_jw_raising", None)


def test_the_wrong_type_names_the_distribution_and_what_to_do(fake_plugins: Path) -> None:
    with pytest.raises(PluginError) as info:
        load("store", "number", Store)
    message = str(info.value)
    assert "the store 'number' (fake_jw_plugins:not_a_class, from fake-jobwatch-plugins)" in (
        message
    )
    assert "upgrade fake-jobwatch-plugins, or uninstall it" in message


def test_a_name_two_distributions_register_is_refused(twin_plugins: Path) -> None:
    assert installed("store").count("good") == 1
    with pytest.raises(PluginError) as info:
        load("store", "good", Store)
    message = str(info.value)
    assert "the store 'good' is registered 2 times in the entry point group jobwatch.stores" in (
        message
    )
    assert (
        "by fake-jobwatch-plugins (fake_jw_plugins:GoodStore) and fake-jobwatch-twin "
        "(fake_jw_twin:GoodStore)" in message
    )
    assert "uninstall all but one of those distributions" in message
    config = jobwatch.Config.from_mapping({"jobwatch": {"store": "good", "transport": "poll"}})
    with pytest.raises(PluginError, match="registered 2 times"):
        jobwatch.Watcher(config, environ={})
    # The other names of both distributions still load.
    assert load("store", "memory", Store) is MemoryStore


def test_a_plugin_that_raises_in_from_config_is_named(raising_plugins: Path) -> None:
    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"provider": "raiser", "api_key": "k", "transport": "poll"}}, environ={}
    )
    with pytest.raises(PluginError) as info:
        jobwatch.Watcher(config, environ={})
    message = str(info.value)
    assert message.startswith(
        "the provider 'raiser' (fake_jw_raising:Raiser, from fake-jobwatch-raising) failed "
        "while reading its configuration (from_config): KeyError('region')"
    )
    assert "check its table [jobwatch.raiser]" in message
    assert isinstance(info.value.__cause__, KeyError)


def test_the_serverless_handler_names_a_plugin_that_raises_in_from_config(
    raising_plugins: Path,
) -> None:
    from jobwatch.serverless import Handler

    config = jobwatch.Config.from_mapping(
        {
            "jobwatch": {
                "provider": "raiser",
                "api_key": "k",
                "store": "memory",
                "webhook": {"secrets": ["s" * 32]},
            }
        },
        environ={},
    )
    with pytest.raises(PluginError) as info:
        Handler(config, on_event=lambda event: None)
    assert str(info.value).startswith(
        "the provider 'raiser' (fake_jw_raising:Raiser, from fake-jobwatch-raising) failed "
        "while reading its configuration (from_config): KeyError('region')"
    )


def test_a_plugin_transport_that_raises_in_fits_is_named(raising_plugins: Path) -> None:
    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"api_key": "k", "fitsboom": {}}}, environ={}
    )
    with pytest.raises(PluginError) as info:
        jobwatch.choose_transport(config, environ={}, signals=jobwatch.Signals())
    assert str(info.value).startswith(
        "the transport 'fitsboom' (fake_jw_raising:FitsBoom, from fake-jobwatch-raising) "
        "failed while deciding whether it fits (fits): RuntimeError('no fit today')"
    )


@pytest.mark.anyio
async def test_doctor_reports_broken_plugins_and_the_rest(
    twin_plugins: Path, raising_plugins: Path
) -> None:
    config = jobwatch.Config.from_mapping(
        {"jobwatch": {"provider": "raiser", "api_key": "k", "store": "memory"}}, environ={}
    )
    out = io.StringIO()
    code = await doctor(config, out, environ={}, signals=jobwatch.Signals())
    lines = out.getvalue().splitlines()
    assert code == 1
    assert lines[-1].startswith(
        "doctor: jobwatch watch would fail: the provider 'raiser' (fake_jw_raising:Raiser, "
        "from fake-jobwatch-raising) failed while reading its configuration"
    )
    twins = [line for line in lines if line.startswith("  jobwatch.stores: good ")]
    assert len(twins) == 2 and all("FAILS: the store 'good' is registered" in t for t in twins)
    assert any(line.startswith("  jobwatch.stores: number ") and "FAILS" in line for line in lines)
    assert "  jobwatch.stores: memory (jobwatch.stores.memory:MemoryStore) ok" in lines
    assert "  jobwatch.providers: reader (jobwatch.providers.reader:ReaderProvider) ok" in lines
    assert "  store memory: options ok" in lines
