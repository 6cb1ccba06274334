"""Entry-point registry: one group per seam, built-ins included, loaded lazily."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, JobwatchError, PluginError

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["GROUPS", "TABLES", "base", "blame", "build", "installed", "load"]

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


def _points(group: str) -> dict[str, list[EntryPoint]]:
    points: dict[str, list[EntryPoint]] = {}
    for point in entry_points(group=group):
        same = points.setdefault(point.name, [])
        if all(point.value != other.value for other in same):
            same.append(point)
    return points


def _dist(point: EntryPoint) -> str:
    return point.dist.name if point.dist is not None else "the package that provides it"


def _origin(point: EntryPoint) -> str:
    return f"({point.value}, from {_dist(point)})"


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


def _point(kind: str, name: str) -> EntryPoint:
    group = _KINDS[kind]
    points = _points(group)
    if name not in points:
        names = ", ".join(sorted(points)) or "none"
        raise UnknownPlugin(
            f"unknown {kind} {name!r}: installed {kind}s are {names} (entry point group "
            f"{group}); check the spelling, or install the package that provides it"
        )
    found = points[name]
    if len(found) > 1:
        each = " and ".join(sorted(f"{_dist(p)} ({p.value})" for p in found))
        raise PluginError(
            f"the {kind} {name!r} is registered {len(found)} times in the entry point group "
            f"{group}, by {each}, so which one to use is not known; uninstall all but one of "
            "those distributions"
        )
    return found[0]


def load(kind: str, name: str, base: type[Any]) -> Any:
    """Import the ``kind`` named ``name`` and check that it subclasses ``base``."""
    point = _point(kind, name)
    try:
        loaded: Any = point.load()
    except Exception as exc:
        raise PluginError(
            f"the {kind} {name!r} ({point.value}) failed to import: {exc!r}; "
            f"reinstall {_dist(point)} or its dependencies"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, base)):
        raise PluginError(
            f"the {kind} {name!r} {_origin(point)} is {loaded!r}, not a subclass of "
            f"jobwatch.abc.{base.__name__}; it cannot be used: upgrade {_dist(point)}, or "
            "uninstall it and report this to its authors"
        )
    return loaded


@contextmanager
def blame(kind: str, name: str, doing: str) -> Iterator[None]:
    """Turn an exception other than a JobwatchError, raised in the block by the ``kind``
    named ``name`` while ``doing`` something, into a PluginError naming it and its
    distribution: a plugin's bug is said, not shown as a traceback."""
    try:
        yield
    except JobwatchError:
        raise
    except Exception as exc:
        try:
            origin = " " + _origin(_point(kind, name))
        except PluginError:
            origin = ""
        raise PluginError(
            f"the {kind} {name!r}{origin} failed while {doing}: {exc!r}; check its table "
            f"[jobwatch.{name}] against its documentation, else upgrade its distribution "
            "or report this to its authors"
        ) from exc


def build(kind: str, name: str, config: Config) -> Any:
    """The ``kind`` named ``name``, built from ``config`` (its ``from_config``)."""
    component = load(kind, name, base(kind))
    with blame(kind, name, "reading its configuration (from_config)"):
        return component.from_config(config)
