"""Master target adapter over mutual TLS: its service's health endpoint (``client``) and
its groups' recovery points, rollback and release (``points``), on one shared
:class:`~failback.adapters.mtls.MutualTLS`."""
