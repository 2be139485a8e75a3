"""Process server adapter over mutual TLS: its health endpoint (``client``) and its
session API (``sessions``), on one shared :class:`~failback.adapters.mtls.MutualTLS`."""
