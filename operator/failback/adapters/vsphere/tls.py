"""Trusting vCenter: the CA bundle of its Secret, or a pinned certificate fingerprint.

There is no insecure mode. With ``caBundle`` the certificate chain and the host name are
verified as any HTTPS client does. With ``thumbprint`` the chain is not (vCenter's VMCA
is often unknown to the client) but *every* connection compares the SHA-256 (or SHA-1)
fingerprint of the certificate the server presents with the pinned one, before a byte of
the request (and so the password) is sent; a mismatch fails like a chain that does not
verify.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ssl

from failback.domain.vsphere import VCenterCredentials


class PinMismatch(ssl.SSLCertVerificationError):
    """The server's certificate is not the one the Secret's thumbprint pins."""


def fingerprint(der: bytes, length: int) -> str:
    """The hex fingerprint of a DER certificate with ``length`` digits (64: SHA-256, 40: SHA-1)."""
    algorithm = hashlib.sha256 if length == 64 else hashlib.sha1
    return algorithm(der).hexdigest()


def context(credentials: VCenterCredentials) -> ssl.SSLContext:
    """The TLS client context for ``credentials`` (TLS 1.2 at least)."""
    if credentials.ca_bundle is not None:
        ctx = ssl.create_default_context(cadata=credentials.ca_bundle)
    else:
        # The pin replaces chain verification; PinnedHTTPSConnection checks it on every
        # connection (see the module docstring).
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def pinned_connection(thumbprint: str) -> type[http.client.HTTPSConnection]:
    """An HTTPSConnection class that refuses any certificate but the pinned one."""

    class PinnedHTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            assert self.sock is not None
            der = self.sock.getpeercert(binary_form=True)
            actual = fingerprint(der or b"", len(thumbprint))
            if not hmac.compare_digest(actual, thumbprint):
                self.close()
                error = PinMismatch(
                    f"the certificate of {self.host}:{self.port} has fingerprint {actual}, "
                    f"not the pinned {thumbprint}"
                )
                error.verify_message = str(error.args[0])
                raise error

    return PinnedHTTPSConnection
