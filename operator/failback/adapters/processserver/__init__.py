"""Process server adapter: its health endpoint over mutual TLS, and the Kubernetes reads
the ProcessServer controller needs."""
