"""Fakes of the job APIs jobwatch has presets for: OpenAI batches, GitHub Actions runs,
Replicate predictions. Real HTTP on loopback, scripted job timelines in simulated time,
signed webhooks and injected faults; public through :mod:`jobwatch.testing`.

They live outside ``jobwatch.testing`` so that ``jobwatch demo`` runs without pytest.
"""

from ._fake_api import FakeFaults, FakeStep
from ._serve import running_fake
from ._webhooks import FakeDelivery
from .github import GitHubActionsFake
from .openai import OpenAIBatchFake
from .replicate import ReplicateFake

__all__ = [
    "FakeDelivery",
    "FakeFaults",
    "FakeStep",
    "GitHubActionsFake",
    "OpenAIBatchFake",
    "ReplicateFake",
    "running_fake",
]

#: The fake of each preset, by provider name.
FAKES = {kind.provider: kind for kind in (OpenAIBatchFake, GitHubActionsFake, ReplicateFake)}
