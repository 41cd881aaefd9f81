"""Imports a dependency that is not installed: the App's error must name this module and the cause."""

import pgtasks_missing_dependency  # type: ignore[import-not-found]  # noqa: F401
