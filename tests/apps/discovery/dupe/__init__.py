"""A package whose tasks module reuses a task name billing's tasks already use."""
