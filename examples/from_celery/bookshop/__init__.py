"""A small bookshop, laid out the way a Celery project is, on pgtasks (see ../run.py)."""
