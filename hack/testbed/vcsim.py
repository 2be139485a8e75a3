"""vCenter: govmomi's vcsim over TLS, with a certificate our CA signed.

The inventory is one datacenter ``DC0`` with a three-host DRS cluster ``DC0_C0``, a
standalone host ``DC0_H0``, two local datastores (``LocalDS_0``, ``LocalDS_1``) whose
files live under the test bed's folder, two VMs on the standalone host and two in the
cluster's resource pool. Clients verify the certificate
against the test bed's CA: there is no insecure mode anywhere.
"""

from __future__ import annotations

import os
import secrets
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.build import Binaries
from testbed.pki import Pki
from testbed.procs import free_port, spawn, stop, wait_until

# vcsim 0.46 rejects logins whose configured user name contains "@", so no UPN here.
USERNAME = "failback-testbed"


@dataclass(frozen=True)
class VCenter:
    """A running vcsim: where it listens, who may log in, which CA signed it."""

    host: str
    port: int
    username: str
    password: str
    password_file: Path
    ca_file: Path
    pid: int
    datastore_dir: Path

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/sdk"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def launch_vcenter(workdir: Path, pki: Pki, bins: Binaries) -> VCenter:
    """Start vcsim detached and wait until it answers over verified TLS."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cert = pki.serving("vcsim", ("127.0.0.1", "localhost"))
    password = secrets.token_urlsafe(18)
    # vcsim reads a flag value that names a file from the file: keep the password
    # out of the process list.
    password_file = workdir / "vcsim.password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    datastores = workdir / "datastores"
    datastores.mkdir(exist_ok=True)
    log = workdir / "vcsim.log"
    proc = spawn(
        [
            str(bins.vcsim),
            f"-l=127.0.0.1:{port}",
            f"-tlscert={cert.cert}",
            f"-tlskey={cert.key}",
            f"-username={USERNAME}",
            f"-password={password_file}",
            "-dc=1",
            "-cluster=1",
            "-host=3",
            "-standalone-host=1",
            "-ds=2",
            "-vm=2",
        ],
        log,
        # vcsim keeps each datastore as a folder under TMPDIR: keep them with the test bed.
        env={**os.environ, "TMPDIR": str(datastores)},
    )
    vc = VCenter(
        host="127.0.0.1",
        port=port,
        username=USERNAME,
        password=password,
        password_file=password_file,
        ca_file=pki.ca_file,
        pid=proc.pid,
        datastore_dir=datastores,
    )

    def ready() -> bool:
        url = f"https://127.0.0.1:{port}/about"
        with urllib.request.urlopen(url, context=vc.ssl_context(), timeout=5) as resp:
            return bool(resp.status == 200)

    try:
        wait_until(ready, what="vcsim", log=log, proc=proc, timeout=60)
    except BaseException:
        stop(proc.pid)
        raise
    return vc


@contextmanager
def start_vcenter(workdir: Path, pki: Pki, bins: Binaries) -> Iterator[VCenter]:
    vc = launch_vcenter(workdir, pki, bins)
    try:
        yield vc
    finally:
        stop(vc.pid)


@contextmanager
def plain_session(vcenter: VCenter) -> Iterator[Any]:
    """A plain pyVmomi session to the test bed's vcsim, for building situations and
    reading what happened (never the operator's own), logged out at the end."""
    from pyVim.connect import Disconnect, SmartConnect

    conn = SmartConnect(  # type: ignore[no-untyped-call]
        host=vcenter.host,
        port=vcenter.port,
        user=vcenter.username,
        pwd=vcenter.password,
        sslContext=ssl.create_default_context(cafile=str(vcenter.ca_file)),
    )
    try:
        yield conn
    finally:
        Disconnect(conn)  # type: ignore[no-untyped-call]
