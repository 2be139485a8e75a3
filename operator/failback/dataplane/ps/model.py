"""A replication session's spec (what the operator asks for) and state (what the process
server persists between cycles). Pure: parsing, validation, JSON."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from failback.api import format_time, parse_time

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
"""Kubernetes names: a session is keyed ``namespace/name`` of its ProtectedVM (or group)."""
GROUP_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
DISK_ID_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$")
AZURE_NAME_RE = re.compile(r"^[-\w._()]{1,90}$")
SUBSCRIPTION_RE = re.compile(r"^[0-9a-fA-F-]{36}$")
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
MAX_DISKS = 64


class SpecError(ValueError):
    """A session spec that cannot run; ``field`` names the JSON field to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class SourceDisk:
    """One Azure managed disk and the target disk (its UUID on the MT) it replicates to."""

    resource_group: str
    name: str
    target_disk_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "resourceGroup": self.resource_group,
            "name": self.name,
            "targetDiskId": self.target_disk_id,
        }


@dataclass(frozen=True)
class ReplicaDisk:
    """OnPremToAzure: one vSphere disk (by ``backing.uuid``) and the Azure managed disk
    that replicates it."""

    source_disk_uuid: str
    resource_group: str
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "sourceDiskUuid": self.source_disk_uuid,
            "resourceGroup": self.resource_group,
            "name": self.name,
        }


AZURE_TO_ONPREM = "AzureToOnPrem"
ONPREM_TO_AZURE = "OnPremToAzure"


@dataclass(frozen=True)
class SessionSpec:
    """What to replicate, where to, how often. ``paused`` and ``intervalSeconds`` may change
    while the session runs; anything else needs the session deleted first."""

    namespace: str
    name: str
    subscription_id: str
    mt_endpoint: str
    mt_group: str
    disks: tuple[SourceDisk, ...]
    interval_seconds: float = 300.0
    paused: bool = False
    vm_id: str | None = None
    direction: str = AZURE_TO_ONPREM
    vcenter_server: str | None = None
    """OnPremToAzure: the vCenter (``host[:port]``) and the VM's instance UUID there."""
    vm_instance_uuid: str | None = None
    replicas: tuple[ReplicaDisk, ...] = ()
    location: str | None = None
    """OnPremToAzure: the Azure region of the replica disks."""
    retention_seconds: float = 86_400.0
    """OnPremToAzure: how long point snapshots are kept (the MT keeps its own)."""
    vm_ids: tuple[str, ...] = ()
    """AzureToOnPrem, a replication group's session: every member VM's resource ID (each
    is listed under ``agents`` once its disks were read, R-PRE-13)."""

    @property
    def all_vm_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x for x in (self.vm_id, *self.vm_ids) if x))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        if self.direction == ONPREM_TO_AZURE:
            return {
                "direction": self.direction,
                "subscriptionId": self.subscription_id,
                "vcenter": {"server": self.vcenter_server, "vmInstanceUuid": self.vm_instance_uuid},
                "replicas": [r.to_dict() for r in self.replicas],
                "location": self.location,
                "retentionSeconds": self.retention_seconds,
                "intervalSeconds": self.interval_seconds,
                "paused": self.paused,
                "vmId": self.vm_id,
            }
        return {
            "subscriptionId": self.subscription_id,
            "masterTarget": {"endpoint": self.mt_endpoint, "group": self.mt_group},
            "disks": [d.to_dict() for d in self.disks],
            "intervalSeconds": self.interval_seconds,
            "paused": self.paused,
            "vmId": self.vm_id,
            **({"vmIds": list(self.vm_ids)} if self.vm_ids else {}),
        }

    def targets(self) -> frozenset[str]:
        """What this session writes: no two sessions may share any of it."""
        if self.direction == ONPREM_TO_AZURE:
            return frozenset(
                f"azure:{self.subscription_id}/{r.resource_group}/{r.name}".lower()
                for r in self.replicas
            )
        return frozenset({f"mt:{self.mt_endpoint}/{self.mt_group}"})

    def same_target(self, other: SessionSpec) -> bool:
        """Whether ``other`` replicates the same disks to the same place (changes of
        ``paused`` and ``intervalSeconds`` only)."""
        return replace(other, paused=self.paused, interval_seconds=self.interval_seconds) == self


