"""Client assertions: the signed JWTs a certificate credential or a federated (workload
identity) credential presents instead of a client secret.

The test bed's principal trusts keys registered through the control API
(``POST /_emulator/principal/credentials``), as an app registration holds certificates
and federated identity credentials:

- ``certificate``: a PEM certificate; the assertion is signed by its key (PS256 or RS256,
  as azure-identity does), with ``iss`` = ``sub`` = the client ID and ``aud`` = the token
  endpoint;
- ``federated``: a PEM public key of a token issuer (a Kubernetes API server's
  service-account signing key) with its ``issuer`` and the ``subject`` allowed
  (``system:serviceaccount:<namespace>:<name>``); the assertion has ``aud`` =
  ``api://AzureADTokenExchange``.

Assertions are checked against real time (they carry real ``exp``/``nbf``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
SKEW = 300.0


@dataclass(frozen=True)
class TrustedCredential:
    kind: str
    """``certificate`` or ``federated``."""
    key: Any
    issuer: str | None = None
    subject: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "issuer": self.issuer, "subject": self.subject}


def parse_credential(spec: dict[str, Any]) -> TrustedCredential:
    """A credential from its control-API form; ValueError says what is wrong."""
    kind = spec.get("kind")
    pem = spec.get("pem")
    if kind not in {"certificate", "federated"} or not isinstance(pem, str):
        raise ValueError("a credential needs kind (certificate or federated) and pem")
    if kind == "certificate":
        cert_key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        return TrustedCredential("certificate", cert_key)
    issuer, subject = spec.get("issuer"), spec.get("subject")
    if not isinstance(issuer, str) or not isinstance(subject, str):
        raise ValueError("a federated credential needs issuer and subject")
    key = serialization.load_pem_public_key(pem.encode())
    return TrustedCredential("federated", key, issuer, subject)


class AssertionRefused(ValueError):
    """The assertion does not prove the client; the message says why (AADSTS-like)."""


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise AssertionRefused("the client assertion is not base64url") from None


def _verify(key: Any, alg: str, signed: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey) and alg == "RS256":
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, rsa.RSAPublicKey) and alg == "PS256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            key.verify(signature, signed, pss, hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey) and alg == "ES256":
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.verify(utils.encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def check_assertion(
    assertion: str, client_id: str, token_url: str, trusted: list[TrustedCredential]
) -> None:
    """Raise :class:`AssertionRefused` unless a trusted credential signed ``assertion``."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise AssertionRefused("the client assertion is not a JWT")
    try:
        header = json.loads(_b64(parts[0]))
        claims = json.loads(_b64(parts[1]))
    except ValueError:
        raise AssertionRefused("the client assertion is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AssertionRefused("the client assertion is not a JWT")
    now = time.time()
    if float(claims.get("exp", 0)) < now - SKEW or float(claims.get("nbf", 0)) > now + SKEW:
        raise AssertionRefused("the client assertion has expired or is not valid yet")
    signed = f"{parts[0]}.{parts[1]}".encode()
    signature = _b64(parts[2])
    alg = str(header.get("alg", ""))
    for credential in trusted:
        if not _verify(credential.key, alg, signed, signature):
            continue
        if credential.kind == "certificate":
            if claims.get("iss") == claims.get("sub") == client_id and (
                claims.get("aud") == token_url
            ):
                return
            raise AssertionRefused("the certificate assertion names another client or audience")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if (
            claims.get("iss") == credential.issuer
            and claims.get("sub") == credential.subject
            and FEDERATED_AUDIENCE in audiences
        ):
            return
        raise AssertionRefused(
            "no federated identity credential matches the assertion's issuer, subject and audience"
        )
    raise AssertionRefused("no credential registered for the application signed the assertion")
