"""The vCenter of the test bed is vcsim over verified TLS, read through the PropertyCollector."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from testbed.vcsim import VCenter


@pytest.fixture
def service_instance(vcenter: VCenter) -> Iterator[Any]:
    si = SmartConnect(
        host=vcenter.host,
        port=vcenter.port,
        user=vcenter.username,
        pwd=vcenter.password,
        sslContext=vcenter.ssl_context(),
    )
    try:
        yield si
    finally:
        Disconnect(si)


def collect(si: Any, kind: type, paths: list[str]) -> dict[str, dict[str, Any]]:
    """Read ``paths`` of every object of ``kind`` in one PropertyCollector round trip."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[
                vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        vmodl.query.PropertyCollector.TraversalSpec(
                            name="view", path="view", skip=False, type=vim.view.ContainerView
                        )
                    ],
                )
            ],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths)],
        )
        result = content.propertyCollector.RetrievePropertiesEx(
            [spec], vmodl.query.PropertyCollector.RetrieveOptions()
        )
        objects: dict[str, dict[str, Any]] = {}
        while result is not None:
            for obj in result.objects:
                objects[obj.obj._moId] = {p.name: p.val for p in obj.propSet}
            if not result.token:
                break
            result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
        return objects
    finally:
        view.Destroy()


def test_inventory_through_the_property_collector(service_instance: Any) -> None:
    vms = collect(
        service_instance,
        vim.VirtualMachine,
        ["name", "config.instanceUuid", "runtime.powerState", "config.hardware.device"],
    )
    hosts = collect(service_instance, vim.HostSystem, ["name", "summary.config.product.fullName"])
    datastores = collect(
        service_instance, vim.Datastore, ["name", "summary.type", "summary.freeSpace"]
    )

    # 3 clustered hosts + 1 standalone host; 2 VMs on the standalone host and 2 in the
    # cluster's resource pool; 2 datastores (see testbed.vcsim).
    assert len(hosts) == 4
    assert len(vms) == 4
    assert len(datastores) == 2
    uuids = {vm["config.instanceUuid"] for vm in vms.values()}
    assert len(uuids) == len(vms), "instance UUIDs identify VMs, so they must be unique"
    assert {vm["runtime.powerState"] for vm in vms.values()} == {"poweredOn"}
    assert all(
        any(isinstance(d, vim.vm.device.VirtualDisk) for d in vm["config.hardware.device"])
        for vm in vms.values()
    )
    assert {ds["summary.type"] for ds in datastores.values()} <= {"VMFS", "OTHER", "NFS", "vsan"}
    assert all(ds["summary.freeSpace"] > 0 for ds in datastores.values())
    assert all("ESX" in h["summary.config.product.fullName"] for h in hosts.values())


def test_certificate_is_verified(vcenter: VCenter) -> None:
    """A client that does not trust the test bed's CA is refused: TLS is real."""
    untrusting = ssl.create_default_context()  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        SmartConnect(
            host=vcenter.host,
            port=vcenter.port,
            user=vcenter.username,
            pwd=vcenter.password,
            sslContext=untrusting,
        )


def test_wrong_password_is_refused(vcenter: VCenter) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(
            host=vcenter.host,
            port=vcenter.port,
            user=vcenter.username,
            pwd="not-the-password",
            sslContext=vcenter.ssl_context(),
        )
