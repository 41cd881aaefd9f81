"""A package whose tasks module no other test imports, so a test can see when an App imports it."""
