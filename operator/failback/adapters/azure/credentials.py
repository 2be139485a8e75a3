"""Azure identities: read from a Secret's data, turned into ``aio`` credentials, cached.

A Secret names a service principal with ``tenantId``, ``clientId`` and either
``clientSecret`` or ``clientCertificate`` (PEM certificate and key). Workload identity
uses the operator's projected service-account token (``token_file``) instead.

:class:`CredentialCache` keeps one credential per identity (the cache key holds a
SHA-256 digest of the secret material, never the material itself), so every object
that names the same principal shares its tokens; :meth:`CredentialCache.close` closes
them all at shutdown, and :meth:`CredentialCache.forget` drops one whose tokens Azure
refused (an expired or revoked token: the next use signs in again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import (
    CertificateCredential,
    ClientSecretCredential,
    WorkloadIdentityCredential,
)

from failback.errors import Permanent
from failback.ports.azure import AzureIdentity, ClientCertificate, ClientSecret, WorkloadIdentity

TENANT_ID = "tenantId"
CLIENT_ID = "clientId"
CLIENT_SECRET = "clientSecret"  # noqa: S105 - the name of a Secret key
CLIENT_CERTIFICATE = "clientCertificate"
SECRET_KEYS = (TENANT_ID, CLIENT_ID, CLIENT_SECRET)
"""The keys a credentials Secret needs (``clientCertificate`` may replace ``clientSecret``)."""


class SecretKeyMissing(Permanent):
    """The credentials Secret lacks ``key``."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the Secret has no key {key}")
        self.key = key


def identity_from_secret(data: Mapping[str, str]) -> AzureIdentity:
    """The service principal of a Secret's (decoded) data; :class:`SecretKeyMissing` names
    the first key it lacks."""

    def text(key: str) -> str:
        value = data.get(key)
        if not value or not value.strip():
            raise SecretKeyMissing(key)
        return value.strip()

    tenant, client = text(TENANT_ID), text(CLIENT_ID)
    if (data.get(CLIENT_SECRET) or "").strip():
        return ClientSecret(tenant, client, text(CLIENT_SECRET))
    if (data.get(CLIENT_CERTIFICATE) or "").strip():
        return ClientCertificate(tenant, client, text(CLIENT_CERTIFICATE).encode())
    raise SecretKeyMissing(CLIENT_SECRET)


def identity_key(identity: AzureIdentity) -> str:
    """A stable key naming ``identity``; it holds a digest of the secret, not the secret."""
    if isinstance(identity, ClientSecret):
        digest = hashlib.sha256(identity.secret.encode()).hexdigest()[:16]
        return f"secret:{identity.tenant_id}:{identity.client_id}:{digest}"
    if isinstance(identity, ClientCertificate):
        digest = hashlib.sha256(identity.pem).hexdigest()[:16]
        return f"certificate:{identity.tenant_id}:{identity.client_id}:{digest}"
    return f"workload:{identity.tenant_id}:{identity.client_id}"


def principal_key(identity: AzureIdentity) -> str:
    """The principal ARM throttles: tenant and client, whatever proves it."""
    return f"{identity.tenant_id}:{identity.client_id}"


@dataclass(frozen=True)
class CredentialOptions:
    """Where the credentials sign in."""

    authority: str | None = None
    """Entra ID's host (``login.microsoftonline.com`` when None)."""
    ca_file: str | None = None
    """A CA bundle to trust instead of the system's (the test bed's emulator)."""
    token_file: str | None = None
    """The projected service-account token for workload identity."""


class CredentialCache:
    """One ``aio`` credential per identity, closed on :meth:`close`."""

    def __init__(self, options: CredentialOptions) -> None:
        self._options = options
        self._credentials: dict[str, AsyncTokenCredential] = {}

    def get(self, identity: AzureIdentity) -> AsyncTokenCredential:
        key = identity_key(identity)
        credential = self._credentials.get(key)
        if credential is None:
            credential = self._credentials[key] = self._make(identity)
        return credential

    async def forget(self, identity: AzureIdentity) -> None:
        """Close and drop the credential of ``identity`` (its token was refused)."""
        credential = self._credentials.pop(identity_key(identity), None)
        if credential is not None:
            await credential.close()

    async def close(self) -> None:
        credentials, self._credentials = list(self._credentials.values()), {}
        for credential in credentials:
            await credential.close()

    def __len__(self) -> int:
        return len(self._credentials)

    def _make(self, identity: AzureIdentity) -> AsyncTokenCredential:
        # No retries of its own: the ARM pipeline that asks for the token retries already,
        # and retries inside retries kept a handler waiting for a minute on an
        # unreachable identity endpoint (the token is fetched again on each ARM attempt).
        kwargs: dict[str, Any] = {"retry_total": 0}
        if self._options.authority:
            kwargs["authority"] = self._options.authority
            kwargs["disable_instance_discovery"] = True
        if self._options.ca_file:
            kwargs["connection_verify"] = self._options.ca_file
        if isinstance(identity, ClientSecret):
            return ClientSecretCredential(
                identity.tenant_id, identity.client_id, identity.secret, **kwargs
            )
        if isinstance(identity, ClientCertificate):
            return CertificateCredential(
                identity.tenant_id, identity.client_id, certificate_data=identity.pem, **kwargs
            )
        assert isinstance(identity, WorkloadIdentity)
        if not self._options.token_file:
            raise Permanent(
                "workload identity needs the operator's projected service-account token "
                "(settings.azure_federated_token_file)"
            )
        return WorkloadIdentityCredential(
            tenant_id=identity.tenant_id,
            client_id=identity.client_id,
            token_file_path=self._options.token_file,
            **kwargs,
        )
