"""Test helpers for pgtasks users: eager mode, enqueue assertions, drain(), a worker thread, a pytest plugin.

    from pgtasks.testing import eager, assert_enqueued, refute_enqueued, drain

The pytest plugin (fixtures pgtasks_app, pgtasks_eager, pgtasks_drain and the pgtasks_eager
marker) is registered through the `pytest11` entry point and documented in docs/testing.md.
"""

from pgtasks.testing.assertions import assert_enqueued, enqueued_jobs, refute_enqueued
from pgtasks.testing.drain import DrainedJob, DrainError, adrain, drain, worker_thread
from pgtasks.testing.eager import EagerJobRef, eager

__all__ = [
    "DrainError",
    "DrainedJob",
    "EagerJobRef",
    "adrain",
    "assert_enqueued",
    "drain",
    "eager",
    "enqueued_jobs",
    "refute_enqueued",
    "worker_thread",
]
