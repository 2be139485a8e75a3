"""Azure adapter: credentials, compute, long-running operations, faults."""
