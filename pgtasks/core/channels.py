"""NOTIFY channel names besides the jobs channel: job completions and worker control messages."""

from __future__ import annotations


def done_channel(schema: str) -> str:
    """Channel on which the jobs_notify_final trigger announces each job reaching a final state (payload: id)."""
    return f"{schema}.done"


def control_channel(schema: str) -> str:
    """Channel on which operators tell workers about running jobs to cancel (payload: job id)."""
    return f"{schema}.control"
