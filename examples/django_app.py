"""Django: an ORM write and its job in the same transaction, through Django's own psycopg 3 connection.

Run it with `python examples/django_app.py` (PGTASKS_DATABASE_URL and PGTASKS_SCHEMA pick the
database and schema). In a real project the settings live in settings.py and the task module is
imported by your apps; the pattern is the two lines inside `transaction.atomic()`:

    with transaction.atomic():
        order = Order.objects.create(...)
        with tasks.bind(connection.connection):   # Django's psycopg.Connection
            send_receipt.delay(order.pk)          # commits or rolls back with the order
"""

from __future__ import annotations

import django
from django.conf import settings
from django.db import connection, models, transaction
from psycopg.conninfo import conninfo_to_dict

import pgtasks

tasks = pgtasks.App()  # PGTASKS_DATABASE_URL / PGTASKS_SCHEMA

_params = conninfo_to_dict(tasks.dsn)
settings.configure(
    DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql",  # psycopg 3 when it is installed (Django >= 4.2)
        "NAME": _params.get("dbname", "postgres"), "USER": _params.get("user", ""),
        "PASSWORD": _params.get("password", ""), "HOST": _params.get("host", ""), "PORT": _params.get("port", ""),
    }},
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()


class Order(models.Model):  # type: ignore[misc]  # Django ships no type hints
    email = models.CharField(max_length=200)
    amount_cents = models.IntegerField()

    class Meta:
        app_label = "shop"
        # A name Django quotes as given: the table lives in the pgtasks schema of this demo.
        db_table = f'"{tasks.schema}"."django_orders"'


@tasks.task(name="django_shop.send_receipt")
def send_receipt(order_id: int) -> str:
    order = Order.objects.get(pk=order_id)  # the worker reads what the transaction committed
    return f"receipt for order {order.pk}: {order.amount_cents / 100:.2f} EUR to {order.email}"


def place_order(email: str, amount_cents: int, *, fail: bool = False) -> int | None:
    try:
        with transaction.atomic():
            order = Order.objects.create(email=email, amount_cents=amount_cents)
            with tasks.bind(connection.connection):
                send_receipt.delay(order.pk)
            if fail:
                raise ValueError(f"payment declined for {email}")
            return int(order.pk)
    except ValueError as exc:
        print(f"rolled back: {exc}")
        return None


def main() -> None:
    tasks.migrate()
    with connection.schema_editor() as editor:
        editor.execute(f'DROP TABLE IF EXISTS "{tasks.schema}"."django_orders"')
        editor.create_model(Order)
    kept = place_order("ann@example.com", 4200)
    place_order("bob@example.com", 999, fail=True)
    print(f"orders: {[o.email for o in Order.objects.order_by('pk')]}")
    connection.close()  # the worker's threads open their own Django connections
    tasks.run_worker(burst=True, poll_interval=0.1, concurrency=1)
    with tasks.connect() as conn:
        states = [(j["task"], j["state"]) for j in tasks.store.job_list(conn)]
    print(f"jobs: {states}")
    for row in states:
        assert row[1] == "completed", row
    with tasks.connect() as conn:
        [job] = tasks.store.job_list(conn, tasks=["django_shop.send_receipt"])
    print(f"result for order {kept}:", pgtasks.JobRef(job["id"], job["task"], tasks).wait(timeout=10))
    tasks.close()


if __name__ == "__main__":
    main()
