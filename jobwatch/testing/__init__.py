"""What users need to test their own code against jobwatch.

- :class:`ScriptedTransport` delivers scripted events to a Watcher, with no network;
  :func:`make_event` builds events with the keys the built-in providers give them.
- The ``reader_sim`` pytest fixture serves the Reader simulator on a loopback port
  (load it with ``pytest_plugins = ["jobwatch.testing"]``, or rely on the ``jobwatch``
  pytest plugin that installing jobwatch registers).
- :class:`ScriptedHost` runs one transport on its own, as a Watcher would, and records what
  it delivered, requested and counted.
- :class:`ProviderConformance` (with :class:`ProviderSamples`), :class:`SchemeConformance`,
  :class:`StoreConformance` and :class:`TransportConformance` are suites a plugin's tests
  subclass.
- :class:`OpenAIBatchFake`, :class:`GitHubActionsFake` and :class:`ReplicateFake` are fakes
  of those APIs on loopback (scripted jobs, rate limits, signed webhooks, faults), served by
  :func:`running_fake` or the ``openai_fake``, ``github_fake`` and ``replicate_fake``
  fixtures; :class:`FakeStep`, :class:`FakeFaults` and :class:`FakeDelivery` go with them.
"""

from .._fakes import (
    FakeDelivery,
    FakeFaults,
    FakeStep,
    GitHubActionsFake,
    OpenAIBatchFake,
    ReplicateFake,
    running_fake,
)
from ._conformance import StoreConformance, TransportConformance
from ._host import ScriptedHost
from ._providers import ProviderConformance, ProviderSamples
from ._schemes import SchemeConformance
from ._scripted import ScriptedTransport, make_event

__all__ = [
    "FakeDelivery",
    "FakeFaults",
    "FakeStep",
    "GitHubActionsFake",
    "OpenAIBatchFake",
    "ProviderConformance",
    "ProviderSamples",
    "ReplicateFake",
    "SchemeConformance",
    "ScriptedHost",
    "ScriptedTransport",
    "StoreConformance",
    "TransportConformance",
    "make_event",
    "running_fake",
]
