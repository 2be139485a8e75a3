"""Where a snapshot's disk lives on the datastores this process can read.

A snapshot names each disk's image by its datastore path (``[LocalDS_0] vm/disk.vmdk``).
:class:`DatastoreFiles` is given each datastore's local directory (an NFS datastore
mounted on the process server; on the test bed the folders vcsim keeps its datastores
in) and finds the file that holds the disk's bytes with the master target's resolver
(:mod:`failback.dataplane.mt.resolver`): the flat extent a VMDK descriptor names, or, for
vcsim's descriptor-less disks, the ``-flat.vmdk`` beside the ``.vmdk``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from failback.dataplane.mt.resolver import (
    ResolveError,
    flat_extent,
    read_descriptor,
    vcsim_flat_file,
)
from failback.errors import Permanent

_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<rel>\S.*)$")


SPARSE_MAGIC = (b"KDMV", b"COWD")
"""The first bytes of a hosted sparse (or ESX COW) extent: no raw image to read."""


class DiskFileNotFound(Permanent):
    """A snapshot's disk is on a datastore this process has no directory for, or its file
    is not where the datastore path says."""


class DatastoreFiles:
    """Datastore name → local directory; resolves a disk's datastore path to its bytes."""

    def __init__(self, directories: Mapping[str, Path | str]) -> None:
        self.directories = {name: Path(d) for name, d in directories.items()}

    def path(self, file_name: str) -> Path:
        """The local path of ``[datastore] relative/path`` (which may not exist)."""
        match = _DS_PATH.match(file_name)
        if match is None:
            raise DiskFileNotFound(f"{file_name!r} is not a datastore path ([datastore] path)")
        directory = self.directories.get(match["ds"])
        if directory is None:
            known = ", ".join(sorted(self.directories)) or "none"
            raise DiskFileNotFound(
                f"disk {file_name}: no local directory for datastore {match['ds']} "
                f"(configured: {known})"
            )
        path = (directory / match["rel"]).resolve()
        if not path.is_relative_to(directory.resolve()):
            raise DiskFileNotFound(f"disk {file_name} points outside datastore {match['ds']}")
        return path

    def flat_file(self, file_name: str) -> Path:
        """The file holding the bytes of the disk ``file_name`` (a ``.vmdk``)."""
        vmdk = self.path(file_name)
        if not vmdk.is_file():
            raise DiskFileNotFound(f"disk {file_name}: {vmdk} does not exist")
        descriptor = read_descriptor(vmdk)
        if descriptor is None:
            flat = vcsim_flat_file(vmdk)
            with flat.open("rb") as f:
                magic = f.read(4)
            if magic in SPARSE_MAGIC:
                raise DiskFileNotFound(
                    f"disk {file_name}: {flat} is a sparse extent; only flat disks can be read"
                )
            return flat
        try:
            return flat_extent(vmdk, descriptor)
        except ResolveError as err:
            raise DiskFileNotFound(f"disk {file_name}: {err}") from err
