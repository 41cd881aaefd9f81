"""Layer 2: the producer side: tasks and their enqueue API, the enqueue seam, job handles and results."""
