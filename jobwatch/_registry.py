"""Entry-point registry: one group per seam, built-ins included, loaded lazily."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ._errors import ConfigError, PluginError

__all__ = ["GROUPS", "TABLES", "base", "installed", "load"]

GROUPS = {
    "transport": "jobwatch.transports",
    "provider": "jobwatch.providers",
    "store": "jobwatch.stores",
}
#: Tables read by jobwatch itself rather than by a plugin.
TABLES = ("dashboard",)
#: Webhook signature schemes are chosen by ``[jobwatch.webhook] scheme`` and read no table of
#: their own, so they are not in GROUPS (whose names are also the names of tables).
_KINDS = {**GROUPS, "scheme": "jobwatch.schemes"}


class UnknownPlugin(PluginError, ConfigError):
    """A configuration names a component that is not installed."""


def _points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def base(kind: str) -> type[Any]:
    """The abstract class of ``jobwatch.abc`` that every component of ``kind`` subclasses."""
    from .abc import Provider, Scheme, Store, Transport  # .abc needs the config, which needs us

    bases: dict[str, type[Any]] = {
        "transport": Transport,
        "provider": Provider,
        "store": Store,
        "scheme": Scheme,
    }
    return bases[kind]


def installed(kind: str) -> list[str]:
    """The names installed under the entry point group of ``kind``, sorted."""
    return sorted(_points(_KINDS[kind]))


def load(kind: str, name: str, base: type[Any]) -> Any:
    """Import the ``kind`` named ``name`` and check that it subclasses ``base``."""
    group = _KINDS[kind]
    points = _points(group)
    if name not in points:
        names = ", ".join(sorted(points)) or "none"
        raise UnknownPlugin(
            f"unknown {kind} {name!r}: installed {kind}s are {names} (entry point group "
            f"{group}); check the spelling, or install the package that provides it"
        )
    point = points[name]
    try:
        loaded: Any = point.load()
    except Exception as exc:
        dist = point.dist.name if point.dist is not None else "its package"
        raise PluginError(
            f"the {kind} {name!r} ({point.value}) failed to import: {exc!r}; "
            f"reinstall {dist} or its dependencies"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, base)):
        raise PluginError(
            f"the {kind} {name!r} ({point.value}) is {loaded!r}, not a subclass of "
            f"jobwatch.abc.{base.__name__}"
        )
    return loaded
