"""``jobwatch.__all__`` (and that of each sub-namespace) is exactly the public surface."""

from __future__ import annotations

import importlib
import types

import pytest

import jobwatch

# Sub-namespaces for distinct audiences, loaded on first use.
SUBMODULES = {"abc", "testing", "sim", "serverless", "providers", "stores", "transports"}
NAMESPACES = ["jobwatch", "jobwatch.abc", "jobwatch.testing"]


def defined_in_jobwatch(value: object) -> bool:
    return (getattr(value, "__module__", None) or "").split(".")[0] == "jobwatch"


@pytest.mark.parametrize("name", NAMESPACES)
def test_all_is_sorted_and_unique(name: str) -> None:
    exported = importlib.import_module(name).__all__
    assert list(exported) == sorted(set(exported))


@pytest.mark.parametrize("name", NAMESPACES)
def test_all_has_no_private_names(name: str) -> None:
    assert not [n for n in importlib.import_module(name).__all__ if n.startswith("_")]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_exported_name_is_importable(namespace: str) -> None:
    module = importlib.import_module(namespace)
    for name in module.__all__:
        assert hasattr(module, name), f"{namespace}.__all__ names {name}, which is missing"
        exec(f"from {namespace} import {name}", {})


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_member_is_exported(namespace: str) -> None:
    # What jobwatch itself defines and shows without an underscore is in __all__; names that
    # merely leak from imports (typing.Any, a module) do not count as jobwatch's own, nor do
    # names a sub-namespace imports from the top-level surface for its signatures.
    module = importlib.import_module(namespace)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and defined_in_jobwatch(value)
    }
    elsewhere = set() if module is jobwatch else set(jobwatch.__all__)
    assert public - set(module.__all__) - elsewhere == set()


def test_exported_members_come_from_jobwatch() -> None:
    for name in jobwatch.__all__:
        value = getattr(jobwatch, name)
        assert defined_in_jobwatch(value), f"jobwatch.{name} is not jobwatch's own"


def test_the_design_surface_is_exported() -> None:
    # DESIGN §4: the names applications and outside tests call.
    design = {
        "Config",
        "load_config",
        "Watcher",
        "JobEvent",
        "EventKind",
        "JobStatus",
        "choose_transport",
        "Decision",
        "Signals",
        "Statistics",
        "Subscription",
        "Retry",
        "wait",
        "iter_events",
        "JobwatchError",
        "ConfigError",
        "PluginError",
        "TransportError",
        "NetworkError",
        "StreamError",
        "APIError",
        "AuthenticationError",
        "JobNotFound",
        "RateLimited",
        "DecodeError",
        "WebhookVerificationError",
        "WatchTimeout",
        "WatcherClosed",
        "Secret",
    }
    assert design <= set(jobwatch.__all__)


def test_errors_form_one_tree() -> None:
    errors = [
        getattr(jobwatch, n)
        for n in jobwatch.__all__
        if n.endswith(("Error", "Timeout", "Closed", "NotFound", "Limited"))
    ]
    assert len(errors) >= 14
    for error in errors:
        assert issubclass(error, jobwatch.JobwatchError)
    assert issubclass(jobwatch.WatchTimeout, TimeoutError)
    for kind in (jobwatch.NetworkError, jobwatch.StreamError, jobwatch.APIError):
        assert issubclass(kind, jobwatch.TransportError)
    for kind in (jobwatch.AuthenticationError, jobwatch.JobNotFound, jobwatch.RateLimited):
        assert issubclass(kind, jobwatch.APIError)


def test_abc_holds_the_three_seams() -> None:
    import jobwatch.abc

    assert {"Provider", "Transport", "Store", "TransportHost", "Scheme"} <= set(
        jobwatch.abc.__all__
    )


def test_testing_holds_the_helpers() -> None:
    import jobwatch.testing

    assert {
        "ScriptedTransport",
        "make_event",
        "StoreConformance",
        "SchemeConformance",
        "TransportConformance",
    } <= set(jobwatch.testing.__all__)
    assert {
        "OpenAIBatchFake",
        "GitHubActionsFake",
        "ReplicateFake",
        "FakeStep",
        "FakeFaults",
        "FakeDelivery",
        "running_fake",
    } <= set(jobwatch.testing.__all__)


@pytest.mark.parametrize("name", ["abc", "testing"])
def test_sub_namespaces_load_on_first_use(name: str) -> None:
    assert getattr(jobwatch, name) is importlib.import_module(f"jobwatch.{name}")


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        jobwatch.nothing_here  # noqa: B018


def test_version() -> None:
    assert isinstance(jobwatch.__version__, str) and jobwatch.__version__.count(".") >= 1


def test_no_submodule_in_all() -> None:
    assert not SUBMODULES & set(jobwatch.__all__)
