"""Skips that CI cannot pass through: with PGTASKS_REQUIRE_ALL=1 (set by .ci/run) a missing
requirement fails the test instead of skipping it, so a broken setup cannot pass as skipped."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

REQUIRE_ALL_ENV = "PGTASKS_REQUIRE_ALL"


def require_all() -> bool:
    return os.environ.get(REQUIRE_ALL_ENV) == "1"


def unavailable(reason: str, *, switch: str | None = None) -> NoReturn:
    """Skip the calling test for `reason`, or fail it when PGTASKS_REQUIRE_ALL=1 (or `switch`=1)."""
    for name in (REQUIRE_ALL_ENV, switch):
        if name and os.environ.get(name) == "1":
            pytest.fail(f"required ({name}=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{reason} (set {REQUIRE_ALL_ENV}=1 to make this an error)")


def require_module(name: str, install: str = "pip install -e '.[dev]'") -> ModuleType:
    """Import `name`, or skip (fail under PGTASKS_REQUIRE_ALL=1) saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"{name} is not installed ({install})")
