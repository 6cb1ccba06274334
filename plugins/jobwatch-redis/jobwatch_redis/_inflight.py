"""The relay's stream entries whose events are not yet handled (sans-I/O)."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._keys import unqualify

__all__ = ["InFlight"]


@attrs.define
class InFlight:
    """Stream entries handed to the pipeline whose callbacks have not all finished.

    The relay adds each entry id with its event key; :meth:`settled` takes the keys still in
    the store's inbox and returns the entry ids that may be acknowledged now.
    """

    _keys: dict[str, str] = attrs.field(factory=dict)

    def add(self, entry_id: str, key: str) -> None:
        self._keys[entry_id] = unqualify(key)

    def settled(self, pending_keys: Iterable[str]) -> list[str]:
        """Entry ids whose key is no longer pending; they leave the tracker."""
        waiting = {unqualify(k) for k in pending_keys}
        done = [i for i, k in self._keys.items() if k not in waiting]
        for entry_id in done:
            del self._keys[entry_id]
        return done

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
