"""A small synchronous client of the emulator's control API (urllib, TLS verified)."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode


class EmulatorControlError(RuntimeError):
    """The control API refused a request; ``status`` and the emulator's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class EmulatorControl:
    def __init__(self, endpoint: str, ca_file: Path, timeout: float = 30.0) -> None:
        if not endpoint.startswith("https://"):
            raise ValueError(f"the emulator is reached over https only, not {endpoint}")
        self.endpoint = endpoint.rstrip("/")
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - always https (see __init__)
            f"{self.endpoint}/_emulator/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - https to the emulator only
                request, context=self._context, timeout=self._timeout
            ) as response:
                payload: bytes = response.read()
                return payload
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace")
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text
            raise EmulatorControlError(err.code, str(message)) from None

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return json.loads(self._call(method, path, body))

    # -- the emulator ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "health")
        return result

    def reset(self) -> None:
        """Forget every resource, token, fault and count; default limits and time scale."""
        self._json("POST", "reset")

    def clock(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "clock")
        return result

    def set_time_scale(self, scale: float) -> None:
        self._json("PATCH", "clock", {"time_scale": scale})

    def advance(self, seconds: float) -> None:
        """Jump emulated time forward by ``seconds``."""
        self._json("POST", "clock/advance", {"seconds": seconds})

    def limits(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "limits")
        return result

    def set_limits(self, **changes: Any) -> dict[str, Any]:
        """E.g. ``set_limits(arm_writes_per_hour=6, durations={"disks/create": 1})``."""
        result: dict[str, Any] = self._json("PATCH", "limits", changes)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "stats")
        return result

    def reset_stats(self) -> None:
        self._json("POST", "stats/reset")

    def events(self, since: int = 0, kind: str = "") -> list[dict[str, Any]]:
        query = urlencode({"since": since, "kind": kind})
        result: list[dict[str, Any]] = self._json("GET", f"events?{query}")["events"]
        return result

    def operations(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "operations")["operations"]
        return result

    # -- faults ----------------------------------------------------------------------

    def add_fault(self, action: str, **rule: Any) -> str:
        """Add a fault rule (see ``testbed.azure.faults``); returns its id."""
        result: dict[str, Any] = self._json("POST", "faults", {"action": action, **rule})
        return str(result["id"])

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "faults")["faults"]
        return result

    def remove_fault(self, fault_id: str) -> None:
        self._json("DELETE", f"faults/{quote(fault_id)}")

    def clear_faults(self) -> None:
        self._json("DELETE", "faults")

    def expire_tokens(self) -> int:
        """Expire every access token issued so far; returns how many."""
        return int(self._json("POST", "tokens/expire")["expired"])

    # -- the principal's credentials ------------------------------------------------

    def trust_certificate(self, pem: str) -> None:
        """Let the principal sign in with the key of this PEM certificate."""
        self._json("POST", "principal/credentials", {"kind": "certificate", "pem": pem})

    def trust_federated(self, public_key_pem: str, issuer: str, subject: str) -> None:
        """Let tokens of ``issuer`` for ``subject`` signed by this key sign the principal in
        (a federated identity credential: workload identity)."""
        body = {"kind": "federated", "pem": public_key_pem, "issuer": issuer, "subject": subject}
        self._json("POST", "principal/credentials", body)

    # -- seeding and the guest -------------------------------------------------------

    def create_resource_group(self, name: str, location: str = "westeurope") -> None:
        self._json("POST", "resource-groups", {"name": name, "location": location})

    def create_disk(
        self, resource_group: str, name: str, size_bytes: int, **extra: Any
    ) -> dict[str, Any]:
        """A disk that exists already (ARM JSON back); ``extra``: location, sku, os_type."""
        body = {"resource_group": resource_group, "name": name, "size_bytes": size_bytes, **extra}
        result: dict[str, Any] = self._json("POST", "disks", body)
        return result

    def create_vm(
        self,
        resource_group: str,
        name: str,
        *,
        power_state: str = "running",
        os_disk_size: int = 4 << 20,
        data_disk_sizes: tuple[int, ...] = (),
        location: str = "westeurope",
        os_type: str = "Linux",
    ) -> dict[str, Any]:
        """A VM that exists already in ``power_state``, with new disks
        ``<name>-os`` (of ``os_type``) and ``<name>-data<i>`` (ARM JSON back)."""
        body = {
            "resource_group": resource_group,
            "name": name,
            "power_state": power_state,
            "location": location,
            "os_disk": {"name": f"{name}-os", "size_bytes": os_disk_size, "os_type": os_type},
            "data_disks": [
                {"name": f"{name}-data{i}", "size_bytes": size}
                for i, size in enumerate(data_disk_sizes)
            ],
        }
        result: dict[str, Any] = self._json("POST", "vms", body)
        return result

    def vm(self, resource_group: str, vm: str) -> dict[str, Any]:
        """The VM as ARM shows it (its storage profile names its disks)."""
        result: dict[str, Any] = self._json("GET", f"vms/{quote(resource_group)}/{quote(vm)}")
        return result

    def set_power_state(self, resource_group: str, vm: str, state: str) -> None:
        """Change a VM's power state out of band (as the portal would), recorded as an event."""
        self._json("POST", f"vms/{quote(resource_group)}/{quote(vm)}/power", {"state": state})

    def guest_writes(
        self,
        resource_group: str,
        disk: str,
        writes: list[dict[str, Any]],
        *,
        require_running: bool = True,
    ) -> None:
        """Raw write specs: ``{"offset", "data": base64}``, ``{"offset", "length", "fill"}``
        or ``{"offset", "length", "clear": true}``."""
        self._json(
            "POST",
            f"disks/{quote(resource_group)}/{quote(disk)}/writes",
            {"writes": writes, "require_running": require_running},
        )

    def guest_write(
        self,
        resource_group: str,
        disk: str,
        offset: int,
        data: bytes,
        *,
        require_running: bool = True,
    ) -> None:
        """The running VM's guest writes ``data`` at ``offset`` of ``disk``."""
        spec = {"offset": offset, "data": base64.b64encode(data).decode()}
        self.guest_writes(resource_group, disk, [spec], require_running=require_running)

    def guest_clear(
        self,
        resource_group: str,
        disk: str,
        offset: int,
        length: int,
        *,
        require_running: bool = True,
    ) -> None:
        """The guest discards (TRIM) ``length`` bytes at ``offset``."""
        spec = {"offset": offset, "length": length, "clear": True}
        self.guest_writes(resource_group, disk, [spec], require_running=require_running)

    def read_disk(self, resource_group: str, disk: str, offset: int, length: int) -> bytes:
        query = urlencode({"offset": offset, "length": length})
        return self._call("GET", f"disks/{quote(resource_group)}/{quote(disk)}/content?{query}")

    def read_snapshot(self, resource_group: str, snapshot: str, offset: int, length: int) -> bytes:
        query = urlencode({"offset": offset, "length": length})
        path = f"snapshots/{quote(resource_group)}/{quote(snapshot)}/content?{query}"
        return self._call("GET", path)
