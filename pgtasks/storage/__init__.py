"""Layer 1: all that talks to PostgreSQL.

Named queries, the Store, connections and pools, pool-mode detection, migrations, the embedded server.
"""
