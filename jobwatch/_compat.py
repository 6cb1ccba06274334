"""What keeps plugins written against an older jobwatch working: which keywords they take."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["takes_keyword"]


def takes_keyword(method: Callable[..., Any], name: str) -> bool:
    """Whether ``method`` (bound or not) accepts the keyword argument ``name``: a store or a
    sink written before a keyword existed is called without it."""
    return _takes(getattr(method, "__func__", method), name)


@functools.cache
def _takes(function: Callable[..., Any], name: str) -> bool:
    # Asked on every delivery: answered once per function.
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read: call it as it was always called
        return False
    named = parameters.get(name)
    if named is not None:
        return named.kind in (named.KEYWORD_ONLY, named.POSITIONAL_OR_KEYWORD)
    return any(p.kind is p.VAR_KEYWORD for p in parameters.values())
