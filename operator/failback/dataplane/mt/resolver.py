"""Find a target disk's device or flat image from its disk UUID (``--disk-resolver``).

The process server names a disk by the UUID vCenter reports for it
(``VirtualDisk.backing.uuid``, e.g. ``6000C29a-1b2c-3d4e-5f60-718293a4b5c6``); the master
target has to find which of its devices holds that disk. Two ways:

``by-id`` (a real deployment, a Linux MT VM)
    With ``disk.EnableUUID = "TRUE"`` on the MT VM, ESXi presents each virtual disk's UUID
    as its SCSI NAA identifier, and udev links it as ``/dev/disk/by-id/wwn-0x<hex>`` and
    ``/dev/disk/by-id/scsi-3<hex>`` (``<hex>``: the UUID's 32 hex digits, lower case).
    :func:`resolve_by_id` looks for the first, then the second.

``datastore:DIR`` (the test bed)
    The disk is a file in a vSphere datastore's directory tree (vcsim keeps its datastores
    as plain local directories). :func:`resolve_in_datastore` reads every VMDK descriptor
    under ``DIR``: one whose ``ddb.uuid`` is the disk's UUID names the flat file with its
    extent line. vcsim (govmomi 0.46) writes no descriptor: a disk is two empty files,
    ``x.vmdk`` and ``x-flat.vmdk``, and its ``backing.uuid`` is a name-based UUID of the
    datacenter and the datastore path (:func:`vcsim_disk_uuid`), so with the datacenter's
    moref the resolver derives it the same way and picks ``x-flat.vmdk``.

A Windows MT (``\\\\.\\PhysicalDriveN`` found by the disk's serial number) is not built.

Every failure is a :class:`ResolveError` whose message names the UUID and what was
searched; the configuration turns it into a ``ConfigError`` for the ``--disk`` flag.
Nothing here opens a disk for writing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BY_ID_ROOT = Path("/dev/disk/by-id")
"""Where udev links disks by their identifiers on Linux."""

DESCRIPTOR_MAX_BYTES = 64 << 10
"""A larger ``.vmdk`` is an extent (data), never a text descriptor."""

_UUID_RE = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|[0-9a-f]{16}-[0-9a-f]{16}|[0-9a-f]{32})$",
    re.IGNORECASE,
)
_DDB_UUID_RE = re.compile(r'^\s*ddb\.uuid\s*=\s*"([^"]*)"', re.MULTILINE)
_EXTENT_RE = re.compile(
    r'^\s*(?:RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$',
    re.MULTILINE,
)
_FLAT_EXTENTS = ("FLAT", "VMFS")
_VCSIM_DIR_RE = re.compile(r"^govcsim-.*?-(?P<name>[^-]+)-\d+$")


class ResolveError(Exception):
    """No file or device, or more than one, for a disk UUID; the message says what was
    searched."""


def disk_uuid_hex(disk_id: str) -> str | None:
    """The UUID's 32 hex digits in lower case, or None when ``disk_id`` is not a UUID.

    Accepts vCenter's ``8-4-4-4-12`` form (any case), the ``16-16`` form of
    ``vmkfstools -J getuuid`` without spaces, and 32 bare hex digits.
    """
    if not _UUID_RE.match(disk_id):
        return None
    return disk_id.replace("-", "").lower()


def _require_hex(disk_id: str) -> str:
    digits = disk_uuid_hex(disk_id)
    if digits is None:
        raise ResolveError(f"{disk_id!r} is not a disk UUID (like 6000C29a-1b2c-3d4e-…)")
    return digits


# ------------------------------------------------------------------ by-id


def resolve_by_id(disk_id: str, root: Path = BY_ID_ROOT) -> Path:
    """``root/wwn-0x<hex>``, else ``root/scsi-3<hex>``: the link, not the ``/dev/sdX`` it
    points to (which may change at the next boot)."""
    digits = _require_hex(disk_id)
    names = (root / f"wwn-0x{digits}", root / f"scsi-3{digits}")
    found = [p for p in names if p.exists()]
    if not found:
        raise ResolveError(
            f"disk UUID {disk_id}: neither {names[0]} nor {names[1]} exists (is the disk "
            'attached to this VM, and is disk.EnableUUID = "TRUE" in its configuration?)'
        )
    devices = {p.resolve() for p in found}
    if len(devices) > 1:
        targets = ", ".join(f"{p} -> {p.resolve()}" for p in found)
        raise ResolveError(f"disk UUID {disk_id}: two devices carry it: {targets}")
    return found[0]


# ------------------------------------------------------------------ datastore


@dataclass(frozen=True)
class Descriptor:
    """What the resolver reads from a VMDK text descriptor."""

    uuid_hex: str | None
    """``ddb.uuid`` as 32 lower-case hex digits, None if absent or not a UUID."""
    extents: tuple[tuple[str, str | None, int], ...]
    """Each extent line: (type, file name, offset in sectors)."""


def read_descriptor(path: Path) -> Descriptor | None:
    """The descriptor in ``path``, or None when the file is not a text descriptor (an
    extent, an empty file as vcsim writes, a binary sparse disk)."""
    try:
        if path.stat().st_size > DESCRIPTOR_MAX_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if not data or b"\0" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    ddb = _DDB_UUID_RE.search(text)
    extents = tuple(
        (m.group(2), m.group(3), int(m.group(4) or 0)) for m in _EXTENT_RE.finditer(text)
    )
    if ddb is None and not extents and "# Disk DescriptorFile" not in text:
        return None
    uuid_hex = None
    if ddb is not None:
        digits = re.sub(r"[\s-]", "", ddb.group(1)).lower()
        if re.fullmatch(r"[0-9a-f]{32}", digits):
            uuid_hex = digits
    return Descriptor(uuid_hex=uuid_hex, extents=extents)


def flat_extent(descriptor_path: Path, descriptor: Descriptor) -> Path:
    """The one flat file a descriptor names (relative to the descriptor's folder)."""
    where = f"descriptor {descriptor_path}"
    if len(descriptor.extents) != 1:
        raise ResolveError(
            f"{where} has {len(descriptor.extents)} extents; only a disk with one flat "
            "extent (monolithicFlat or vmfs) can be a target disk"
        )
    kind, name, offset = descriptor.extents[0]
    if kind not in _FLAT_EXTENTS or name is None:
        raise ResolveError(
            f"{where}: its extent is {kind}, not a flat extent ({' or '.join(_FLAT_EXTENTS)})"
        )
    if offset:
        raise ResolveError(f"{where}: its extent starts at sector {offset}, not 0")
    flat = descriptor_path.parent / name
    if not flat.is_file():
        raise ResolveError(f"{where} names extent {flat}, which does not exist")
    return flat


def vcsim_disk_uuid(datacenter: str, datastore_path: str) -> str:
    """The ``backing.uuid`` vcsim gives a disk it creates: govmomi 0.46
    ``simulator.virtualDiskUUID``, a SHA-1 name-based UUID in the OID namespace of the
    datacenter's moref (``Datacenter:<moid>``) followed by the disk's datastore path
    (``[LocalDS_0] vm/disk.vmdk``, as the client sent it or vcsim generated it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"Datacenter:{datacenter}{datastore_path}"))


def vcsim_flat_file(path: Path) -> Path:
    """The file that holds a vcsim disk's bytes: the ``-flat.vmdk`` vcsim creates beside
    the (empty) ``.vmdk``, or the ``.vmdk`` itself when there is none."""
    flat = path.with_name(path.name.replace(".vmdk", "-flat.vmdk", 1))
    return flat if flat.is_file() else path


def datastore_name(directory: Path) -> str:
    """The datastore vcsim keeps in ``directory``: ``govcsim-<DC>-<NAME>-<digits>`` for
    its local datastores, the folder's name for a NAS datastore it mounted."""
    match = _VCSIM_DIR_RE.match(directory.name)
    return match.group("name") if match else directory.name


def _datastore_paths(directory: Path, name: str | None, vmdk: Path) -> Iterator[str]:
    """The datastore paths ``vmdk`` may have: its datastore is ``directory`` itself, or the
    folder of ``directory`` it is in (so the folder holding vcsim's datastores works as well
    as one datastore's)."""
    rel = vmdk.relative_to(directory)
    yield f"[{name or datastore_name(directory)}] {rel.as_posix()}"
    if len(rel.parts) > 1:
        yield f"[{datastore_name(directory / rel.parts[0])}] {Path(*rel.parts[1:]).as_posix()}"


def _vmdks(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*.vmdk")):
        if path.is_file():
            yield path


def resolve_in_datastore(
    disk_id: str,
    directory: Path,
    *,
    datacenter: str | None = None,
    datastore: str | None = None,
) -> Path:
    """The flat file under ``directory`` that holds the disk with this UUID.

    A descriptor whose ``ddb.uuid`` matches gives its flat extent. A ``.vmdk`` that is no
    descriptor (and not a ``-flat.vmdk`` extent) is checked as a vcsim disk when
    ``datacenter`` (the moid, e.g. ``datacenter-1``) is given: its datastore path is
    ``[<datastore>] <path under the datastore's folder>``, the datastore being
    ``directory`` (named ``datastore``, or after its folder) or one of its sub-folders.
    """
    digits = _require_hex(disk_id)
    if not directory.is_dir():
        raise ResolveError(f"disk UUID {disk_id}: {directory} is not a directory")
    found: dict[Path, tuple[Path, str]] = {}
    descriptors = others = 0
    for vmdk in _vmdks(directory):
        descriptor = read_descriptor(vmdk)
        if descriptor is not None:
            descriptors += 1
            if descriptor.uuid_hex == digits:
                flat = flat_extent(vmdk, descriptor)
                found.setdefault(flat.resolve(), (flat, f"ddb.uuid of {vmdk}"))
            continue
        if vmdk.name.endswith("-flat.vmdk"):
            continue  # an extent (vcsim's too): a disk is named by its descriptor
        others += 1
        if datacenter is None:
            continue
        for ds_path in _datastore_paths(directory, datastore, vmdk):
            if uuid.UUID(vcsim_disk_uuid(datacenter, ds_path)).hex == digits:
                flat = vcsim_flat_file(vmdk)
                found.setdefault(flat.resolve(), (flat, f"vcsim disk {ds_path}"))
    if len(found) > 1:
        listed = "; ".join(f"{path} ({how})" for path, how in found.values())
        raise ResolveError(
            f"disk UUID {disk_id}: {len(found)} files under {directory} carry it: {listed}"
        )
    if found:
        return next(iter(found.values()))[0]
    searched = f"{descriptors} VMDK descriptor(s) under {directory} (ddb.uuid)"
    if datacenter is None:
        vcsim = (
            f"{others} .vmdk file(s) without a descriptor not checked as vcsim disks "
            "(add datacenter=MOID to --disk-resolver to check them)"
        )
    else:
        folders = [d for d in directory.iterdir() if d.is_dir()]
        names = ", ".join(
            sorted({datastore or datastore_name(directory), *map(datastore_name, folders)})
        )
        vcsim = (
            f"{others} .vmdk file(s) without a descriptor checked as vcsim disks of "
            f"Datacenter:{datacenter} on datastores {names}"
        )
    raise ResolveError(f"disk UUID {disk_id}: no disk found: searched {searched}; {vcsim}")


# ------------------------------------------------------------------ the two resolvers


@dataclass(frozen=True)
class ByIdResolver:
    """``--disk-resolver by-id[:DIR]``: udev's links by disk identifier."""

    root: Path = BY_ID_ROOT

    def resolve(self, disk_id: str) -> Path:
        return resolve_by_id(disk_id, self.root)

    def __str__(self) -> str:
        return "by-id" if self.root == BY_ID_ROOT else f"by-id:{self.root}"


@dataclass(frozen=True)
class DatastoreResolver:
    """``--disk-resolver datastore:DIR[,datacenter=MOID][,datastore=NAME]``: a datastore
    folder (or a folder of datastore folders), as vcsim keeps them."""

    directory: Path
    datacenter: str | None = None
    datastore: str | None = None

    def resolve(self, disk_id: str) -> Path:
        return resolve_in_datastore(
            disk_id, self.directory, datacenter=self.datacenter, datastore=self.datastore
        )

    def __str__(self) -> str:
        options = "".join(
            f",{key}={value}"
            for key, value in (("datacenter", self.datacenter), ("datastore", self.datastore))
            if value is not None
        )
        return f"datastore:{self.directory}{options}"


Resolver = ByIdResolver | DatastoreResolver
