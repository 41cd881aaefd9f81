"""A package whose tasks module cannot be imported."""
