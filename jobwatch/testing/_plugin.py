"""The ``jobwatch`` pytest plugin: the ``reader_sim`` fixture and its options."""

from __future__ import annotations

try:
    from ._sim import *  # noqa: F403 - fixtures are found by name
except ImportError:  # pragma: no cover - the simulator is part of jobwatch
    pass
