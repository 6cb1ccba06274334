"""The entry-point registry: built-ins resolve, unknown and broken plugins fail loudly.

Broken plugins are real: a tiny distribution (a ``.dist-info`` folder with an
``entry_points.txt``) is written to a temporary folder put on ``sys.path``.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobwatch
from jobwatch import ConfigError, PluginError
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
