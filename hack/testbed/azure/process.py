"""Run the emulator as its own process, and describe a running one.

``launch_azure_emulator`` starts it detached (for ``python -m testbed up``; the handle
goes into the state file through ``to_dict``/``from_dict``); ``start_azure_emulator`` is
the context manager for tests, which stops it on exit (SIGTERM, then SIGKILL).
Neither imports aiohttp or the Azure SDK.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.azure.control_client import EmulatorControl
from testbed.azure.principal import ARM_SCOPE, CLIENT_ID, SUBSCRIPTION_ID, TENANT_ID
from testbed.pki import Pki
from testbed.procs import free_port, log_tail, spawn, stop

HACK = Path(__file__).resolve().parents[2]
_PATH_FIELDS = ("client_secret_file", "ca_file", "log_file")


_detached: list[subprocess.Popen[bytes]] = []
"""Emulators this process started, kept so they can be reaped when stopped."""


class AzureEmulatorError(RuntimeError):
    """The emulator could not be started or reached."""


@dataclass(frozen=True)
class AzureEmulator:
    """A running emulator: where it listens, who may sign in, which CA signed it."""

    endpoint: str
    tenant_id: str
    client_id: str
    client_secret_file: Path
    subscription_id: str
    ca_file: Path
    pid: int
    log_file: Path
    time_scale: float = 1.0

    @property
    def arm_url(self) -> str:
        """``base_url`` of the management clients."""
        return self.endpoint

    @property
    def authority(self) -> str:
        """``authority`` of azure-identity credentials (with ``disable_instance_discovery``)."""
        return self.endpoint

    @property
    def arm_scope(self) -> str:
        return ARM_SCOPE

    @property
    def client_secret(self) -> str:
        return self.client_secret_file.read_text().strip()

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.endpoint, self.ca_file)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def credential_kwargs(self) -> dict[str, Any]:
        """Everything ``ClientSecretCredential`` needs besides the three identities."""
        return {
            "authority": self.authority,
            "disable_instance_discovery": True,
            "connection_verify": str(self.ca_file),
        }

    def arm_client_kwargs(self) -> dict[str, Any]:
        """Everything ``ComputeManagementClient`` needs besides credential and subscription."""
        return {
            "base_url": self.arm_url,
            "credential_scopes": [ARM_SCOPE],
            "connection_verify": str(self.ca_file),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; names the secret's file, never the secret."""
        data = dataclasses.asdict(self)
        for name in _PATH_FIELDS:
            data[name] = str(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AzureEmulator:
        values = dict(data)
        for name in _PATH_FIELDS:
            values[name] = Path(values[name])
        return cls(**values)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> AzureEmulator:
        return cls.from_dict(json.loads(path.read_text()))


def stop_emulator(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the emulator's process group, then SIGKILL what is left; reap it."""
    stop(pid, grace=grace)
    for proc in [p for p in _detached if p.pid == pid]:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        _detached.remove(proc)


def launch_azure_emulator(
    workdir: Path, pki: Pki, *, time_scale: float = 1.0, timeout: float = 30.0
) -> AzureEmulator:
    """Start the emulator detached (own session) and wait until it answers over TLS."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cert = pki.serving("azure-emulator", ("127.0.0.1", "localhost"))
    secret_file = workdir / "client-secret"
    secret_file.write_text(secrets.token_urlsafe(24))
    secret_file.chmod(0o600)
    log = workdir / "azure-emulator.log"
    argv = [
        sys.executable,
        "-m",
        "testbed.azure",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--cert={cert.cert}",
        f"--key={cert.key}",
        f"--time-scale={time_scale}",
        f"--client-secret-file={secret_file}",
    ]
    python_path = os.pathsep.join(p for p in (str(HACK), os.environ.get("PYTHONPATH")) if p)
    proc = spawn(argv, log, env={**os.environ, "PYTHONPATH": python_path})
    _detached.append(proc)
    emulator = AzureEmulator(
        endpoint=f"https://127.0.0.1:{port}",
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        client_secret_file=secret_file,
        subscription_id=SUBSCRIPTION_ID,
        ca_file=pki.ca_file,
        pid=proc.pid,
        log_file=log,
        time_scale=time_scale,
    )
    control = EmulatorControl(emulator.endpoint, pki.ca_file, timeout=2.0)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AzureEmulatorError(
                f"the Azure emulator exited with status {proc.returncode} while starting; "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        try:
            control.health()
            return emulator
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_emulator(proc.pid)
            raise AzureEmulatorError(
                f"the Azure emulator did not answer on {emulator.endpoint} within {timeout:g} s; "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def start_azure_emulator(
    workdir: Path, pki: Pki, *, time_scale: float = 1.0
) -> Iterator[AzureEmulator]:
    """The emulator for the duration of the ``with`` block."""
    emulator = launch_azure_emulator(workdir, pki, time_scale=time_scale)
    try:
        yield emulator
    finally:
        stop_emulator(emulator.pid)
