"""Concurrency and rate limits as declared in code: their spelling, validation and normalised form.

Limits are enforced by the database where jobs are claimed (pgtasks/sql/limits.sql), across every
worker; this module only turns what a user wrote (`concurrency=5`, `rate_limit="100/m"`,
`Limit(max=1, key="customer_id")`) into the numbers stored in the queues and task_limits rows,
and computes a job's key from its arguments at enqueue.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from pgtasks.core.errors import ConfigurationError, TaskArgumentError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
                 "h": 3600.0, "hour": 3600.0}
_KEY_MAX_LENGTH = 512
_KEY_ENCODER = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` starts per `seconds`, e.g. "100/m" is Rate(100, 60). `per_second` is what is stored."""

    count: float
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(self.seconds)
        count = int(self.count) if self.count == int(self.count) else self.count
        return f"{count}/{unit}" if unit else f"{count}/{self.seconds:g}s"


def parse_rate(value: str | Rate, *, setting: str = "rate_limit") -> Rate:
    """Celery's spelling: "10/s", "100/m", "5/h" (also "30/5m": 30 per 5 minutes)."""
    if isinstance(value, Rate):
        return value
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigurationError(f"{setting}={value!r}: expected a rate like '10/s', '100/m' or '5/h' "
                                 "(starts per second, minute or hour)")
    count, multiple, unit = float(match.group(1)), match.group(2), match.group(3)
    seconds = _UNIT_SECONDS[unit] * (int(multiple) if multiple else 1)
    if count <= 0 or seconds <= 0:
        raise ConfigurationError(f"{setting}={value!r}: a rate must be positive")
    return Rate(count, seconds)


def default_burst(rate: Rate) -> int:
    """Tokens a full bucket holds unless `burst=` says otherwise: a tenth of a second's worth, at
    least 1. So a limited queue is claimed in small batches at most ten times a second, and any
    one-second window starts at most rate + burst jobs (docs/limits.md)."""
    return max(1, math.floor(rate.per_second / 10))


