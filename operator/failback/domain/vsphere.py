"""What the operator knows of a vCenter: plain, immutable facts read in one pass.

The vSphere adapter fills these from the PropertyCollector with fixed property lists;
the rules of :mod:`failback.domain.mastertarget` and :mod:`failback.domain.onprem_preflight`
judge them. Pure: no pyVmomi here, morefs are plain strings (``vm-42``).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# ------------------------------------------------------------------ credentials

SECRET_KEYS: Final = ("server", "username", "password")
"""Keys every vCenter Secret needs, besides one of :data:`TRUST_KEYS`."""

TRUST_KEYS: Final = ("caBundle", "thumbprint")
"""How the operator trusts vCenter's certificate: a CA bundle (PEM) or a pinned SHA-256
(or SHA-1) fingerprint of the certificate itself. One is required: never insecure."""

_HEX = re.compile(r"^[0-9a-f]+$")


REPLICATION_SNAPSHOT = "failback-replication"
"""The name of the snapshot a replication cycle reads through; any other is the user's."""


@dataclass(frozen=True)
class VCenterCredentials:
    """The content of a vCenter Secret, checked. ``repr`` never shows the password."""

    server: str
    """Host name or address, optionally ``host:port`` (443 by default)."""
    username: str
    password: str = field(repr=False)
    ca_bundle: str | None = field(default=None, repr=False)
    thumbprint: str | None = None
    """Lower-case hex without colons: 64 digits (SHA-256) or 40 (SHA-1)."""

    @property
    def host(self) -> str:
        host, _, _ = self._split()
        return host

    @property
    def port(self) -> int:
        _, _, port = self._split()
        return port

    def _split(self) -> tuple[str, str, int]:
        server = self.server.removeprefix("https://").split("/", 1)[0]
        if server.startswith("["):  # [v6]:port
            host, _, rest = server[1:].partition("]")
            return host, "", int(rest[1:]) if rest.startswith(":") else 443
        host, sep, port = server.rpartition(":")
        if sep and port.isdigit():
            return host, "", int(port)
        return server, "", 443

    @property
    def key(self) -> tuple[str, int, str]:
        """What one cached session is for: one server and one user."""
        return (self.host.lower(), self.port, self.username)


class SecretProblem(Exception):
    """A vCenter Secret lacks a key or holds a value the operator cannot use."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def normalize_thumbprint(text: str) -> str:
    """``AB:CD:…`` → ``abcd…``; ValueError unless it is a SHA-256 or SHA-1 fingerprint."""
    value = text.strip().replace(":", "").lower()
    if not _HEX.fullmatch(value) or len(value) not in (40, 64):
        raise ValueError(
            "thumbprint must be the SHA-256 (64 hex digits) or SHA-1 (40) fingerprint of "
            "vCenter's certificate, colons allowed"
        )
    return value


def parse_vcenter_secret(data: Mapping[str, str]) -> VCenterCredentials:
    """The credentials in a vCenter Secret's decoded ``data``, or :class:`SecretProblem`."""
    for key in SECRET_KEYS:
        if not (data.get(key) or "").strip():
            raise SecretProblem(key, f"has no key {key}")
    ca = (data.get("caBundle") or "").strip() or None
    raw_thumb = (data.get("thumbprint") or "").strip() or None
    if ca is None and raw_thumb is None:
        raise SecretProblem("caBundle", "has no key caBundle or thumbprint")
    if ca is not None and "-----BEGIN CERTIFICATE-----" not in ca:
        raise SecretProblem("caBundle", "has a caBundle that holds no PEM certificate")
    thumb = None
    if raw_thumb is not None:
        try:
            thumb = normalize_thumbprint(raw_thumb)
        except ValueError as e:
            raise SecretProblem("thumbprint", f"has an invalid thumbprint: {e}") from None
    return VCenterCredentials(
        server=data["server"].strip(),
        username=data["username"].strip(),
        password=data["password"],
        ca_bundle=ca,
        thumbprint=thumb,
    )


# ------------------------------------------------------------------ inventory


class ControllerKind(enum.StrEnum):
    LSI_LOGIC = "LSILogic"
    LSI_LOGIC_SAS = "LSILogicSAS"
    PARAVIRTUAL = "Paravirtual"
    BUS_LOGIC = "BusLogic"
    OTHER = "Other"
    """IDE, SATA, NVMe: not a SCSI controller."""


class PowerState(enum.StrEnum):
    ON = "poweredOn"
    OFF = "poweredOff"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class Controller:
    key: int
    kind: ControllerKind
    bus_number: int
    label: str


@dataclass(frozen=True)
class Disk:
    key: int
    label: str
    file_name: str
    """``[datastore] folder/disk.vmdk``."""
    datastore: str | None
    """Name of the datastore holding the file (from the backing)."""
    uuid: str | None
    capacity_bytes: int
    controller_key: int
    unit_number: int | None


