"""Identities: a Secret's service principal (client secret or certificate) and workload
identity (a federated token file), each signing in to the emulator; one credential per
identity, closed with the clients."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from failback.adapters.azure.clients import AzureClientsAdapter
from failback.adapters.azure.credentials import (
    CredentialCache,
    CredentialOptions,
    SecretKeyMissing,
    identity_from_secret,
    identity_key,
)
from failback.ports.azure import (
    AzureAuthenticationFailed,
    ClientCertificate,
    ClientSecret,
    WorkloadIdentity,
)
from testbed.azure.process import AzureEmulator
from testbed.leaks import LeakGuard

from .conftest import RG, options

ISSUER = "https://kubernetes.default.svc.cluster.local"
SUBJECT = "system:serviceaccount:failback-system:failback-operator"


def rsa_certificate() -> tuple[str, str]:
    """(certificate PEM, private key PEM) of a self-signed RSA certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "failback-operator")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def service_account_token(key: rsa.RSAPrivateKey, subject: str = SUBJECT) -> str:
    """A projected service-account token as the API server signs it (RS256)."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": ["api://AzureADTokenExchange"],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    body = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{b64url(signature)}"


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        ({}, "tenantId"),
        ({"tenantId": "t"}, "clientId"),
        ({"tenantId": "t", "clientId": "c"}, "clientSecret"),
        ({"tenantId": "t", "clientId": "c", "clientSecret": "  "}, "clientSecret"),
        ({"tenantId": " ", "clientId": "c", "clientSecret": "s"}, "tenantId"),
    ],
)
def test_a_secret_missing_a_key_names_it(data: dict[str, str], missing: str) -> None:
    with pytest.raises(SecretKeyMissing) as refused:
        identity_from_secret(data)
    assert refused.value.key == missing


def test_secrets_give_identities_that_never_show_their_material() -> None:
    secret = identity_from_secret({"tenantId": "t", "clientId": "c", "clientSecret": "s3cr3t!"})
    assert secret == ClientSecret("t", "c", "s3cr3t!")
    assert "s3cr3t!" not in repr(secret)
    assert "s3cr3t!" not in identity_key(secret)
    cert = identity_from_secret({"tenantId": "t", "clientId": "c", "clientCertificate": "PEM"})
    assert isinstance(cert, ClientCertificate)
    assert "PEM" not in repr(cert)
    rotated = identity_from_secret({"tenantId": "t", "clientId": "c", "clientSecret": "new"})
    assert identity_key(rotated) != identity_key(secret), "a rotated secret is a new credential"


async def test_one_credential_per_identity_closed_on_close() -> None:
    cache = CredentialCache(CredentialOptions(token_file="/nonexistent"))
    a = ClientSecret("7e5b0a1e-5eed-4bed-9a2e-0000000fa11b", "c1", "one")
    b = ClientSecret("7e5b0a1e-5eed-4bed-9a2e-0000000fa11b", "c2", "two")
    assert cache.get(a) is cache.get(a)
    assert cache.get(a) is not cache.get(b)
    assert cache.get(WorkloadIdentity("7e5b0a1e-5eed-4bed-9a2e-0000000fa11b", "c3")) is not None
    assert len(cache) == 3
    await cache.forget(a)
    assert len(cache) == 2
    await cache.close()
    assert len(cache) == 0


async def test_a_certificate_signs_in(emulator: AzureEmulator, leak_guard: LeakGuard) -> None:
    cert_pem, key_pem = rsa_certificate()
    leak_guard.secrets.append(key_pem.splitlines()[1])
    emulator.control.trust_certificate(cert_pem)
    emulator.control.create_vm(RG, "vm-cert")
    identity = identity_from_secret(
        {
            "tenantId": emulator.tenant_id,
            "clientId": emulator.client_id,
            "clientCertificate": key_pem + cert_pem,
        }
    )
    assert isinstance(identity, ClientCertificate)
    adapter = AzureClientsAdapter(options(emulator))
    try:
        az = await adapter.compute(identity, emulator.subscription_id)
        vm = await az.get_vm(RG, "vm-cert")
        assert vm is not None
        # Another certificate, not trusted: refused, and said so.
        other_cert, other_key = rsa_certificate()
        leak_guard.secrets.append(other_key.splitlines()[1])
        stranger = ClientCertificate(
            emulator.tenant_id, emulator.client_id, (other_key + other_cert).encode()
        )
        az2 = await adapter.compute(stranger, emulator.subscription_id)
        with pytest.raises(AzureAuthenticationFailed) as refused:
            await az2.get_vm(RG, "vm-cert")
        assert "700027" in str(refused.value)
    finally:
        await adapter.close()


async def test_workload_identity_signs_in_with_the_projected_token(
    emulator: AzureEmulator, tmp_path: Path, leak_guard: LeakGuard
) -> None:
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        issuer_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    emulator.control.trust_federated(public, ISSUER, SUBJECT)
    emulator.control.create_vm(RG, "vm-wi")
    token_file = tmp_path / "azure-identity-token"
    token = service_account_token(issuer_key)
    token_file.write_text(token)
    leak_guard.secrets.append(token.rsplit(".", 1)[1])
    adapter = AzureClientsAdapter(options(emulator, federated_token_file=str(token_file)))
    try:
        identity = WorkloadIdentity(emulator.tenant_id, emulator.client_id)
        az = await adapter.compute(identity, emulator.subscription_id)
        assert await az.get_vm(RG, "vm-wi") is not None
    finally:
        await adapter.close()
    # A token for another service account is refused.
    token_file.write_text(service_account_token(issuer_key, "system:serviceaccount:x:y"))
    adapter = AzureClientsAdapter(options(emulator, federated_token_file=str(token_file)))
    try:
        az = await adapter.compute(identity, emulator.subscription_id)
        with pytest.raises(AzureAuthenticationFailed):
            await az.get_vm(RG, "vm-wi")
    finally:
        await adapter.close()
