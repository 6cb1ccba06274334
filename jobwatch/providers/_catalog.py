"""What ``jobwatch providers`` prints: every installed provider and what it offers, or a
preset's description."""

from __future__ import annotations

from .._capabilities import Capabilities
from .._errors import ConfigError, JobwatchError
from .._registry import base, installed, load
from .generic import GenericProvider, capabilities_of
from .presets import PRESETS, Preset, preset_description, preset_text

__all__ = ["describe", "listing"]


def _line(name: str) -> tuple[str, str, str]:
    """``(name, what it offers, where and what)`` for one installed provider."""
    try:
        kind = load("provider", name, base("provider"))
    except JobwatchError as exc:
        return name, "-", f"cannot be loaded: {exc}"
    if issubclass(kind, Preset):
        description = preset_description(name)
        return (
            name,
            _offers(capabilities_of(description)),
            f"{description.base_url}  {description.description}",
        )
    if issubclass(kind, GenericProvider):
        return (
            name,
            "as described",
            "any HTTP job API described in [jobwatch.generic] "
            "(jobwatch providers openai-batch prints an example)",
        )
    capabilities = getattr(kind, "capabilities", None)
    url = getattr(kind, "default_base_url", None) or "base_url required"
    offers = _offers(capabilities) if isinstance(capabilities, Capabilities) else "as configured"
    return name, offers, f"{url}  {(kind.__doc__ or '').strip().splitlines()[0]}".rstrip()


def _offers(capabilities: Capabilities) -> str:
    transports = list(capabilities.offers())
    if capabilities.webhooks:
        transports[-1] = f"webhook ({capabilities.webhook_scheme})"
    return ", ".join(transports)


def listing() -> list[str]:
    """One line per installed provider: name, transports it can serve, base URL, summary."""
    rows = [_line(name) for name in installed("provider")]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    return [
        f"{name:<{width[0]}}  {offers:<{width[1]}}  {rest}".rstrip() for name, offers, rest in rows
    ]


def describe(name: str) -> str:
    """The TOML description of the preset ``name``, to copy into ``[jobwatch.generic]``."""
    if name in PRESETS:
        return preset_text(name)
    if name not in installed("provider"):
        load("provider", name, base("provider"))  # raises, listing what is installed
    raise ConfigError(
        f"{name} is not described in TOML, so there is nothing to print: only the presets "
        f"({', '.join(PRESETS)}) are; `jobwatch providers` lists what each provider offers"
    )
