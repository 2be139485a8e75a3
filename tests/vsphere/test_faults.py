"""Every vSphere fault and transport error maps to one port error, in faults.py only."""

from __future__ import annotations

import http.client
import ssl

import pytest
from pyVmomi import vim, vmodl

from failback.adapters.vsphere import faults
from failback.errors import Permanent, Retryable
from failback.ports.vsphere import (
    NotFound,
    PermissionDenied,
    TLSVerificationFailed,
    VCenterLoginFailed,
    VCenterUnreachable,
    VSphereFault,
)

CASES = [
    (vim.fault.NotAuthenticated(), faults.SessionLost, "ended the session"),
    (vim.fault.InvalidLogin(), VCenterLoginFailed, "refused the username and password"),
    (ssl.SSLCertVerificationError("self-signed"), TLSVerificationFailed, "did not verify"),
    (
        vim.fault.NoPermission(
            privilegeId="VirtualMachine.Interact.PowerOn", object=vim.VirtualMachine("vm-9")
        ),
        PermissionDenied,
        "VirtualMachine.Interact.PowerOn",
    ),
    (vmodl.fault.ManagedObjectNotFound(obj=vim.Task("task-7")), NotFound, "task-7"),
    (vim.fault.Timedout(msg="slow"), VCenterUnreachable, "slow"),
    (vim.fault.TaskInProgress(msg="busy"), VCenterUnreachable, "busy"),
    (vmodl.fault.HostCommunication(msg="host gone"), VCenterUnreachable, "host gone"),
    (ConnectionRefusedError(111, "refused"), VCenterUnreachable, "did not answer"),
    (TimeoutError("timed out"), VCenterUnreachable, "did not answer"),
    (http.client.RemoteDisconnected("closed"), VCenterUnreachable, "did not answer"),
    (vim.fault.FileNotFound(msg="no vmdk", file="[ds] x.vmdk"), VSphereFault, "no vmdk"),
    (vmodl.fault.InvalidArgument(invalidProperty="spec"), VSphereFault, "InvalidArgument"),
]


@pytest.mark.parametrize(("exc", "kind", "words"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_translate(exc: BaseException, kind: type, words: str) -> None:
    error = faults.translate(exc, "vc.example")
    assert isinstance(error, kind)
    assert words in str(error)
    retry = kind in (faults.SessionLost, VCenterUnreachable)
    assert isinstance(error, Retryable if retry else Permanent)


def test_already_in_the_wanted_power_state_is_success() -> None:
    on = vim.fault.InvalidPowerState(existingState="poweredOn", requestedState="poweredOn")
    assert faults.already_in_state(on, "poweredOn")
    assert not faults.already_in_state(on, "poweredOff")
    assert not faults.already_in_state(vim.fault.Timedout(), "poweredOn")
