"""Layer 1: everything that talks to PostgreSQL: named queries, the Store, connections, pool-mode detection, migrations, the embedded server."""
