"""The process server's configuration: one frozen dataclass, validated before anything opens.

``failback process-server`` builds it from its command line; every problem is a
:class:`ConfigError` naming the flag to change. Azure's own settings (endpoint, identity)
are the CLI's: it builds the compute clients and hands the service a factory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from failback.dataplane.mt.config import ConfigError, parse_duration, parse_listen, parse_size

_RATE_RE = re.compile(r"^(\d+)/(.+)$")


@dataclass(frozen=True)
class ProcessServerConfig:
    host: str
    port: int
    cert: Path
    """PEM certificate (with its chain): the PS's server certificate for the operator, and
    its client certificate towards master targets (serverAuth and clientAuth)."""
    key: Path
    client_ca: Path
    """Only clients (the operator) with a certificate this CA signed are answered."""
    mt_ca: Path
    """The CA that signed the master targets' certificates."""
    state_dir: Path
    """Sessions' state (and the cache volume whose free space health reports)."""
    max_queue_bytes: int = 64 << 20
    """Encoded batches waiting for the MT, per session: the bound of backpressure."""
    batch_bytes: int = 16 << 20
    compression_level: int = 1
    """zstd level of batch bodies on the wire; 0 sends them uncompressed."""
    snapshots_per_window: int = 7
    snapshot_window: float = 300.0
    control_plane: str | None = None
    """``host:port`` of the Kubernetes API this PS must reach (R-PRE-12)."""
    blob_ca_file: str | None = None
    """CA bundle for Azure's page-blob endpoints (the test bed's emulator); None: system."""
    datastores: tuple[tuple[str, Path], ...] = ()
    """OnPremToAzure: the datastores this PS reads, and where each is mounted."""
    change_tracking: str = "vcenter"
    """OnPremToAzure: changed areas from vCenter's CBT, or ``sidecar`` (the test bed)."""


def parse_rate(value: str) -> tuple[int, float]:
    """``7/5m``: at most 7 snapshots of one disk per 5 minutes."""
    match = _RATE_RE.match(value.strip())
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"--snapshot-rate {value}: use COUNT/DURATION, e.g. 7/5m")
    try:
        window = parse_duration(match.group(2)).total_seconds()
    except ConfigError as exc:
        raise ConfigError(f"--snapshot-rate {value}: use COUNT/DURATION, e.g. 7/5m") from exc
    if window <= 0:
        raise ConfigError(f"--snapshot-rate {value}: the duration must be more than 0")
    return int(match.group(1)), window


def parse_control_plane(value: str) -> str:
    """``https://host:port`` or ``host:port`` of the Kubernetes API."""
    parts = urlsplit(value if "//" in value else f"//{value}")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise ConfigError(f"--control-plane {value}: bad port") from exc
    if not parts.hostname:
        raise ConfigError(f"--control-plane {value}: use https://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def build_config(
    *,
    listen: str,
    cert: str,
    key: str,
    client_ca: str,
    mt_ca: str | None,
    state_dir: str,
    max_queue: str = "64Mi",
    batch_size: str = "16Mi",
    compression_level: int = 1,
    snapshot_rate: str = "7/5m",
    control_plane: str | None = None,
    blob_ca_file: str | None = None,
    datastores: tuple[str, ...] = (),
    change_tracking: str = "vcenter",
) -> ProcessServerConfig:
    host, port = parse_listen(listen)
    for flag, value in (
        ("--cert", cert),
        ("--key", key),
        ("--client-ca", client_ca),
        ("--mt-ca", mt_ca or client_ca),
        ("--azure-ca-file", blob_ca_file),
    ):
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{flag} {value}: no such file")
    directory = Path(state_dir).absolute()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--state-dir {state_dir}: not a directory")
    queue_bytes = parse_size(max_queue, "--max-queue")
    batch_bytes = parse_size(batch_size, "--batch-size")
    if batch_bytes % 512 or batch_bytes > 256 << 20:
        raise ConfigError(f"--batch-size {batch_size}: a multiple of 512 bytes, at most 256Mi")
    if queue_bytes < batch_bytes:
        raise ConfigError(
            f"--max-queue {max_queue}: must hold at least one batch (--batch-size {batch_size})"
        )
    if not 0 <= compression_level <= 19:
        raise ConfigError(f"--compression-level {compression_level}: 0 (off) to 19")
    count, window = parse_rate(snapshot_rate)
    mounts: dict[str, Path] = {}
    for spec in datastores:
        name, sep, mount = spec.partition("=")
        if not sep or not name or not mount:
            raise ConfigError(f"--datastore {spec}: use --datastore NAME=DIR")
        if not Path(mount).is_dir():
            raise ConfigError(f"--datastore {spec}: {mount} is not a directory")
        if name in mounts:
            raise ConfigError(f"--datastore {spec}: datastore {name!r} is given twice")
        mounts[name] = Path(mount).absolute()
    if change_tracking not in ("vcenter", "sidecar"):
        raise ConfigError(f"--change-tracking {change_tracking}: 'vcenter' or 'sidecar'")
    return ProcessServerConfig(
        host=host,
        port=port,
        cert=Path(cert),
        key=Path(key),
        client_ca=Path(client_ca),
        mt_ca=Path(mt_ca or client_ca),
        state_dir=directory,
        max_queue_bytes=queue_bytes,
        batch_bytes=batch_bytes,
        compression_level=compression_level,
        snapshots_per_window=count,
        snapshot_window=window,
        control_plane=parse_control_plane(control_plane) if control_plane else None,
        blob_ca_file=blob_ca_file,
        datastores=tuple(mounts.items()),
        change_tracking=change_tracking,
    )
