"""jobwatch: watch long-running jobs of web APIs by polling, streams or webhooks.

One :class:`Watcher`, interchangeable transports chosen by configuration or by
:func:`choose_transport`, and one normalized :class:`JobEvent` delivered exactly once.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._blocking import iter_events, wait
from ._config import Config, Secret, load_config
from ._dispatch import Retry, Subscription
from ._errors import (
    APIError,
    AuthenticationError,
    ConfigError,
    DecodeError,
    InvalidJobId,
    JobNotFound,
    JobwatchError,
    NetworkError,
    PluginError,
    RateLimited,
    StreamError,
    TransportError,
    WatcherClosed,
    WatchTimeout,
    WebhookVerificationError,
)
from ._events import EventKind, JobEvent, JobStatus
from ._policy import Decision, Signals, choose_transport
from ._watcher import Statistics, Watcher

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it here

__all__ = [
    "APIError",
    "AuthenticationError",
    "Config",
    "ConfigError",
    "Decision",
    "DecodeError",
    "EventKind",
    "InvalidJobId",
    "JobEvent",
    "JobNotFound",
    "JobStatus",
    "JobwatchError",
    "NetworkError",
    "PluginError",
    "RateLimited",
    "Retry",
    "Secret",
    "Signals",
    "Statistics",
    "StreamError",
    "Subscription",
    "TransportError",
    "WatchTimeout",
    "Watcher",
    "WatcherClosed",
    "WebhookVerificationError",
    "choose_transport",
    "iter_events",
    "load_config",
    "wait",
]

_SUBMODULES = ("abc", "serverless", "sim", "testing")


def __getattr__(name: str) -> Any:
    # Sub-namespaces for distinct audiences load on first use, keeping `import jobwatch` light.
    if name in _SUBMODULES:
        return importlib.import_module(f"jobwatch.{name}")
    raise AttributeError(f"module 'jobwatch' has no attribute {name!r}")
