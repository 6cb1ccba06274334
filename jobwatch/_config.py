"""Configuration: TOML or a mapping in, a frozen and validated :class:`Config` out.

The core knows only the keys of the ``[jobwatch]`` table. Every transport, provider and store
reads the sub-table named after it (``[jobwatch.poll]``, ``[jobwatch.sqlite]``, a plugin's
``[jobwatch.redis]``) through :meth:`Config.options`, which structures it strictly into the
component's own attrs class.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import attrs
import cattrs

from . import providers
from ._errors import ConfigError
from ._redact import install_log_filter
from ._redact import redact_url as redact_url  # where the rest of jobwatch imports it from

# httpx logs every request's URL at INFO, a password in base_url included; httpcore's trace
# names a header value it refused; the poll transport's lines carry the errors of requests.
install_log_filter("httpx", "httpcore.http11", "httpcore.http2", "jobwatch.poll")

__all__ = ["Config", "Secret", "load_config"]

T = TypeVar("T")

#: A run of ``$`` before ``{``, and the variable's name and ``}`` where they follow. Before a
#: brace, ``$$`` stands for one ``$`` (so ``$${X}`` is a literal ``${X}``); an odd ``$`` left
#: over starts a variable. A ``$`` anywhere else is kept as written.
_VAR = re.compile(r"(\$+)\{(?:([A-Za-z_][A-Za-z0-9_]*)\})?")
_CORE_KEYS = ("provider", "base_url", "api_key", "transport", "store", "safety_poll", "dedup_ttl")
DEFAULT_DEDUP_TTL = 7 * 24 * 3600.0
#: The provider a configuration without ``provider`` watches, so that ``jobwatch.wait(job_id)``
#: works with no configuration file at all: the built-in providers name it; its base URL,
#: headers and defaults belong to the provider, never to the core.
DEFAULT_PROVIDER = providers.DEFAULT


class Secret(str):
    """A string that never shows itself in a repr, a log line or ``jobwatch doctor``."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        """The secret's value, for the one place that must send it."""
        return str.__str__(self)

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"


def _strict(kind: type[Any]) -> Any:
    def structure(value: Any, _: Any) -> Any:
        # TOML already has exact types: accept an int for a float, nothing else loosely.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ValueError("an integer above 1e308 is too large here") from None
        if kind is float and value != value:
            # Every comparison with NaN is false, so it would pass any range check unseen.
            raise ValueError("nan is not a number; write the value in seconds")
        if type(value) is not kind and not (kind is str and isinstance(value, str)):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    return structure


