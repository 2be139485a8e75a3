"""What every vSphere-backed service shares: reading a vCenter Secret, and turning a
vCenter that cannot be read into conditions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from failback.api import crossobject
from failback.api.conditions import FALSE, UNKNOWN, Condition, Reason
from failback.domain.vsphere import (
    SECRET_KEYS,
    SecretProblem,
    VCenterCredentials,
    parse_vcenter_secret,
)
from failback.errors import FailbackError, Retryable
from failback.ports.kubernetes import SecretReader

VCENTER_KEYS_TEXT = ", ".join(SECRET_KEYS) + ", and caBundle or thumbprint"


class Unresolved(Exception):
    """A Secret the spec names is missing or lacks a key; ``condition`` reports it."""

    def __init__(self, condition: Condition) -> None:
        super().__init__(condition.message)
        self.condition = condition


def secret_not_found(
    name: str, field: str, namespace: str, generation: int, now: dt.datetime
) -> Unresolved:
    return Unresolved(
        crossobject.SECRET_NOT_FOUND.condition(
            generation, now, name=name, field=field, namespace=namespace
        )
    )


async def vcenter_credentials(
    secrets: SecretReader, namespace: str, name: str, field: str, generation: int, now: dt.datetime
) -> VCenterCredentials:
    """The vCenter Secret ``name``, checked; :class:`Unresolved` names what is missing."""
    data = await secrets.read(namespace, name)
    if data is None:
        raise secret_not_found(name, field, namespace, generation, now)
    try:
        return parse_vcenter_secret(data)
    except SecretProblem as exc:
        if str(exc).startswith("has no key"):
            key = "caBundle or thumbprint" if exc.key == "caBundle" else exc.key
            condition = crossobject.SECRET_KEY_MISSING.condition(
                generation, now, name=name, field=field, key=key, keys=VCENTER_KEYS_TEXT
            )
        else:
            condition = Condition(
                crossobject.SECRET_KEY_MISSING.condition_type,
                FALSE,
                Reason.SECRET_KEY_MISSING,
                f"Secret {name} ({field}) {exc}: correct it (this Secret needs "
                f"{VCENTER_KEYS_TEXT})",
                generation,
                now,
            )
        raise Unresolved(condition) from None


def not_checked(
    unresolved: Unresolved, types: Sequence[str], generation: int, now: dt.datetime
) -> list[Condition]:
    """Every check in ``types`` Unknown because the Secret it needs is not usable (rather
    than keeping what an older pass found with a Secret that is gone)."""
    ref = unresolved.condition
    message = f"Not checked: {ref.message}."
    return [Condition(t, UNKNOWN, ref.reason, message, generation, now) for t in types]


def error_conditions(
    exc: FailbackError, types: Sequence[str], generation: int, now: dt.datetime
) -> list[Condition]:
    """Every check in ``types`` reporting why vCenter could not be read: Unknown while it
    may answer later (unreachable), False when a person must act (TLS, login, privilege)."""
    reason = str(getattr(exc, "reason", Reason.VCENTER_UNREACHABLE))
    unknown = isinstance(exc, Retryable) or reason == Reason.VCENTER_UNREACHABLE
    status = UNKNOWN if unknown else FALSE
    message = f"{exc}; the operator retries on its next pass."
    return [Condition(t, status, reason, message, generation, now) for t in types]
