"""A package whose tasks module registers on the App itself, Celery's `from proj.celery import app` style."""
