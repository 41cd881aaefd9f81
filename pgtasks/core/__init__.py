"""Layer 0: records, errors, options, arguments, retry, unique keys, the registry, the service shape.

No database driver is imported here.
"""
