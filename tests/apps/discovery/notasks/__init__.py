"""A package with no tasks module: autodiscover() skips it."""
