"""Layer 0: records, errors, options, arguments, retry, unique keys, the registry and the service shape. No database driver."""
