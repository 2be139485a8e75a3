"""kopf handlers, one module per kind, plus the bridge from our errors to kopf's."""
