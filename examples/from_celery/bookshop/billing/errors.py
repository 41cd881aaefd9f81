"""Errors of the billing service, importable by the code that enqueues charges (a shared module)."""

from __future__ import annotations


class CardDeclined(ValueError):
    """The bank refused the card: charging again would not help."""
