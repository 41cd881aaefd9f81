"""Layer 2: a worker's background duties: heartbeat, election, and the leader-only scheduler, rescuer and cleaner."""
