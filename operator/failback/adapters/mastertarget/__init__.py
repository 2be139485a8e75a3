"""Master target adapter: its service's health endpoint over mutual TLS."""
