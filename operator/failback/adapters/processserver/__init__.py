"""Process server adapter: its health endpoint over mutual TLS."""
