"""Cached Azure clients: one credential per identity, one compute client per identity and
subscription, one set of throttling buckets per principal; all closed by :meth:`close`.

The operator keeps one :class:`AzureClientsAdapter` in kopf's memo (opened at startup,
closed at cleanup). Endpoints default to public Azure; the settings point them at the
test bed's emulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.mgmt.compute.aio import ComputeManagementClient

from failback.adapters.azure.compute import Compute
from failback.adapters.azure.credentials import (
    CredentialCache,
    CredentialOptions,
    identity_key,
    principal_key,
)
from failback.adapters.azure.throttle import Buckets, RetryAfterPolicy, ThrottlePolicy
from failback.ports.azure import AzureIdentity
from failback.settings import Settings

ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"


@dataclass(frozen=True)
class AzureOptions:
    """How the clients reach Azure (see the ``azure_*`` fields of ``Settings``)."""

    arm_endpoint: str = ARM_ENDPOINT
    authority: str | None = None
    ca_file: str | None = None
    federated_token_file: str | None = None
    poll_interval: float = 15.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    max_inline_wait: float = 10.0
    writes_per_hour: float = 1000.0
    write_burst: int = 100
    reads_per_hour: float = 10000.0
    read_burst: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureOptions:
        return cls(
            arm_endpoint=settings.azure_arm_endpoint or ARM_ENDPOINT,
            authority=settings.azure_authority,
            ca_file=settings.azure_ca_file,
            federated_token_file=settings.azure_federated_token_file,
            poll_interval=settings.azure_poll_interval,
            connect_timeout=settings.azure_connect_timeout,
            read_timeout=settings.azure_read_timeout,
            retries=settings.azure_retries,
            max_inline_wait=settings.azure_max_inline_wait,
            writes_per_hour=settings.azure_writes_per_hour,
            write_burst=settings.azure_write_burst,
            reads_per_hour=settings.azure_reads_per_hour,
            read_burst=settings.azure_read_burst,
        )


class AzureClientsAdapter:
    """Implements ``ports.azure.AzureClients``."""

    def __init__(self, options: AzureOptions) -> None:
        self.options = options
        self.credentials = CredentialCache(
            CredentialOptions(options.authority, options.ca_file, options.federated_token_file)
        )
        self.buckets = Buckets(
            options.writes_per_hour,
            options.write_burst,
            options.reads_per_hour,
            options.read_burst,
        )
        self._clients: dict[tuple[str, str], ComputeManagementClient] = {}

    async def compute(self, identity: AzureIdentity, subscription_id: str) -> Compute:
        return Compute(self, identity, subscription_id)

    def client(self, identity: AzureIdentity, subscription_id: str) -> ComputeManagementClient:
        """The compute client of ``identity`` in ``subscription_id`` (made on first use)."""
        key = (identity_key(identity), subscription_id.lower())
        client = self._clients.get(key)
        if client is None:
            o = self.options
            kwargs: dict[str, Any] = {
                "base_url": o.arm_endpoint,
                "credential_scopes": [ARM_SCOPE],
                "polling_interval": o.poll_interval,
                "connection_timeout": o.connect_timeout,
                "read_timeout": o.read_timeout,
                "retry_policy": RetryAfterPolicy(
                    o.max_inline_wait,
                    retry_total=o.retries,
                    retry_connect=o.retries,
                    retry_read=o.retries,
                    retry_status=o.retries,
                    retry_backoff_factor=0.5,
                    retry_backoff_max=o.max_inline_wait,
                ),
                "per_retry_policies": [
                    ThrottlePolicy(
                        self.buckets, principal_key(identity), subscription_id, o.max_inline_wait
                    )
                ],
            }
            if o.ca_file:
                kwargs["connection_verify"] = o.ca_file
            client = self._clients[key] = ComputeManagementClient(
                self.credentials.get(identity), subscription_id, **kwargs
            )
        return client

    async def forget(self, identity: AzureIdentity) -> None:
        """ARM refused this identity's token: drop its clients and credential, sign in again."""
        prefix = identity_key(identity)
        for key in [k for k in self._clients if k[0] == prefix]:
            await self._clients.pop(key).close()
        await self.credentials.forget(identity)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
        await self.credentials.close()
