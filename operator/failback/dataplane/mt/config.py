"""The master target's configuration: one frozen dataclass, validated before anything opens.

``failback master-target`` builds it from its command line. Every problem is a
:class:`ConfigError` whose message names the flag to fix. The parsers are pure; only
:func:`resolve_disks` (a disk UUID to its device or file, through :mod:`.resolver`) and
:func:`build_config`'s checks that the named files exist (and its read of the groups file,
for the groups it records as released) touch the file system, and nothing here opens a disk
or a socket.

The flags may name no disk at all: the operator then registers groups at run time
(``PUT /v1/groups/{group}``, recorded in :mod:`.groups`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from failback.dataplane.mt import groups as groups_file
from failback.dataplane.mt.groups import DISK_RE, name_problem
from failback.dataplane.mt.resolver import (
    ByIdResolver,
    DatastoreResolver,
    ResolveError,
    Resolver,
    disk_uuid_hex,
)

DEFAULT_PORT = 9443
"""Replication data and the MT's control API share one port (R-ARCH-5)."""

DEFAULT_GROUP = "default"
"""The group that holds every disk when no ``--group`` is given."""

_DURATION_RE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"^(\d+)([KMGTP]i?)?B?$")
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which flag to change and how."""


@dataclass(frozen=True)
class MasterTargetConfig:
    """How one master target service runs."""

    host: str
    """Address to listen on (``0.0.0.0`` for every interface)."""
    port: int
    """TCP port: 9443 by default (R-ARCH-5)."""
    cert: Path
    """PEM server certificate (with its chain) presented to clients."""
    key: Path
    """PEM private key of ``cert``. Its path may be logged, never its content."""
    client_ca: Path
    """PEM CA bundle: only clients with a certificate signed by it get an answer."""
    retention_dir: Path
    """The retention volume's directory; each group's journal is ``<retention_dir>/<group>``."""
    disks: dict[str, Path]
    """Target disks by id: a flat image file or a block device, as named by ``--disk
    ID=PATH`` or found by the disk resolver. A disk given by UUID of a group the groups
    file records as released is missing when it was not found (it may be attached to a
    recovered VM by now)."""
    groups: dict[str, tuple[str, ...]]
    """Consistency groups (a VM, or a replication group of VMs) and their disk ids, from
    the flags; more come from the groups file and ``PUT /v1/groups/{group}``."""
    capacity_bytes: int = 1 << 40
    """The most each group's journal may hold (1 TiB by default, the MT sizing)."""
    retention: dt.timedelta = dt.timedelta(hours=24)
    """Recovery points are kept this long after the newest one's source time (R-POL-1)."""
    first_cycle: str = "direct"
    """How a group's initial copy is written: ``direct`` (disks first, no retention space
    needed) or ``journal`` (write-ahead like every later cycle)."""
    max_batch_bytes: int = 256 << 20
    """The largest batch body accepted (413 above it)."""
    resolver: Resolver = field(default_factory=ByIdResolver)
    """How a disk UUID is found: the ``--disk UUID`` flags' at startup, and every disk of a
    group registered at run time (``--disk-resolver``)."""

    def group_of(self, disk_id: str) -> str | None:
        for name, members in self.groups.items():
            if disk_id in members:
                return name
        return None


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST`` (port 9443) or ``:PORT`` (every interface)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        host, port_text = value, str(DEFAULT_PORT)
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - an explicit ":PORT" asks for it
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--listen {value}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def parse_duration(value: str) -> dt.timedelta:
    """``24h``, ``90m``, ``1d12h``, ``3600s``: one or more number+unit pairs."""
    text = value.strip()
    pos, seconds = 0, 0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ConfigError(f"--retention {value}: use a duration like 24h, 90m, 1d12h or 3600s")
    return dt.timedelta(seconds=seconds)


def parse_size(value: str, flag: str = "--capacity") -> int:
    """Bytes: ``1099511627776``, ``64Mi``, ``1Ti``, ``500G`` (powers of 1024 or 1000)."""
    match = _SIZE_RE.match(value.strip())
    if not match:
        raise ConfigError(f"{flag} {value}: use bytes, or a size like 64Mi, 500Gi or 1Ti")
    number, unit = int(match.group(1)), match.group(2)
    if unit:
        number *= (1024 if unit.endswith("i") else 1000) ** _POWERS[unit[0]]
    if number <= 0:
        raise ConfigError(f"{flag} {value}: must be more than 0 bytes")
    return number


def parse_disks(specs: Iterable[str]) -> dict[str, Path | None]:
    """``ID=PATH`` (the path, made absolute) or ``ID`` alone (None: a disk UUID the disk
    resolver will look up)."""
    disks: dict[str, Path | None] = {}
    for spec in specs:
        disk_id, sep, path = spec.partition("=")
        if sep and not path:
            raise ConfigError(f"--disk {spec}: use --disk ID=PATH, or --disk UUID alone")
        if not DISK_RE.match(disk_id):
            raise ConfigError(
                f"--disk {spec}: the id {disk_id!r} must be 1-128 letters, digits, '.', '_', "
                "':' or '-' (a disk UUID)"
            )
        if not sep and disk_uuid_hex(disk_id) is None:
            raise ConfigError(
                f"--disk {spec}: use --disk ID=PATH; only a disk UUID (like "
                "6000C29a-1b2c-3d4e-5f60-718293a4b5c6) can be given alone, for "
                "--disk-resolver to find"
            )
        if disk_id in disks:
            raise ConfigError(f"--disk {spec}: disk id {disk_id!r} is given twice")
        disks[disk_id] = Path(path).absolute() if sep else None
    return disks


