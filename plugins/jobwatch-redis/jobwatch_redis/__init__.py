"""jobwatch-redis: the distributed tier of jobwatch.

- :class:`RedisStore` (``store = "redis"``, options ``[jobwatch.redis]``): dedup keys, job
  state, stream checkpoints and per-process inboxes on Redis, so that a fleet of webhook
  receivers deduplicates against each other.
- :class:`RelayTransport` (``transport = "relay"``, options ``[jobwatch.relay]``): receivers
  publish every dispatched event to a Redis Stream; workers in other processes consume it
  through a consumer group, acknowledge after their callbacks, and claim what a dead worker
  left.

Both are found by jobwatch through entry points; nothing here is imported by jobwatch itself.
"""

from ._client import RedisCommandError, RedisUnavailable
from ._relay import RelayOptions, RelayTransport
from ._store import LeaseLost, RedisOptions, RedisStore

__version__ = "0.1.0"

__all__ = [
    "LeaseLost",
    "RedisCommandError",
    "RedisOptions",
    "RedisStore",
    "RedisUnavailable",
    "RelayOptions",
    "RelayTransport",
]
