"""The mutual-TLS material the operator uses with its services (process servers, master
targets): the Secret of their ``spec.tlsSecretRef``."""

from __future__ import annotations

from dataclasses import dataclass, field

TLS_KEYS = ("tls.crt", "tls.key", "ca.crt")
"""The keys of the mutual-TLS Secret (``spec.tlsSecretRef``)."""


@dataclass(frozen=True)
class TLSMaterial:
    """The operator's client certificate and key, and the CA that signed the services'.

    PEM text; ``repr`` shows none of it."""

    cert: str = field(repr=False)
    key: str = field(repr=False)
    ca: str = field(repr=False)
