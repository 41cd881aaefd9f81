"""Retry policies: how long a failed job waits before its next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from pgtasks.core.errors import ConfigurationError


class RetryPolicy(Protocol):
    """Anything with `delay(attempt) -> seconds` can decide when a failed job runs again."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter on the top share of each delay.

    delay(n) = min(base * factor ** (n - 1), max_delay), then up to `jitter` of it is taken away at
    random so that jobs which failed together do not retry together (a thundering herd).
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.base < 0:
            raise ConfigurationError(f"Backoff(base={self.base!r}): base must be >= 0 seconds")
        if self.factor < 1:
            raise ConfigurationError(f"Backoff(factor={self.factor!r}): factor must be >= 1")
        if self.max_delay < self.base:
            raise ConfigurationError(
                f"Backoff(max_delay={self.max_delay!r}): max_delay must be >= base ({self.base!r})"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"Backoff(jitter={self.jitter!r}): jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        exponent = max(attempt - 1, 0)
        # Cap the exponent before computing so huge attempt counts cannot overflow a float.
        raw = self.base * self.factor ** min(exponent, 64)
        capped = min(raw, self.max_delay)
        return capped * (1 - self.jitter * random.random())


@dataclass(frozen=True, slots=True)
class Fixed:
    """The same delay after every failure."""

    seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ConfigurationError(f"Fixed(seconds={self.seconds!r}): seconds must be >= 0")

    def delay(self, attempt: int) -> float:
        return self.seconds


def reconnect_delay(failures: int, *, cap: float = 15.0) -> float:
    """How long a background loop waits before it tries the database again after `failures` failures.

    The same exponential backoff as job retries, from half a second, capped, and jittered by up to
    half so that workers cut off together do not reconnect together.
    """
    return Backoff(base=0.5, max_delay=cap, jitter=0.5).delay(failures)
