"""The one way this plugin talks to Redis: redis-py's sync client in worker threads.

redis-py's asyncio client runs on asyncio only, and jobwatch runs on trio by default; a sync
client called through :func:`anyio.to_thread.run_sync` works on both. Each call borrows a
connection from a bounded pool, and a capacity limiter of the same size keeps the threads from
queueing on the pool. Errors of redis-py are translated here, at the seam, into jobwatch's tree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import anyio
import redis.exceptions as rex
from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobwatch import ConfigError, JobwatchError

from ._logic import describe_url

__all__ = ["RedisClient", "RedisCommandError", "RedisUnavailable"]

T = TypeVar("T")


class RedisUnavailable(JobwatchError):
    """Redis did not answer (refused, reset, timed out, loading), or is full. Retry later.

    A webhook receiver answers 503 when recording fails with it, so the sender retries.
    """


class RedisCommandError(JobwatchError):
    """Redis refused a command (wrong key type, a missing consumer group, ...)."""


class RedisClient:
    """A pool of ``connections`` sync connections to ``url``, used from worker threads.

    ``timeout`` bounds connecting, each command and the wait for a free connection. A
    connection found dead is reconnected once, transparently (Redis restarted, say); after
    that a failure is :class:`RedisUnavailable`. ``names`` is the option that names the keys
    (``[jobwatch.redis] prefix``), for errors that say what to change.
    """

    def __init__(
        self,
        url: str,
        *,
        connections: int = 16,
        timeout: float = 2.0,
        names: str = "[jobwatch.redis] prefix",
    ) -> None:
        self.url = url
        self._names = names
        self._connections = connections
        self._timeout = timeout
        self._limiter = anyio.CapacityLimiter(connections)
        self._redis: Redis | None = None

    def __repr__(self) -> str:
        return f"RedisClient({describe_url(self.url)!r})"

    @property
    def redis(self) -> Redis:
        """The sync client (for calls already running in a worker thread)."""
        if self._redis is None:
            self._redis = self._connect()
        return self._redis

    def _connect(self) -> Redis:
        try:
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self._connections,
                timeout=self._timeout,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 1),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise ConfigError(f"not a usable Redis URL {describe_url(self.url)!r}: {exc}") from None
        return Redis(connection_pool=pool)

    async def call(self, fn: Callable[[Redis], T], *, abandon: bool = False) -> T:
        """Run ``fn(client)`` in a worker thread; ``abandon``: do not wait for it on cancel
        (blocking reads, which end on their own within their block time)."""
        client = self.redis
        return await anyio.to_thread.run_sync(
            functools.partial(_translated, fn, client, self.url, self._names),
            limiter=self._limiter,
            abandon_on_cancel=abandon,
        )

    def close(self) -> None:
        """Close every pooled connection."""
        if self._redis is not None:
            client, self._redis = self._redis, None
            client.close()
            client.connection_pool.disconnect()


def _translated(fn: Callable[[Redis], T], client: Redis, url: str, names: str) -> T:
    try:
        return fn(client)
    except (rex.ConnectionError, rex.TimeoutError, TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"Redis at {describe_url(url)} is unavailable ({type(exc).__name__}: {exc}); "
            "check that it runs and is reachable — jobwatch retries"
        ) from exc
    except rex.OutOfMemoryError as exc:
        raise RedisUnavailable(
            f"Redis at {describe_url(url)} is full ({exc}): raise its maxmemory or free "
            "memory, and keep maxmemory-policy noeviction (an evicted dedup key, lease or "
            "inbox delivers events twice or loses them) — jobwatch retries"
        ) from exc
    except rex.ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            raise RedisCommandError(
                f"Redis at {describe_url(url)} holds a key of another type than jobwatch "
                f"keeps there ({exc}): another program uses the same key names; give {names} "
                "a value of its own, or delete that program's keys"
            ) from exc
        raise RedisCommandError(f"Redis at {describe_url(url)} refused a command: {exc}") from exc
    except rex.RedisError as exc:
        raise RedisCommandError(f"Redis at {describe_url(url)} refused a command: {exc}") from exc
