"""A stand-in for a payment provider's client, with the two failures a real one has.

Amounts over 50.00 time out on the first try (a flaky network); an amount ending in 13 cents is
declined (the bank said no). Everything else is charged.
"""

from __future__ import annotations

from bookshop.billing.errors import CardDeclined


def charge_card(order_id: int, cents: int, attempt: int) -> str:
    if cents % 100 == 13:
        raise CardDeclined(f"card declined for order {order_id}")
    if cents > 5000 and attempt == 1:
        raise ConnectionError("payment gateway timed out")
    return f"ch_{order_id}_{cents}"