def _structure_literal(value: Any, literal: Any) -> Any:
    allowed = get_args(literal)
    if value not in allowed:
        raise ValueError(f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _structure_str_tuple(value: Any, _: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _structure_secret_tuple(value: Any, _: Any) -> tuple[Secret, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        # Said without the value: it is, or holds, a secret.
        raise TypeError(f"expected a list of strings, got {_shape(value)}")
    return tuple(Secret(v) for v in value)


def _structure_secret(value: Any, _: Any) -> Secret | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_shape(value)} (not shown: it may be a secret)")
    return Secret(value)


def _shape(value: Any) -> str:
    """What ``value`` is, without what it holds."""
    if isinstance(value, list | tuple):
        return f"a list of {', '.join(sorted({type(v).__name__ for v in value})) or 'nothing'}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, str, bool):
        conv.register_structure_hook(kind, _strict(kind))
    conv.register_structure_hook(Secret, _structure_secret)
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_str_tuple)
    conv.register_structure_hook_func(lambda t: t == tuple[Secret, ...], _structure_secret_tuple)
    conv.register_structure_hook_func(
        lambda t: getattr(t, "__origin__", None) is Literal, _structure_literal
    )
    return conv


_converter = _make_converter()


def _describe(exc: BaseException, kind: type | None) -> str:
    # cattrs says only "invalid value" for a validator's error; say what the validator said.
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        known = sorted(a.name for a in attrs.fields(exc.cl)) if attrs.has(exc.cl) else []
        return (
            f"unknown key(s) {', '.join(sorted(exc.extra_fields))}; known keys are "
            f"{', '.join(known)}"
        )
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return f"invalid value: {exc}"
    return cattrs.v.format_exception(exc, kind)


def _problems(exc: BaseException, where: str) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        lines = cattrs.transform_error(exc, path=where, format_exception=_describe)
    else:
        lines = [f"{exc} @ {where}"]
    return "; ".join(lines)


def structure(data: Mapping[str, Any], cls: type[T], where: str) -> T:
    """Structure a config table into the attrs class ``cls``; errors name table and key."""
    try:
        return _converter.structure(dict(data), cls)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {_problems(exc, where)}") from None


def _expand(value: Any, where: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            dollars, name = match.group(1), match.group(2)
            literal = "$" * (len(dollars) // 2)
            if len(dollars) % 2 == 0 or name is None:
                # Escaped, or no variable's name: the brace and what follows stay as written.
                odd = "$" if len(dollars) % 2 else ""
                return literal + odd + match.group(0)[len(dollars) :]
            if name not in environ:
                raise ConfigError(
                    f"{where} refers to ${{{name}}}, but the environment variable {name} is not "
                    f"set; export it or write the value into the configuration (to keep "
                    f"${{{name}}} as written, write $${{{name}}})"
                )
            return literal + environ[name]

        return _VAR.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: _expand(v, f"{where}.{k}", environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", environ) for i, v in enumerate(value)]
    return value


def _transport(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    return _structure_str_tuple(value, None)


@attrs.frozen(kw_only=True)
class _Core:
    provider: str = DEFAULT_PROVIDER
    base_url: str | None = None
    api_key: Secret | None = None
    transport: str | tuple[str, ...] = "auto"
    store: str = "sqlite"
    safety_poll: float = 600.0
    dedup_ttl: float = DEFAULT_DEDUP_TTL


_converter.register_structure_hook_func(
    lambda t: t == (str | tuple[str, ...]), lambda v, _: _transport(v)
)
_converter.register_structure_hook_func(
    lambda t: t == (str | None), lambda v, _: None if v is None else _strict(str)(v, None)
)
_converter.register_structure_hook_func(lambda t: t == (Secret | None), _structure_secret)


@attrs.frozen(kw_only=True)
class Config:
    """The resolved configuration of a Watcher.

    Build it with :func:`load_config` or :meth:`Config.from_mapping`; both take the document
    shape of the TOML file, ``{"jobwatch": {...}}``. ``tables`` holds the sub-tables
    (``poll``, ``sse``, ``webhook``, a plugin's own) for the components to structure;
    ``source`` is the file it was read from, if any, which errors in those tables name.
    """

    provider: str = DEFAULT_PROVIDER
    base_url: str | None = attrs.field(
        default=None, repr=lambda url: repr(url if url is None else redact_url(url))
    )
    api_key: Secret | None = None
    transport: str | tuple[str, ...] = "auto"
    store: str = "sqlite"
    safety_poll: float = 600.0
    dedup_ttl: float = DEFAULT_DEDUP_TTL
    tables: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, repr=False)
    source: str | None = attrs.field(default=None, repr=False, eq=False)

    @classmethod
    def from_mapping(
        cls, document: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Validate a ``{"jobwatch": {...}}`` document, expanding ``${VAR}`` from ``environ``."""
        env = os.environ if environ is None else environ
        if not isinstance(document, Mapping) or set(document) - {"jobwatch"}:
            extra = sorted(set(document) - {"jobwatch"}) if isinstance(document, Mapping) else []
            raise ConfigError(
                "a jobwatch configuration is a mapping with one key, 'jobwatch' "
                f"(the [jobwatch] table); found {extra or type(document).__name__}"
            )
        body = document.get("jobwatch", {})
        if not isinstance(body, Mapping):
            raise ConfigError("[jobwatch] must be a table")
        body = _expand(body, "[jobwatch]", env)
        tables = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        scalars = {k: v for k, v in body.items() if k not in tables}
        _check_tables(tables)
        _check_not_tables(scalars)
        core = structure(scalars, _Core, "[jobwatch]")
        _check_core(core)
        return cls(**attrs.asdict(core, recurse=False), tables=tables)

    @property
    def transports(self) -> tuple[str, ...] | None:
        """The transports named explicitly, or None for ``auto``."""
        if self.transport == "auto":
            return None
        return (self.transport,) if isinstance(self.transport, str) else self.transport

    def table(self, name: str) -> Mapping[str, Any]:
        """The raw ``[jobwatch.<name>]`` table (empty when absent)."""
        return self.tables.get(name, {})

    def options(self, name: str, cls: type[T]) -> T:
        """Structure ``[jobwatch.<name>]`` strictly into the attrs class ``cls``."""
        with self.naming_source():
            return structure(self.table(name), cls, f"[jobwatch.{name}]")

    @contextlib.contextmanager
    def naming_source(self) -> Iterator[None]:
        """Inside it, a ConfigError names the file this configuration came from."""
        try:
            yield
        except ConfigError as exc:
            if self.source is None or str(exc).startswith(f"{self.source}: "):
                raise
            raise ConfigError(f"{self.source}: {_as_written(self.source, exc)}") from None

    def replace(self, **changes: Any) -> Config:
        """A copy with core keys changed, e.g. ``config.replace(transport="poll")``; the
        changed values are checked as the file's would be."""
        changed = attrs.evolve(self, **changes)
        _check_core(changed)
        return changed

    def with_table(self, name: str, **values: Any) -> Config:
        """A copy whose ``[jobwatch.<name>]`` table is updated with ``values``."""
        tables = {**self.tables, name: {**self.table(name), **values}}
        return attrs.evolve(self, tables=tables)

    def redacted(self) -> dict[str, Any]:
        """The configuration as a document, with every secret replaced by ``***``."""
        core = {k: getattr(self, k) for k in _CORE_KEYS}
        core["transport"] = (
            list(self.transport) if isinstance(self.transport, tuple) else self.transport
        )
        return {"jobwatch": _redact({**core, **self.tables})}


def _redact(value: Any) -> Any:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {k: "***" if _is_secret_key(k) and v else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _is_secret_key(key: str) -> bool:
    return any(word in key.lower() for word in ("secret", "key", "password", "token"))


def _known_tables() -> list[str]:
    from ._registry import GROUPS, TABLES, installed

    return sorted({name for kind in GROUPS for name in installed(kind)} | set(TABLES))


def _check_not_tables(scalars: Mapping[str, Any]) -> None:
    """A component's table written as something else: ``[[jobwatch.poll]]`` (an array of
    tables) or ``poll = 3``. Its name is known, so "unknown key" would mislead."""
    misplaced = [name for name in scalars if name not in _CORE_KEYS]
    known = _known_tables() if misplaced else []
    for name in misplaced:
        if name in known:
            value = scalars[name]
            written = (
                f"an array of tables ([[jobwatch.{name}]])"
                if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
                else _shape(value)
            )
            raise ConfigError(
                f"[jobwatch.{name}] must be a table, but it is written as {written}; write "
                f"it as one [jobwatch.{name}] table with `key = value` lines under it"
            )


def _check_tables(tables: Mapping[str, Any]) -> None:
    known = _known_tables()
    for name in tables:
        if name in _CORE_KEYS:
            raise ConfigError(
                f"[jobwatch.{name}] must not be a table: {name} is a key of "
                f"[jobwatch] (write `{name} = ...` under [jobwatch])"
            )
        if name not in known:
            raise ConfigError(
                f"unknown table [jobwatch.{name}]: tables are named after an installed "
                f"transport, store or provider ({', '.join(known)}); check the spelling, or "
                "install the plugin that reads it"
            )


def _check_core(core: _Core | Config) -> None:
    if not 0 < core.dedup_ttl < math.inf:
        raise ConfigError(
            "[jobwatch] dedup_ttl must be > 0 seconds and finite (how long a seen event key "
            "is remembered; default 604800, one week; years are fine)"
        )
    if not core.safety_poll >= 0:  # NaN too
        raise ConfigError("[jobwatch] safety_poll must be >= 0 seconds (0 turns it off)")
    if core.base_url is not None and not core.base_url.startswith(("http://", "https://")):
        raise ConfigError(
            "[jobwatch] base_url must start with http:// or https://, "
            f"got {redact_url(core.base_url)!r}"
        )
    if core.api_key is not None and unsendable(core.api_key.reveal()):
        # Said without the key: httpx would refuse the header with the value in its message.
        raise ConfigError(f"[jobwatch] api_key {UNSENDABLE}")
    if isinstance(core.transport, tuple) and not core.transport:
        raise ConfigError("[jobwatch] transport is an empty list; name at least one transport")


#: Why a value is not sendable in a header, said without the value (often a credential).
UNSENDABLE = (
    "has whitespace or control characters at its ends or inside, or a character outside "
    "ASCII (a key copied with a space, a newline or a typographic quote?); remove them"
)


def unsendable(value: str) -> bool:
    """Whether ``value`` cannot go in a header as it is: surrounding whitespace, a control
    character, or a character outside ASCII (which httpx does not send)."""
    return (
        value != value.strip()
        or not value.isascii()
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    )


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load a configuration file.

    With no ``path``: the file named by ``JOBWATCH_CONFIG``, else ``jobwatch.toml`` in the
    current directory, else ``[tool.jobwatch]`` of ``pyproject.toml`` there, else the defaults.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("JOBWATCH_CONFIG"):
        named = Path(env["JOBWATCH_CONFIG"])
        if not named.exists():
            # A variable exported long ago is easy to forget: say it is where the path came from.
            raise ConfigError(
                f"JOBWATCH_CONFIG names the configuration file {str(named)!r}, which does not "
                "exist; point it at the file, or unset it to use jobwatch.toml or "
                "pyproject.toml in the current directory"
            )
        return _load_file(named, env, required=True)
    if path is None:
        for candidate in (Path("jobwatch.toml"), Path("pyproject.toml")):
            if candidate.is_file():
                return _load_file(candidate, env, required=candidate.name == "jobwatch.toml")
        return Config.from_mapping({"jobwatch": {}}, environ=env)
    return _load_file(Path(path), env, required=True)


def _load_file(path: Path, env: Mapping[str, str], *, required: bool) -> Config:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        tool = document.get("tool", {})
        if not isinstance(tool, dict):
            raise ConfigError(
                f"{path}: [tool] must be a table (it holds [tool.jobwatch]), but it is a "
                f"{type(tool).__name__}; write it as [tool.<name>] tables"
            )
        document = {"jobwatch": tool.get("jobwatch", {})}
        if not document["jobwatch"] and required:
            raise ConfigError(f"{path} has no [tool.jobwatch] table")
    try:
        config = Config.from_mapping(document, environ=env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {_as_written(path, exc)}") from None
    return attrs.evolve(config, source=str(path))


def _as_written(source: str | Path, exc: ConfigError) -> str:
    """The error's message naming tables as ``source`` spells them: in a pyproject.toml
    the table is ``[tool.jobwatch]``, not ``[jobwatch]``."""
    message = str(exc)
    if Path(source).name != "pyproject.toml":
        return message
    return message.replace("[jobwatch]", "[tool.jobwatch]").replace("[jobwatch.", "[tool.jobwatch.")