def _text(body: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.match(value):
        raise SpecError(name, f"must be {what}")
    return value


def _vm_ids(body: dict[str, Any]) -> tuple[str, ...]:
    raw = body.get("vmIds", [])
    if not isinstance(raw, list) or len(raw) > MAX_DISKS:
        raise SpecError("vmIds", f"must list at most {MAX_DISKS} Azure VM resource ids")
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not item.startswith("/"):
            raise SpecError(f"vmIds[{index}]", "must be an Azure VM's resource id")
    return tuple(raw)


def _common(body: dict[str, Any]) -> tuple[float, bool, str | None]:
    interval = body.get("intervalSeconds", 300)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0.1:
        raise SpecError("intervalSeconds", "must be a number of seconds >= 0.1")
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        raise SpecError("paused", "must be true or false")
    vm_id = body.get("vmId")
    if vm_id is not None and (not isinstance(vm_id, str) or not vm_id.startswith("/")):
        raise SpecError("vmId", "must be the Azure VM's resource id")
    return float(interval), paused, vm_id


def _parse_reverse(
    namespace: str,
    name: str,
    subscription: str,
    body: dict[str, Any],
    interval: float,
    paused: bool,
    vm_id: str | None,
) -> SessionSpec:
    vcenter = body.get("vcenter")
    if not isinstance(vcenter, dict):
        raise SpecError("vcenter", "must be an object with server and vmInstanceUuid")
    server = vcenter.get("server")
    if not isinstance(server, str) or not re.match(r"^[A-Za-z0-9.\-\[\]:]{1,255}$", server):
        raise SpecError("vcenter.server", "must be the vCenter's host[:port]")
    uuid = vcenter.get("vmInstanceUuid")
    if not isinstance(uuid, str) or not UUID_RE.match(uuid):
        raise SpecError("vcenter.vmInstanceUuid", "must be the VM's instance UUID")
    raw = body.get("replicas")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_DISKS:
        raise SpecError("replicas", f"must list 1 to {MAX_DISKS} disks")
    replicas: list[ReplicaDisk] = []
    for index, item in enumerate(raw):
        where = f"replicas[{index}]"
        if not isinstance(item, dict):
            raise SpecError(where, "must be an object")
        try:
            replicas.append(
                ReplicaDisk(
                    _text(item, "sourceDiskUuid", UUID_RE, "the vSphere disk's backing UUID"),
                    _text(item, "resourceGroup", AZURE_NAME_RE, "an Azure resource group name"),
                    _text(item, "name", AZURE_NAME_RE, "the replica managed disk's name"),
                )
            )
        except SpecError as exc:
            raise SpecError(f"{where}.{exc.field}", str(exc).split(": ", 1)[1]) from exc
    for attr, label in (("source_disk_uuid", "sourceDiskUuid"), ("name", "name")):
        values = [getattr(r, attr) for r in replicas]
        if len(set(values)) != len(values):
            raise SpecError(f"replicas[].{label}", "each disk must appear once")
    location = body.get("location")
    if not isinstance(location, str) or not re.match(r"^[a-z0-9]{2,40}$", location):
        raise SpecError("location", "must be an Azure region name like westeurope")
    retention = body.get("retentionSeconds", 86_400)
    if isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 60:
        raise SpecError("retentionSeconds", "must be a number of seconds >= 60")
    return SessionSpec(
        namespace,
        name,
        subscription,
        "",
        "",
        (),
        interval,
        paused,
        vm_id,
        ONPREM_TO_AZURE,
        server,
        uuid.lower(),
        tuple(replicas),
        location,
        float(retention),
    )


def parse_spec(namespace: str, name: str, body: dict[str, Any]) -> SessionSpec:
    """The spec of session ``namespace/name`` from its JSON body; :class:`SpecError` names
    the first field that is wrong."""
    if not NAME_RE.match(namespace) or not NAME_RE.match(name) or len(namespace) > 63:
        raise SpecError("path", "/v1/sessions/{namespace}/{name} takes Kubernetes names")
    subscription = _text(body, "subscriptionId", SUBSCRIPTION_RE, "an Azure subscription id")
    direction = body.get("direction", AZURE_TO_ONPREM)
    if direction not in (AZURE_TO_ONPREM, ONPREM_TO_AZURE):
        raise SpecError("direction", f"must be {AZURE_TO_ONPREM} or {ONPREM_TO_AZURE}")
    interval, paused, vm_id = _common(body)
    if direction == ONPREM_TO_AZURE:
        return _parse_reverse(namespace, name, subscription.lower(), body, interval, paused, vm_id)
    mt = body.get("masterTarget")
    if not isinstance(mt, dict):
        raise SpecError("masterTarget", "must be an object with endpoint and group")
    endpoint = mt.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if (
        parts is None
        or parts.scheme != "https"
        or not parts.hostname
        or parts.path not in ("", "/")
    ):
        raise SpecError("masterTarget.endpoint", "must be https://host:port with no path")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise SpecError("masterTarget.endpoint", f"bad port: {exc}") from exc
    group = mt.get("group")
    if not isinstance(group, str) or not GROUP_RE.match(group):
        raise SpecError("masterTarget.group", "must be the MT's consistency group name")
    raw_disks = body.get("disks")
    if not isinstance(raw_disks, list) or not 1 <= len(raw_disks) <= MAX_DISKS:
        raise SpecError("disks", f"must list 1 to {MAX_DISKS} disks")
    disks: list[SourceDisk] = []
    for index, raw in enumerate(raw_disks):
        where = f"disks[{index}]"
        if not isinstance(raw, dict):
            raise SpecError(where, "must be an object")
        try:
            disk = SourceDisk(
                _text(raw, "resourceGroup", AZURE_NAME_RE, "an Azure resource group name"),
                _text(raw, "name", AZURE_NAME_RE, "a managed disk name"),
                _text(raw, "targetDiskId", DISK_ID_RE, "the target disk's UUID on the MT"),
            )
        except SpecError as exc:
            raise SpecError(f"{where}.{exc.field}", str(exc).split(": ", 1)[1]) from exc
        disks.append(disk)
    for attr, label in (("name", "name"), ("target_disk_id", "targetDiskId")):
        values = [getattr(d, attr) for d in disks]
        if len(set(values)) != len(values):
            raise SpecError(f"disks[].{label}", "each disk must appear once")
    return SessionSpec(
        namespace,
        name,
        subscription.lower(),
        endpoint.rstrip("/"),  # type: ignore[union-attr]
        group,
        tuple(disks),
        interval,
        paused,
        vm_id,
        vm_ids=_vm_ids(body),
    )


@dataclass(frozen=True)
class OpenCycle:
    """A cycle whose batches may have reached the target, but whose point is not settled.

    Persisted before the first batch is sent: after a crash the same snapshots (the
    source's ``identity`` of the cycle) give the same batches, so the cycle resumes from
    the target's ``lastDurableSeq + 1``."""

    number: int
    first_seq: int
    point_id: str
    source_time: dt.datetime
    identity: dict[str, Any]
    resync: str | None = None
    app_consistent: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "firstSeq": self.first_seq,
            "pointId": self.point_id,
            "sourceTime": format_time(self.source_time),
            "identity": self.identity,
            "resync": self.resync,
            "appConsistent": self.app_consistent,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenCycle:
        return cls(
            int(data["number"]),
            int(data["firstSeq"]),
            str(data["pointId"]),
            parse_time(str(data["sourceTime"])),
            dict(data["identity"]),
            data.get("resync"),
            bool(data.get("appConsistent", False)),
        )


@dataclass(frozen=True)
class SessionState:
    """Everything a session needs after a restart of the process server."""

    spec: SessionSpec
    counter: int = 0
    """Number of the last settled cycle."""
    last_point: str | None = None
    """The id of the last point this session committed and settled."""
    last_point_time: dt.datetime | None = None
    """Its source time (RPO)."""
    source: dict[str, Any] = field(default_factory=dict)
    """The source's own state (bases, change ids): JSON it reads back (``.sources``)."""
    open: OpenCycle | None = None
    resync: str | None = None
    """Why the next cycle must be a full resync (None: it need not)."""
    registered: dt.datetime | None = None
    """When this PS first read the VM's disks (its first snapshot): R-PRE-13's registration
    in a product that reads through snapshots instead of an in-guest agent."""
    incarnation: str = "c"
    """A token drawn when the session was created: the prefix of its point ids."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "namespace": self.spec.namespace,
            "name": self.spec.name,
            "spec": self.spec.to_dict(),
            "counter": self.counter,
            "lastPoint": self.last_point,
            "lastPointTime": format_time(self.last_point_time) if self.last_point_time else None,
            "source": self.source,
            "open": self.open.to_dict() if self.open else None,
            "resync": self.resync,
            "registered": format_time(self.registered) if self.registered else None,
            "incarnation": self.incarnation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        spec = parse_spec(str(data["namespace"]), str(data["name"]), dict(data["spec"]))
        raw_open = data.get("open")

        def when(key: str) -> dt.datetime | None:
            return parse_time(str(data[key])) if data.get(key) else None

        return cls(
            spec,
            int(data.get("counter", 0)),
            data.get("lastPoint"),
            when("lastPointTime"),
            dict(data.get("source") or {}),
            OpenCycle.from_dict(raw_open) if raw_open else None,
            data.get("resync"),
            when("registered"),
            str(data.get("incarnation") or "c"),
        )


def point_id(incarnation: str, number: int) -> str:
    """The recovery point of cycle ``number`` of a session created as ``incarnation``:
    unique within the target even when a session is deleted and created again."""
    return f"{incarnation}-{number:09d}"


def new_incarnation() -> str:
    return secrets.token_hex(4)
