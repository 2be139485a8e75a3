"""A throwaway certificate authority for the test bed.

Every component on the test bed serves TLS with a certificate signed by this CA,
and every client trusts exactly this CA: nothing runs in insecure mode. Keys are
ECDSA P-256 (fast to generate, accepted by Go and Python alike).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its PEM private key, on disk."""

    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


class Pki:
    """A CA kept in ``directory`` (created on first use) and the certificates it signs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.crt"
        ca_key_file = directory / "ca.key"
        if not (self.ca_file.exists() and ca_key_file.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "failback test bed CA")])
            now = dt.datetime.now(dt.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + _VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            _write_key(ca_key_file, key)
            self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._ca_key = _load_key(ca_key_file)
        self._ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())

    def _issue(
        self,
        name: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        hosts: tuple[str, ...] = (),
        server: bool,
        client: bool,
    ) -> CertPair:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = dt.datetime.now(dt.UTC)
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if hosts:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        pair = CertPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        _write_key(pair.key, key)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pair

    def serving(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> CertPair:
        """A server certificate valid for ``hosts`` (IP addresses or DNS names)."""
        return self._issue(name, hosts[0], hosts=hosts, server=True, client=False)

    def client(self, name: str, common_name: str, organizations: tuple[str, ...] = ()) -> CertPair:
        """A client certificate; Kubernetes reads the user from CN and groups from O."""
        return self._issue(
            name, common_name, organizations=organizations, server=False, client=True
        )

    def peer(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> CertPair:
        """A certificate that serves ``hosts`` and is also a client (a process server: it
        serves the operator and calls master targets)."""
        return self._issue(name, hosts[0], hosts=hosts, server=True, client=True)

    def signing_key(self, name: str) -> CertPair:
        """A bare key pair (``cert`` holds the public key), e.g. for service-account tokens."""
        key = ec.generate_private_key(ec.SECP256R1())
        pair = CertPair(self.directory / f"{name}.pub", self.directory / f"{name}.key")
        _write_key(pair.key, key)
        pair.cert.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return pair
