"""Layer 4: operations tools built on the parts: the doctor's checks and the benchmark workloads."""