@dataclass(frozen=True)
class VM:
    moref: str
    name: str
    instance_uuid: str
    bios_uuid: str | None = None
    template: bool = False
    power_state: PowerState = PowerState.OFF
    host: str | None = None
    """Moref of the ESXi host it runs (or is registered) on."""
    guest_id: str | None = None
    guest_family: str | None = None
    """``linuxGuest``, ``windowsGuest``… as VMware Tools report it."""
    guest_full_name: str | None = None
    tools_running: str | None = None
    """``guestToolsRunning``, ``guestToolsNotRunning``, ``guestToolsExecutingScripts``."""
    tools_version_status: str | None = None
    """``guestToolsNotInstalled``, ``guestToolsCurrent``…"""
    snapshots: tuple[str, ...] = ()
    """Names of every snapshot in the tree."""
    extra_config: tuple[tuple[str, str], ...] = ()
    controllers: tuple[Controller, ...] = ()
    disks: tuple[Disk, ...] = ()
    datastores: tuple[str, ...] = ()
    """Morefs of the datastores the VM uses."""
    folder: str | None = None
    """Moref of its parent folder."""

    def extra_value(self, key: str) -> str | None:
        """An extraConfig value, keys compared case-insensitively as vSphere does."""
        lowered = key.lower()
        return next((v for k, v in self.extra_config if k.lower() == lowered), None)


@dataclass(frozen=True)
class Mount:
    host: str
    access_mode: str | None = None
    """``readWrite`` or ``readOnly``."""
    mounted: bool | None = None
    accessible: bool | None = None


@dataclass(frozen=True)
class Datastore:
    moref: str
    name: str
    type: str
    """``VMFS``, ``NFS``, ``NFS41``, ``vsan``, ``VVOL``, ``OTHER``..."""
    capacity_bytes: int
    free_bytes: int
    accessible: bool
    mounts: tuple[Mount, ...] = ()
    maintenance_mode: str | None = None

    def mount_on(self, host: str) -> Mount | None:
        return next((m for m in self.mounts if m.host == host), None)


@dataclass(frozen=True)
class License:
    edition_key: str
    name: str


@dataclass(frozen=True)
class Host:
    moref: str
    name: str
    product: str | None = None
    """``VMware ESXi 8.0.2 build-21997540``."""
    version: str | None = None
    license: License | None = None
    datastores: tuple[str, ...] = ()
    connection_state: str | None = None
    parent: str | None = None
    """Moref of its compute resource (a cluster, or the standalone host's own)."""


@dataclass(frozen=True)
class ComputeResource:
    moref: str
    name: str
    cluster: bool
    hosts: tuple[str, ...] = ()
    resource_pool: str | None = None


@dataclass(frozen=True)
class Folder:
    moref: str
    name: str
    parent: str | None = None


@dataclass(frozen=True)
class Network:
    moref: str
    name: str


@dataclass(frozen=True)
class Datacenter:
    moref: str
    name: str
    vm_folder: str | None = None
    host_folder: str | None = None


@dataclass(frozen=True)
class Inventory:
    """One consistent read of a vCenter: every VM, host, datastore and placement object,
    the hosts' licences and which privileges the session lacks on which object."""

    vms: tuple[VM, ...] = ()
    hosts: tuple[Host, ...] = ()
    datastores: tuple[Datastore, ...] = ()
    datacenters: tuple[Datacenter, ...] = ()
    compute: tuple[ComputeResource, ...] = ()
    folders: tuple[Folder, ...] = ()
    networks: tuple[Network, ...] = ()
    missing_privileges: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(entity moref, privileges the session lacks on it), for entities lacking some."""
    server: str = ""
    """Which vCenter, as the Secret names it."""

    @functools.cached_property
    def _vms_by_uuid(self) -> dict[str, VM]:
        return {v.instance_uuid.lower(): v for v in self.vms}

    @functools.cached_property
    def _hosts(self) -> dict[str, Host]:
        return {h.moref: h for h in self.hosts}

    @functools.cached_property
    def _datastores(self) -> dict[str, Datastore]:
        return {d.moref: d for d in self.datastores}

    def vm_by_uuid(self, instance_uuid: str) -> VM | None:
        return self._vms_by_uuid.get(instance_uuid.lower())

    def host(self, moref: str | None) -> Host | None:
        return self._hosts.get(moref) if moref is not None else None

    def datastore(self, moref: str) -> Datastore | None:
        return self._datastores.get(moref)

    def datastore_named(self, name: str) -> Datastore | None:
        return next((d for d in self.datastores if d.name == name), None)

    def missing_on(self, moref: str) -> tuple[str, ...]:
        return next((p for m, p in self.missing_privileges if m == moref), ())
