"""Every LISTEN/NOTIFY channel name, in one place. The migrations' triggers spell `<schema>.jobs` and
`<schema>.done` the same way (rendered through pgtasks.storage.queries)."""

from __future__ import annotations


def jobs_channel(schema: str) -> str:
    """Inserts into `schema`.jobs announce their queue here (payload: queue name)."""
    return f"{schema}.jobs"


def done_channel(schema: str) -> str:
    """The jobs_notify_final trigger announces each job reaching a final state here (payload: id)."""
    return f"{schema}.done"


def control_channel(schema: str) -> str:
    """Operators tell workers about running jobs to cancel here (payload: job id)."""
    return f"{schema}.control"


def leader_channel(schema: str) -> str:
    """A resigning leader tells followers to elect at once here."""
    return f"{schema}.leader"
