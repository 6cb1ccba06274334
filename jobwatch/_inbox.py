"""``jobwatch inbox``: the store's dead letters and undelivered events — list, show, replay, drop.

A dead letter is an event whose callback kept failing (see :class:`jobwatch.Retry`); an
undelivered event is one recorded but not yet handled by every callback (the process stopped
first). Both are dispatched by the next Watcher on the store only if they are in its inbox:
``replay`` moves a dead letter back there, ``drop`` forgets an event for good.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from ._config import Config
from ._errors import ConfigError, JobwatchError
from ._events import JobEvent
from ._registry import build
from .abc import Store

__all__ = ["inbox"]

ACTIONS = ("list", "show", "replay", "drop")

NEXT_START = (
    "the next Watcher on this store dispatches it when it starts (jobwatch listen, "
    "or your application)"
)


class NotKept(JobwatchError):
    """No dead letter or undelivered event has the key asked for."""


@attrs.frozen
class _Entry:
    """One line of the listing: a dead letter (with its subscriber) or an undelivered event."""

    event: JobEvent
    subscriber: str | None = None
    error: str | None = None

    @property
    def state(self) -> str:
        return "undelivered" if self.subscriber is None else "dead"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.event.key, "state": self.state}
        if self.subscriber is not None:
            out.update(subscriber=self.subscriber, error=self.error)
        return {**out, "event": self.event.to_dict()}

    def line(self) -> str:
        """The entry on one line: what the API or a callback wrote (a job id, an error with a
        newline, a terminal's escape sequence) is shown escaped, as ``\\n`` or ``\\x1b``."""
        event = self.event
        key, job = _shown(event.key), _shown(event.job_id or "-")
        said = f"{key}  {self.state}  {event.kind.value}  job {job}"
        if self.subscriber is None:
            return said
        return f"{said}  {_shown(self.subscriber)}: {_shown(self.error or '')}"


def _shown(text: str) -> str:
    """``text`` with each character that is not printable (a line break, a control
    character) written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


async def inbox(
    config: Config, action: str, key: str | None, *, as_json: bool, out: TextIO
) -> None:
    """Run one ``jobwatch inbox`` action on the configured store, writing to ``out``."""
    store = _store(config)
    await store.open()
    try:
        if action == "list":
            for entry in await _entries(store):
                out.write((json.dumps(entry.to_dict()) if as_json else entry.line()) + "\n")
        elif action == "show":
            _show(await _of(store, _key(key)), as_json, out)
        elif action == "replay":
            out.write(await _replay(store, _key(key)) + "\n")
        else:
            if not await store.drop(_key(key)):
                raise _not_kept(key)
            out.write(f"dropped {key}: it will not be dispatched\n")
    finally:
        await store.aclose()


def _store(config: Config) -> Store:
    with config.naming_source():
        store: Store = build("store", config.store, config)
    if store.name == "memory":
        raise ConfigError(
            "the memory store keeps nothing once its process ends: configure a "
            'durable store (store = "sqlite" or "redis") to keep dead letters'
        )
    path = store.describe().get("path")
    if store.name == "sqlite" and path != ":memory:" and not Path(str(path)).exists():
        raise ConfigError(
            f"no sqlite store at {path}: run this where the application runs, "
            "or give --config with its [jobwatch.sqlite] path"
        )
    return store


async def _entries(store: Store) -> list[_Entry]:
    dead = [_Entry(e, s, err) for e, s, err in await store.dead_letters()]
    return dead + [_Entry(e) for e in await store.pending()]


async def _of(store: Store, key: str) -> list[_Entry]:
    found = [entry for entry in await _entries(store) if entry.event.key == key]
    if not found:
        raise _not_kept(key)
    return found


def _show(found: Sequence[_Entry], as_json: bool, out: TextIO) -> None:
    event = found[-1].event
    failures = [{"subscriber": e.subscriber, "error": e.error} for e in found if e.subscriber]
    if as_json:
        out.write(
            json.dumps(
                {
                    "key": event.key,
                    "dead_letters": failures,
                    "undelivered": any(e.subscriber is None for e in found),
                    "event": event.to_dict(),
                }
            )
            + "\n"
        )
        return
    for entry in found:
        out.write(entry.line() + "\n")
    out.write(json.dumps(event.to_dict(), indent=2) + "\n")


async def _replay(store: Store, key: str) -> str:
    if await store.replay_dead_letter(key):
        return f"replayed {key}: back in the inbox; {NEXT_START}"
    if any(event.key == key for event in await store.pending()):
        return f"{key} is in the inbox already, undelivered: {NEXT_START}"
    raise _not_kept(key)


def _key(key: str | None) -> str:
    if not key:
        raise ConfigError("give the event's KEY, as `jobwatch inbox list` shows it")
    return key


def _not_kept(key: str | None) -> NotKept:
    return NotKept(
        f"no dead letter or undelivered event has the key {key!r}; `jobwatch inbox list` shows them"
    )