def parse_disk_resolver(value: str) -> Resolver:
    """``by-id`` (``/dev/disk/by-id``), ``by-id:DIR`` (the same links under another
    folder), or ``datastore:DIR[,datacenter=MOID][,datastore=NAME]``."""
    kind, sep, rest = value.partition(":")
    if kind == "by-id":
        if sep and not rest:
            raise ConfigError(f"--disk-resolver {value}: use by-id or by-id:DIR")
        return ByIdResolver(Path(rest).absolute()) if rest else ByIdResolver()
    if kind == "datastore" and rest:
        options: dict[str, str] = {}
        directory = rest
        while True:
            head, comma, tail = directory.rpartition(",")
            key, eq, option = tail.partition("=")
            if not comma or not eq or key not in ("datacenter", "datastore"):
                break
            if not option or key in options:
                raise ConfigError(
                    f"--disk-resolver {value}: {key}= needs one value (a moid like "
                    "datacenter-1, or a datastore name)"
                )
            options[key] = option
            directory = head
        if not directory:
            raise ConfigError(f"--disk-resolver {value}: name the datastore's directory")
        return DatastoreResolver(
            Path(directory).absolute(),
            datacenter=options.get("datacenter"),
            datastore=options.get("datastore"),
        )
    raise ConfigError(
        f"--disk-resolver {value}: use by-id, by-id:DIR or "
        "datastore:DIR[,datacenter=MOID][,datastore=NAME]"
    )


def resolve_disks(
    disks: Mapping[str, Path | None], resolver: Resolver, missing_ok: Collection[str] = ()
) -> dict[str, Path]:
    """Every disk's path: the one given, or the one ``resolver`` finds for its UUID. This
    reads the file system (the resolver's links or directory), nothing else. A disk of
    ``missing_ok`` that is not there is kept with its path as given, or left out when its
    UUID is not found, instead of refused."""
    paths: dict[str, Path] = {}
    for disk_id, given in disks.items():
        if given is not None:
            if not given.exists() and disk_id not in missing_ok:
                raise ConfigError(f"--disk {disk_id}={given}: no such file or device")
            paths[disk_id] = given
            continue
        try:
            paths[disk_id] = resolver.resolve(disk_id)
        except ResolveError as exc:
            if disk_id not in missing_ok:
                raise ConfigError(f"--disk {disk_id} (--disk-resolver {resolver}): {exc}") from exc
    return paths


def parse_groups(
    specs: Iterable[str], disks: Mapping[str, Path | None]
) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, sep, members_text = spec.partition("=")
        members = tuple(m.strip() for m in members_text.split(",") if m.strip())
        if not sep or not members:
            raise ConfigError(f"--group {spec}: use --group NAME=DISKID,DISKID")
        problem = name_problem(name)
        if problem is not None:
            raise ConfigError(f"--group {spec}: {problem}")
        if name in groups:
            raise ConfigError(f"--group {spec}: group {name!r} is given twice")
        for disk_id in members:
            if disk_id not in disks:
                raise ConfigError(
                    f"--group {spec}: disk {disk_id!r} is not a --disk "
                    f"(known: {', '.join(sorted(disks))})"
                )
            other = next((g for g, m in groups.items() if disk_id in m), None)
            if other is not None or members.count(disk_id) > 1:
                raise ConfigError(
                    f"--group {spec}: disk {disk_id!r} is already in group {other or name!r}; "
                    "a disk belongs to one group"
                )
        groups[name] = members
    if not groups:
        return {DEFAULT_GROUP: tuple(disks)} if disks else {}
    loose = [d for d in disks if not any(d in m for m in groups.values())]
    if loose:
        raise ConfigError(f"disk {loose[0]!r} is in no --group: add it to one, or drop its --disk")
    return groups


def build_config(
    *,
    listen: str,
    cert: str,
    key: str,
    client_ca: str,
    retention_dir: str,
    disks: Sequence[str] | None = (),
    disk_resolver: str = "by-id",
    groups: Sequence[str] = (),
    capacity: str | None = None,
    retention: str = "24h",
    first_cycle: str = "direct",
) -> MasterTargetConfig:
    """Validate every flag (files included), resolve the disks given by UUID alone, and
    return the configuration. ``disks`` may be empty (or None: no ``--disk`` flag)."""
    host, port = parse_listen(listen)
    disk_specs = parse_disks(disks or ())
    resolver = parse_disk_resolver(disk_resolver)
    group_map = parse_groups(groups, disk_specs)
    capacity_bytes = parse_size(capacity) if capacity is not None else 1 << 40
    window = parse_duration(retention)
    if first_cycle not in ("direct", "journal"):
        raise ConfigError(f"--first-cycle {first_cycle}: 'direct' or 'journal'")
    for flag, value in (("--cert", cert), ("--key", key), ("--client-ca", client_ca)):
        if not Path(value).is_file():
            raise ConfigError(f"{flag} {value}: no such file")
    directory = Path(retention_dir).absolute()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--retention-dir {retention_dir}: not a directory")
    # A released group's disks may be attached to a recovered VM by now: not finding them
    # is no error (the service does not open them).
    released = groups_file.released_names(directory) if directory.is_dir() else frozenset()
    missing_ok = {d for name in released for d in group_map.get(name, ())}
    disk_paths = resolve_disks(disk_specs, resolver, missing_ok)
    return MasterTargetConfig(
        host=host,
        port=port,
        cert=Path(cert),
        key=Path(key),
        client_ca=Path(client_ca),
        retention_dir=directory,
        disks=disk_paths,
        groups=group_map,
        capacity_bytes=capacity_bytes,
        retention=window,
        first_cycle=first_cycle,
        resolver=resolver,
    )
