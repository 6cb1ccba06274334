"""The delays between retries while Redis is away (sans-I/O: the caller sleeps)."""

from __future__ import annotations

import random

import attrs

__all__ = ["Backoff"]


@attrs.define
class Backoff:
    """Exponential backoff with equal jitter: each delay between half and all of a ceiling
    that doubles from ``initial`` up to ``maximum`` seconds."""

    initial: float = 0.05
    maximum: float = 5.0
    attempt: int = 0

    def next_delay(self, rng: random.Random | None = None) -> float:
        """The next delay to wait; each call doubles the ceiling until it reaches ``maximum``
        (and then counts no further: Redis may stay down for days)."""
        ceiling = min(self.maximum, self.initial * 2.0**self.attempt)
        if ceiling < self.maximum:
            self.attempt += 1
        return (rng or random).uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start over after a success."""
        self.attempt = 0
