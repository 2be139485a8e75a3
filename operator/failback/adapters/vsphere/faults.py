"""Every vSphere fault and transport error becomes one of the port's errors, here only.

=====================================  =======================================
raised by pyVmomi / the transport      becomes
=====================================  =======================================
``vim.fault.NotAuthenticated``         :class:`SessionLost` (drop the session, log in
                                       again, retry once; then ``VCenterUnreachable``)
``vim.fault.InvalidLogin``             ``VCenterLoginFailed``
``ssl.SSLCertVerificationError``       ``TLSVerificationFailed``
``vim.fault.NoPermission``             ``PermissionDenied`` naming privilege and object
``vmodl.fault.ManagedObjectNotFound``  ``NotFound``
socket/HTTP errors, timeouts,          ``VCenterUnreachable`` (Retryable)
``HostCommunication``, ``Timedout``,
``TaskInProgress``, ``SystemError``
any other fault                        ``VSphereFault`` with vCenter's message
=====================================  =======================================

``QueryChangedDiskAreas`` has its own (:func:`changed_areas_fault`): ``MethodNotFound``,
``NotImplemented`` and ``NotSupported`` (vcsim; CBT off) become
``ChangedBlockTrackingUnavailable``; ``InvalidArgument`` and ``FileFault`` (a changeId
vCenter no longer knows) become ``ChangeIdRejected``.

``InvalidPowerState`` is not mapped: the power operations read the state first and treat
"already in the wanted state" as success (see :func:`already_in_state`).
"""

from __future__ import annotations

import http.client
import ssl
from typing import Any

from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from failback.errors import FailbackError, Retryable
from failback.ports.vsphere import (
    ChangedBlockTrackingUnavailable,
    ChangeIdRejected,
    NotFound,
    PermissionDenied,
    TLSVerificationFailed,
    VCenterLoginFailed,
    VCenterUnreachable,
    VSphereFault,
)

# pyVmomi's stubs leave its data-object constructors untyped: the adapter handles its
# objects as dynamic data and types what it returns (the domain's dataclasses).
vim: Any = _vim
vmodl: Any = _vmodl

RETRY_DELAY = 30.0
"""Seconds before a transient vCenter error is retried."""


class SessionLost(Retryable):
    """vCenter forgot the session (expired, restarted, logged out by an admin)."""


def message_of(fault: Any) -> str:
    """vCenter's own words for a fault."""
    text = getattr(fault, "msg", None) or ""
    for lm in getattr(fault, "faultMessage", None) or ():
        text = text or getattr(lm, "message", "") or ""
    return text or type(fault).__name__.split(".")[-1]


def translate(exc: BaseException, server: str) -> FailbackError:
    """The port error for ``exc`` raised while talking to ``server``."""
    if isinstance(exc, FailbackError):
        return exc
    if isinstance(exc, vim.fault.NotAuthenticated):
        return SessionLost(f"vCenter {server} ended the session", delay=1.0)
    if isinstance(exc, vim.fault.InvalidLogin):
        return VCenterLoginFailed(
            f"vCenter {server} refused the username and password of the vCenter Secret"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or exc
        return TLSVerificationFailed(
            f"The certificate of vCenter {server} did not verify against the caBundle or "
            f"thumbprint of the vCenter Secret ({why}); never disable "
            "verification: put the right CA or thumbprint in the Secret"
        )
    if isinstance(exc, vim.fault.NoPermission):
        obj = getattr(exc.object, "_moId", None) or str(exc.object)
        return PermissionDenied(
            f"The vCenter account lacks privilege {exc.privilegeId} on {obj}: grant it (R-PRE-1)"
        )
    if isinstance(exc, vmodl.fault.ManagedObjectNotFound):
        obj = getattr(exc.obj, "_moId", None) or str(exc.obj)
        return NotFound(f"vCenter {server} has no object {obj} (any more)")
    if isinstance(
        exc,
        vmodl.fault.HostCommunication
        | vim.fault.Timedout
        | vim.fault.TaskInProgress
        | vmodl.fault.SystemError,
    ):
        return VCenterUnreachable(f"vCenter {server}: {message_of(exc)}", delay=RETRY_DELAY)
    if isinstance(exc, vmodl.MethodFault):
        return VSphereFault(f"vCenter {server}: {message_of(exc)}")
    if isinstance(exc, ssl.SSLError | OSError | http.client.HTTPException | TimeoutError):
        return VCenterUnreachable(
            f"vCenter {server} did not answer ({type(exc).__name__}: {exc})", delay=RETRY_DELAY
        )
    return VSphereFault(f"vCenter {server}: {type(exc).__name__}: {exc}")


def already_in_state(exc: BaseException, wanted: str) -> bool:
    """Whether ``exc`` says the VM is already in the power state ``wanted``."""
    return (
        isinstance(exc, vim.fault.InvalidPowerState)
        and getattr(exc, "existingState", None) == wanted
    )


def changed_areas_fault(exc: BaseException, server: str, what: str) -> FailbackError | None:
    """The port error for a fault of ``QueryChangedDiskAreas`` about ``what`` (a disk and
    changeId), or None when it is no CBT fault (then :func:`translate` applies)."""
    if isinstance(exc, vmodl.fault.MethodNotFound | vmodl.fault.NotImplemented):
        return ChangedBlockTrackingUnavailable(
            f"vCenter {server} does not implement QueryChangedDiskAreas ({what}): "
            "use the sidecar changed-areas source on the test bed"
        )
    if isinstance(exc, vmodl.fault.NotSupported):
        return ChangedBlockTrackingUnavailable(
            f"vCenter {server}: changed block tracking is not available for {what} "
            f"({message_of(exc)}); is CBT enabled on the VM?"
        )
    if isinstance(exc, vmodl.fault.InvalidArgument | vim.fault.FileFault):
        return ChangeIdRejected(f"vCenter {server} rejected {what}: {message_of(exc)}")
    return None
