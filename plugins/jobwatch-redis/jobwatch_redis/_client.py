"""The one way this plugin talks to Redis: redis-py's sync client in worker threads.

redis-py's asyncio client runs on asyncio only, and jobwatch runs on trio by default; a sync
client called through :func:`anyio.to_thread.run_sync` works on both. Each call borrows a
connection from a bounded pool, and a capacity limiter of the same size keeps the threads from
queueing on the pool. Errors of redis-py are translated here, at the seam, into jobwatch's tree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import anyio
import redis.exceptions as rex
from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobwatch import ConfigError, JobwatchError

__all__ = ["RedisClient", "RedisCommandError", "RedisUnavailable", "describe_url"]

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
    that a failure is :class:`RedisUnavailable`. A password or database Redis refuses is a
    :class:`~jobwatch.ConfigError`. ``table`` is where ``url`` is set and ``names`` the
    option there that names the keys, for errors that say what to change.
    """

    def __init__(
        self,
        url: str,
        *,
        connections: int = 16,
        timeout: float = 2.0,
        table: str = "[jobwatch.redis]",
        names: str = "prefix",
    ) -> None:
        self.url = url
        self._table = table
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
        where = describe_url(self.url)
        path = urlsplit(self.url).path
        if not self.url.startswith("unix:") and not re.fullmatch(r"/?|/[0-9]+/?", path):
            # redis-py ignores a path it cannot read as a number, and uses database 0 (it
            # reads /3/, a number with a slash after it, as database 3).
            raise ConfigError(
                f"{self._table} url {where!r}: the database after the port must be a number "
                f"(redis://host:6379/0), got {path[1:]!r}"
            )
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
            functools.partial(self._translated, fn, client),
            limiter=self._limiter,
            abandon_on_cancel=abandon,
        )

    def _translated(self, fn: Callable[[Redis], T], client: Redis) -> T:
        where, url = describe_url(self.url), f"{self._table} url"
        try:
            return fn(client)
        except rex.AuthenticationError as exc:  # before ConnectionError, its base
            raise ConfigError(
                f"Redis at {where} refused the user or password of {url} ({exc}); "
                "correct them there (redis://user:password@host:port/db, or "
                "redis://:password@host:port/db without an ACL user)"
            ) from None
        except (rex.ConnectionError, rex.TimeoutError, TimeoutError, OSError) as exc:
            raise RedisUnavailable(
                f"Redis at {where} is unavailable ({type(exc).__name__}: {exc}); "
                "check that it runs and is reachable — jobwatch retries"
            ) from exc
        except rex.OutOfMemoryError as exc:
            raise RedisUnavailable(
                f"Redis at {where} is full ({exc}): raise its maxmemory or free "
                "memory, and keep maxmemory-policy noeviction (an evicted dedup key, lease or "
                "inbox delivers events twice or loses them) — jobwatch retries"
            ) from exc
        except rex.NoPermissionError as exc:
            raise ConfigError(
                f"Redis at {where} does not let the user of {url} run what jobwatch needs "
                f"({exc}); grant that user +@all on the key names jobwatch uses, or name "
                "another user there"
            ) from None
        except rex.ResponseError as exc:
            text = str(exc)
            if "DB index" in text:
                raise ConfigError(
                    f"Redis at {where} has no such database ({exc}); correct the number after "
                    f"the port in {url} (a Redis has databases 0 to 15 unless its "
                    "'databases' setting says more)"
                ) from None
            if text.startswith("WRONGTYPE"):
                raise RedisCommandError(
                    f"Redis at {where} holds a key of another type than jobwatch keeps there "
                    f"({exc}): another program uses the same key names; give "
                    f"{self._table} {self._names} a value of its own, or delete that "
                    "program's keys"
                ) from exc
            raise RedisCommandError(f"Redis at {where} refused a command: {exc}") from exc
        except rex.RedisError as exc:
            raise RedisCommandError(f"Redis at {where} refused a command: {exc}") from exc

    def close(self) -> None:
        """Close every pooled connection."""
        if self._redis is not None:
            client, self._redis = self._redis, None
            client.close()
            client.connection_pool.disconnect()


def describe_url(url: str) -> str:
    """A Redis URL without its password, for logs, ``repr()`` and ``jobwatch doctor``: the
    user part's password (``redis://user:***@host``; a user part without one is ``***``) and
    the value of a ``password`` query argument (``unix:///run/redis.sock?password=***``)."""
    url = _USERINFO.sub(
        lambda m: m[1] + (f"{m[2].partition(':')[0]}:***" if ":" in m[2] else "***") + "@", url
    )
    return _QUERY_PASSWORD.sub(r"\1***", url)


# The user part runs to the last "@" before the path or query (a password may hold an "@").
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)([^\s/?#]*)@", re.I)
_QUERY_PASSWORD = re.compile(r"([?&][^=&#\s]*password=)[^&#\s]*", re.I)
