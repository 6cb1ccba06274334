"""The ``jobwatch`` pytest plugin: the ``reader_sim`` fixture, the API fakes' fixtures
(``openai_fake``, ``github_fake``, ``replicate_fake``) and their options."""

from __future__ import annotations

try:
    from ._fake_apis import *  # noqa: F403 - fixtures are found by name
    from ._sim import *  # noqa: F403
except ImportError:  # pragma: no cover - the simulator is part of jobwatch
    pass
