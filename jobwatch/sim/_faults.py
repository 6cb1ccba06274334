"""Fault injection for the Reader simulator: the `Faults` value and its spec grammar.

A spec is a comma-separated list of ``name=value`` items, for example::

    drop_sse_after=5,drop_sse_p=0.1,stall_sse=3@10s,error_burst=3,rate_limit_burst=2,
    webhook_dup_p=0.3,webhook_delay=2s,webhook_reorder=true,corrupt_signature_p=0.1,
    receiver_down=5s

Values are integers (``error_burst=3``), probabilities between 0 and 1 (``drop_sse_p=0.1``),
durations (``5s``, ``500ms``, ``2m``, or a bare number of seconds), booleans
(``true/false/yes/no/on/off/1/0``) and, for ``stall_sse``, ``EVENTS@DURATION``. Every duration
is simulated time. Each name may be given once. The counters a simulator keeps use the same
names as the items.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["FAULT_NAMES", "Faults", "parse_duration"]


def _probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability between 0 and 1, got {value}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


@attrs.frozen(kw_only=True)
class Faults:
    """Which faults the simulator injects; the default injects none.

    Attributes:
        drop_sse_after: close every SSE connection abruptly after this many events.
        drop_sse_p: probability that an SSE connection is dropped instead of sending an event.
        stall_sse_after: with `stall_sse_for`, every SSE connection goes silent (no events, no
            pings) after this many events.
        stall_sse_for: how long (simulated seconds) a stalled stream stays silent.
        error_burst: the next N requests to ``/v1/*`` are answered ``500 internal_error``.
        rate_limit_burst: the next N requests to ``/v1/*`` are answered ``429 rate_limited``.
        webhook_dup_p: probability that a delivery is sent a second time, same delivery id.
        webhook_delay: every delivery leaves this many simulated seconds late.
        webhook_reorder: deliveries to one endpoint go out in swapped pairs.
        corrupt_signature_p: probability that an attempt carries a wrong signature.
        receiver_down: for this many simulated seconds after the faults are set, every delivery
            attempt fails as a connection error without reaching the receiver.
    """

    drop_sse_after: int | None = attrs.field(default=None, validator=_non_negative)
    drop_sse_p: float = attrs.field(default=0.0, validator=_probability)
    stall_sse_after: int | None = attrs.field(default=None, validator=_non_negative)
    stall_sse_for: float = attrs.field(default=0.0, validator=_non_negative)
    error_burst: int = attrs.field(default=0, validator=_non_negative)
    rate_limit_burst: int = attrs.field(default=0, validator=_non_negative)
    webhook_dup_p: float = attrs.field(default=0.0, validator=_probability)
    webhook_delay: float = attrs.field(default=0.0, validator=_non_negative)
    webhook_reorder: bool = False
    corrupt_signature_p: float = attrs.field(default=0.0, validator=_probability)
    receiver_down: float = attrs.field(default=0.0, validator=_non_negative)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Build a `Faults` from a spec string; raise `ValueError` naming the bad item."""
        values: dict[str, Any] = {}
        for item in (part.strip() for part in spec.split(",")):
            if item:
                parsed = _parse_item(item)
                if values.keys() & parsed.keys():
                    raise ValueError(f"invalid fault item {item!r}: that fault is given twice")
                values.update(parsed)
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"invalid fault spec {spec!r}: {exc}") from None

    def to_spec(self) -> str:
        """Render these faults in the spec grammar (only the items that differ from the default)."""
        items = []
        default = Faults()
        for name, render in _RENDERERS.items():
            text = render(self)
            if text is not None and text != render(default):
                items.append(f"{name}={text}")
        return ",".join(items)


def parse_duration(text: str) -> float:
    """Parse ``5s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds."""
    text = text.strip().lower()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            return _finite(float(text[: -len(suffix)]) * factor)
    return _finite(float(text))


def _finite(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{value} is not a finite, non-negative duration")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _parse_stall(text: str) -> dict[str, Any]:
    events, sep, duration = text.partition("@")
    if not sep:
        raise ValueError("expected EVENTS@DURATION, e.g. 3@10s")
    return {"stall_sse_after": int(events), "stall_sse_for": parse_duration(duration)}


def _parse_probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value} is not a probability between 0 and 1")
    return value


def _parse_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def _field(name: str, parse: Callable[[str], Any]) -> Callable[[str], dict[str, Any]]:
    return lambda text: {name: parse(text)}


_PARSERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "drop_sse_after": _field("drop_sse_after", _parse_count),
    "drop_sse_p": _field("drop_sse_p", _parse_probability),
    "stall_sse": _parse_stall,
    "error_burst": _field("error_burst", _parse_count),
    "rate_limit_burst": _field("rate_limit_burst", _parse_count),
    "webhook_dup_p": _field("webhook_dup_p", _parse_probability),
    "webhook_delay": _field("webhook_delay", parse_duration),
    "webhook_reorder": _field("webhook_reorder", _parse_bool),
    "corrupt_signature_p": _field("corrupt_signature_p", _parse_probability),
    "receiver_down": _field("receiver_down", parse_duration),
}

#: The fault names of the spec grammar, which are also the keys of the fault counters.
FAULT_NAMES: tuple[str, ...] = tuple(_PARSERS)


def _parse_item(item: str) -> dict[str, Any]:
    name, sep, value = (part.strip() for part in item.partition("="))
    if not sep or not value:
        raise ValueError(f"invalid fault item {item!r}: expected name=value")
    parser = _PARSERS.get(name)
    if parser is None:
        known = ", ".join(FAULT_NAMES)
        raise ValueError(f"invalid fault item {item!r}: unknown fault {name!r} (known: {known})")
    try:
        return parser(value)
    except ValueError as exc:
        raise ValueError(f"invalid fault item {item!r}: {exc}") from None


def _number(value: float) -> str:
    # repr is the shortest text that reads back as the same float; `:g` kept six digits.
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def _seconds(value: float) -> str:
    return f"{_number(value)}s"


_RENDERERS: dict[str, Callable[[Faults], str | None]] = {
    "drop_sse_after": lambda f: None if f.drop_sse_after is None else str(f.drop_sse_after),
    "drop_sse_p": lambda f: _number(f.drop_sse_p),
    "stall_sse": lambda f: (
        None if f.stall_sse_after is None else f"{f.stall_sse_after}@{_seconds(f.stall_sse_for)}"
    ),
    "error_burst": lambda f: str(f.error_burst),
    "rate_limit_burst": lambda f: str(f.rate_limit_burst),
    "webhook_dup_p": lambda f: _number(f.webhook_dup_p),
    "webhook_delay": lambda f: _seconds(f.webhook_delay),
    "webhook_reorder": lambda f: "true" if f.webhook_reorder else "false",
    "corrupt_signature_p": lambda f: _number(f.corrupt_signature_p),
    "receiver_down": lambda f: _seconds(f.receiver_down),
}