def _positive_int(setting: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{setting}={value!r}: expected a positive whole number")
    return value


@dataclass(frozen=True, slots=True)
class Limit:
    """A limit for a task, optionally per key.

    - `max`: at most this many jobs run at once (over every worker);
    - `rate`: at most this many start per period ("10/s", "100/m", "5/h"), with `burst` tokens
      available at once (default: see default_burst);
    - `key`: an argument name, or a callable over the bound arguments (a dict of parameter to
      value), evaluated at enqueue and stored with the job: the limit then applies to each key
      value on its own (`Limit(max=1, key="customer_id")`: one job per customer at a time).
    """

    max: int | None = None
    rate: str | Rate | None = None
    key: str | Callable[[Mapping[str, Any]], Any] | None = None
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.max is None and self.rate is None:
            raise ConfigurationError("Limit(): give max= (jobs at once), rate= (e.g. '10/s') or both")
        if self.max is not None:
            _positive_int("Limit(max)", self.max)
        if self.rate is not None:
            parse_rate(self.rate, setting="Limit(rate)")
        if self.burst is not None:
            _positive_int("Limit(burst)", self.burst)
            if self.rate is None:
                raise ConfigurationError(f"Limit(burst={self.burst!r}) without rate=: a burst bounds a rate limit")
        if self.key is not None and not (isinstance(self.key, str) and self.key) and not callable(self.key):
            raise ConfigurationError(f"Limit(key={self.key!r}): expected an argument name or a callable "
                                     "over the bound arguments")


@dataclass(frozen=True, slots=True)
class Bucket:
    """A rate as stored: tokens per second and the bucket's size."""

    rate: float
    burst: int


def _bucket(rate: str | Rate | None, burst: int | None, setting: str) -> Bucket | None:
    if rate is None:
        return None
    parsed = parse_rate(rate, setting=setting)
    return Bucket(parsed.per_second, burst if burst is not None else default_burst(parsed))


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """A task's limits, normalised: over all its jobs, and per key value."""

    concurrency: int | None = None
    rate: Bucket | None = None
    key: str | Callable[[Mapping[str, Any]], Any] | None = None
    key_concurrency: int | None = None
    key_rate: Bucket | None = None

    @property
    def key_name(self) -> str | None:
        if self.key is None:
            return None
        return self.key if isinstance(self.key, str) else getattr(self.key, "__qualname__", repr(self.key))

    def check(self, func: Callable[..., Any], task_name: str) -> None:
        """Fail at registration if the key names a parameter the function does not have."""
        if isinstance(self.key, str):
            params = inspect.signature(func).parameters
            if self.key not in params:
                raise ConfigurationError(f"{task_name}: Limit(key={self.key!r}) is not a parameter of the task; "
                                         f"choose from {list(params)}")

    def key_of(self, task_name: str, arguments: Mapping[str, Any]) -> str | None:
        """The job's limit_key: the key's value as JSON text (so 1 and "1" are different keys)."""
        if self.key is None:
            return None
        if isinstance(self.key, str):
            value = arguments.get(self.key)
        else:
            try:
                value = self.key(arguments)
            except Exception as exc:
                raise TaskArgumentError(f"{task_name}: the limit key function {self.key_name} raised "
                                        f"{type(exc).__name__}: {exc}") from exc
        try:
            text = _KEY_ENCODER.encode(value).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            raise TaskArgumentError(f"{task_name}: limit key {self.key_name}={value!r} cannot be stored "
                                    f"({exc}); return a string or a number") from None
        if len(text) > _KEY_MAX_LENGTH:
            raise TaskArgumentError(f"{task_name}: limit key {self.key_name} is {len(text)} characters as JSON; "
                                    f"keep it under {_KEY_MAX_LENGTH}")
        return text

    def row(self) -> dict[str, Any]:
        """The task_limits columns this declares."""
        return {"concurrency": self.concurrency,
                "rate": self.rate.rate if self.rate else None, "burst": self.rate.burst if self.rate else None,
                "key_name": self.key_name, "key_concurrency": self.key_concurrency,
                "key_rate": self.key_rate.rate if self.key_rate else None,
                "key_burst": self.key_rate.burst if self.key_rate else None}


def _whole_concurrency(concurrency: int | Limit | None, keyed: list[Limit]) -> int | None:
    """concurrency= over all the task's jobs; a keyed Limit goes to `keyed`."""
    if not isinstance(concurrency, Limit):
        return None if concurrency is None else _positive_int("concurrency", concurrency)
    if concurrency.max is None or concurrency.rate is not None:
        raise ConfigurationError(f"concurrency={concurrency!r}: give Limit(max=..., key=...) here; a rate goes "
                                 "in rate_limit=")
    if concurrency.key is None:
        return concurrency.max
    keyed.append(concurrency)
    return None


def _whole_rate(rate_limit: str | Rate | Limit | None, keyed: list[Limit]) -> Bucket | None:
    """rate_limit= over all the task's jobs; a keyed Limit goes to `keyed`."""
    if not isinstance(rate_limit, Limit):
        return _bucket(rate_limit, None, "rate_limit")
    if rate_limit.rate is None or rate_limit.max is not None:
        raise ConfigurationError(f"rate_limit={rate_limit!r}: give Limit(rate=..., key=...) here; a maximum of "
                                 "jobs at once goes in concurrency=")
    if rate_limit.key is None:
        return _bucket(rate_limit.rate, rate_limit.burst, "rate_limit")
    keyed.append(rate_limit)
    return None


def task_limits(concurrency: int | Limit | None, rate_limit: str | Rate | Limit | None) -> TaskLimits | None:
    """`@app.task(concurrency=..., rate_limit=...)` normalised; None when the task has no limit."""
    if concurrency is None and rate_limit is None:
        return None
    keyed: list[Limit] = []
    whole_max = _whole_concurrency(concurrency, keyed)
    whole_rate = _whole_rate(rate_limit, keyed)
    keys = {limit.key if isinstance(limit.key, str) else id(limit.key): limit.key for limit in keyed}
    if len(keys) > 1:
        raise ConfigurationError(f"concurrency= and rate_limit= use different keys ({[*keys.values()]!r}); "
                                 "a task's per-key limits share one key")
    key_concurrency = next((lim.max for lim in keyed if lim.max is not None), None)
    key_rate = next((_bucket(lim.rate, lim.burst, "rate_limit") for lim in keyed if lim.rate is not None), None)
    return TaskLimits(concurrency=whole_max, rate=whole_rate, key=keyed[0].key if keyed else None,
                      key_concurrency=key_concurrency, key_rate=key_rate)


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's limits: at most `concurrency` jobs of it running at once, `rate` starts."""

    concurrency: int | None = None
    rate: Bucket | None = None

    @classmethod
    def create(cls, concurrency: int | None, rate_limit: str | Rate | None, burst: int | None = None,
               *, setting: str = "rate_limit") -> QueueLimits:
        if concurrency is not None:
            _positive_int("concurrency", concurrency)
        if burst is not None:
            _positive_int("burst", burst)
            if rate_limit is None:
                raise ConfigurationError(f"burst={burst!r} without a rate: a burst bounds a rate limit")
        return cls(concurrency, _bucket(rate_limit, burst, setting))

    def declared(self) -> dict[str, Any]:
        """What is stored in queues.declared and compared at the next start."""
        return {"concurrency": self.concurrency, "rate": self.rate.rate if self.rate else None,
                "burst": self.rate.burst if self.rate else None}
