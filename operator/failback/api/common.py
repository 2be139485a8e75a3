"""Shapes shared by several kinds: object identity, references, sites, OS families."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from failback.api._codec import decode, json_name


class Site(enum.StrEnum):
    """Where a machine runs, or should run."""

    AZURE = "Azure"
    ON_PREM = "OnPrem"


class OSType(enum.StrEnum):
    """Guest OS family. A VM needs a master target of the same family (R-PRE-10)."""

    WINDOWS = "Windows"
    LINUX = "Linux"


@dataclass(frozen=True)
class ObjectRef:
    """A reference to an object (MasterTarget, ProcessServer, Secret) in the same namespace."""

    name: str


@dataclass(frozen=True)
class WorkloadIdentity:
    """Use the operator's federated Azure workload identity as this client, in this tenant."""

    client_id: str
    tenant_id: str


@dataclass(frozen=True)
class VMInstance:
    """A vSphere VM, identified by its instance UUID (``config.instanceUuid``), never by name."""

    instance_uuid: str = field(metadata=json_name("instanceUUID"))


@dataclass(frozen=True)
class ObjectMeta:
    """The parts of ``metadata`` the operator uses."""

    name: str
    namespace: str
    uid: str
    generation: int = 0
    """The spec's generation; 0 when the API server has not set it (never on a stored object)."""


def parse_meta(body: Mapping[str, Any]) -> ObjectMeta:
    """``body['metadata']``; :class:`~failback.errors.SpecInvalid` when a part is missing."""
    return decode(ObjectMeta, body.get("metadata"), "metadata")
