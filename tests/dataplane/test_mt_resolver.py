"""The master target's disk resolver: a disk UUID to the device or file that holds the disk.

Units against folders in ``tmp_path`` (udev's ``by-id`` links, VMDK descriptors, vcsim's
empty disk files), the ``--disk``/``--disk-resolver`` flags through ``failback
master-target``, and one check against the test bed's real vcsim: a disk it creates is
found by the ``backing.uuid`` it reports.
"""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failback import cli
from failback.dataplane.mt.config import (
    ConfigError,
    build_config,
    resolve_disks,
)
from failback.dataplane.mt.resolver import (
    ByIdResolver,
    ResolveError,
    datastore_name,
    disk_uuid_hex,
    read_descriptor,
    resolve_by_id,
    resolve_in_datastore,
    vcsim_disk_uuid,
)
from testbed.vcsim import VCenter

UUID = "6000C29a-1b2c-3d4e-5f60-718293a4b5c6"
HEX = "6000c29a1b2c3d4e5f60718293a4b5c6"
DDB = "60 00 C2 9a 1b 2c 3d 4e-5f 60 71 82 93 a4 b5 c6"
OTHER = "6000C29b-0000-1111-2222-333344445555"

# Seen on vcsim 0.46.3 (the test bed's): a disk created as "[LocalDS_0] fb-exp/disk-0.vmdk"
# in datacenter-1 reported this backing.uuid.
VCSIM_SEEN = (
    "datacenter-1",
    "[LocalDS_0] fb-exp/disk-0.vmdk",
    "d7cc5769-34a6-5905-90a8-fd7814ede0eb",
)


def descriptor(ddb: str | None, *extents: str) -> str:
    lines = ["# Disk DescriptorFile", "version=1", "CID=fffffffe", 'createType="vmfs"', ""]
    lines += ["# Extent description", *extents, "", "# The Disk Data Base", "#DDB", ""]
    lines += ['ddb.adapterType = "lsilogic"', 'ddb.virtualHWVersion = "19"']
    if ddb is not None:
        lines.append(f'ddb.uuid = "{ddb}"')
    return "\n".join(lines) + "\n"


def vmdk(folder: Path, name: str, ddb: str | None, extent: str | None = None) -> Path:
    """A descriptor ``name`` and its flat file ``<name>-flat.vmdk`` (4 KiB) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    flat = folder / name.replace(".vmdk", "-flat.vmdk")
    flat.write_bytes(b"\0" * 4096)
    line = extent if extent is not None else f'RW 8 VMFS "{flat.name}"'
    (folder / name).write_text(descriptor(ddb, line))
    return flat


# ---------------------------------------------------------------------- UUIDs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (UUID, HEX),
        (UUID.lower(), HEX),
        (HEX.upper(), HEX),
        ("6000C29a1b2c3d4e-5f60718293a4b5c6", HEX),
        ("d3", None),
        ("6000C29a-1b2c-3d4e-5f60-718293a4b5c", None),
        ("6000C29a-1b2c-3d4e-5f60-718293a4b5cg", None),
        ("6000C29a1b2c-3d4e-5f60-718293a4b5c6", None),
    ],
)
def test_disk_uuid_hex(text: str, expected: str | None) -> None:
    assert disk_uuid_hex(text) == expected


# ---------------------------------------------------------------------- by-id


def link(root: Path, name: str, target: Path) -> None:
    root.mkdir(exist_ok=True)
    target.touch()
    (root / name).symlink_to(target)


def test_by_id_prefers_the_wwn_link(tmp_path: Path) -> None:
    root = tmp_path / "by-id"
    link(root, f"wwn-0x{HEX}", tmp_path / "sdb")
    link(root, f"scsi-3{HEX}", tmp_path / "sdb")
    link(root, f"wwn-0x{HEX}-part1", tmp_path / "sdb1")
    assert resolve_by_id(UUID, root) == root / f"wwn-0x{HEX}"


def test_by_id_falls_back_to_the_scsi_link(tmp_path: Path) -> None:
    root = tmp_path / "by-id"
    link(root, f"scsi-3{HEX}", tmp_path / "sdc")
    assert resolve_by_id(UUID.lower(), root) == root / f"scsi-3{HEX}"


def test_by_id_finds_nothing(tmp_path: Path) -> None:
    root = tmp_path / "by-id"
    link(root, f"scsi-3{OTHER.replace('-', '').lower()}", tmp_path / "sdb")
    with pytest.raises(ResolveError) as caught:
        resolve_by_id(UUID, root)
    message = str(caught.value)
    assert f"disk UUID {UUID}: neither {root}/wwn-0x{HEX} nor {root}/scsi-3{HEX}" in message
    assert "disk.EnableUUID" in message


def test_by_id_refuses_two_devices(tmp_path: Path) -> None:
    root = tmp_path / "by-id"
    link(root, f"wwn-0x{HEX}", tmp_path / "sdb")
    link(root, f"scsi-3{HEX}", tmp_path / "sdc")
    with pytest.raises(ResolveError, match=f"disk UUID {UUID}: two devices carry it: .*sdb.*sdc"):
        resolve_by_id(UUID, root)


def test_by_id_refuses_a_dangling_link(tmp_path: Path) -> None:
    root = tmp_path / "by-id"
    root.mkdir()
    (root / f"wwn-0x{HEX}").symlink_to(tmp_path / "gone")
    with pytest.raises(ResolveError, match="neither"):
        resolve_by_id(UUID, root)


def test_by_id_needs_a_uuid(tmp_path: Path) -> None:
    with pytest.raises(ResolveError, match="'disk1' is not a disk UUID"):
        resolve_by_id("disk1", tmp_path)


# ---------------------------------------------------------------------- descriptors


def test_descriptor_is_read(tmp_path: Path) -> None:
    path = tmp_path / "web-01.vmdk"
    path.write_text(descriptor(DDB, 'RW 2097152 VMFS "web-01-flat.vmdk"'))
    parsed = read_descriptor(path)
    assert parsed is not None
    assert parsed.uuid_hex == HEX
    assert parsed.extents == (("VMFS", "web-01-flat.vmdk", 0),)
    path.write_text(descriptor(None, 'RW 16 FLAT "a b-flat.vmdk" 0'))
    parsed = read_descriptor(path)
    assert parsed is not None
    assert (parsed.uuid_hex, parsed.extents) == (None, (("FLAT", "a b-flat.vmdk", 0),))


@pytest.mark.parametrize("content", [b"", b"1048576", b"\0" * 512, b"KDMV\x01\0\0\0" + b"x" * 100])
def test_what_is_no_descriptor(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.vmdk"
    path.write_bytes(content)
    assert read_descriptor(path) is None


def test_datastore_follows_the_descriptor_to_its_flat_file(tmp_path: Path) -> None:
    flat = vmdk(tmp_path / "ds" / "web-01", "web-01.vmdk", DDB)
    vmdk(
        tmp_path / "ds" / "web-01",
        "web-01_1.vmdk",
        "60 00 C2 9b 00 00 11 11-22 22 33 33 44 44 55 55",
    )
    assert resolve_in_datastore(UUID, tmp_path / "ds") == flat
    assert resolve_in_datastore(OTHER, tmp_path) == tmp_path / "ds/web-01/web-01_1-flat.vmdk"


def test_datastore_flat_extent_may_name_an_absolute_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.img"
    elsewhere.write_bytes(b"\0" * 512)
    vmdk(tmp_path / "ds", "d.vmdk", DDB, f'RW 1 FLAT "{elsewhere}" 0')
    assert resolve_in_datastore(UUID, tmp_path / "ds") == elsewhere


@pytest.mark.parametrize(
    ("extent", "words"),
    [
        ('RW 8 SPARSE "d-s001.vmdk"', "its extent is SPARSE, not a flat extent"),
        ('RW 8 VMFSSPARSE "d-delta.vmdk"', "its extent is VMFSSPARSE"),
        ('RW 8 FLAT "d-flat.vmdk" 2048', "starts at sector 2048"),
        ('RW 8 VMFS "missing-flat.vmdk"', "names extent .*missing-flat.vmdk, which does not exist"),
        ('RW 8 FLAT "d-f001.vmdk" 0\nRW 8 FLAT "d-f002.vmdk" 0', "has 2 extents"),
        ("", "has 0 extents"),
    ],
)
def test_datastore_refuses_a_disk_it_cannot_write(tmp_path: Path, extent: str, words: str) -> None:
    vmdk(tmp_path, "d.vmdk", DDB, extent)
    with pytest.raises(ResolveError, match=f"descriptor {tmp_path}/d.vmdk.*{words}"):
        resolve_in_datastore(UUID, tmp_path)


def test_datastore_refuses_two_disks_with_one_uuid(tmp_path: Path) -> None:
    vmdk(tmp_path / "vm-a", "a.vmdk", DDB)
    vmdk(tmp_path / "vm-b", "b.vmdk", DDB)
    with pytest.raises(ResolveError) as caught:
        resolve_in_datastore(UUID, tmp_path)
    message = str(caught.value)
    assert f"disk UUID {UUID}: 2 files under {tmp_path} carry it" in message
    assert "vm-a/a-flat.vmdk (ddb.uuid of" in message
    assert "vm-b/b-flat.vmdk (ddb.uuid of" in message


def test_datastore_two_descriptors_of_one_flat_file_are_one_disk(tmp_path: Path) -> None:
    flat = vmdk(tmp_path, "a.vmdk", DDB)
    (tmp_path / "a-copy.vmdk").write_text((tmp_path / "a.vmdk").read_text())
    assert resolve_in_datastore(UUID, tmp_path) == flat


def test_datastore_finds_nothing(tmp_path: Path) -> None:
    vmdk(tmp_path, "a.vmdk", "60 00 C2 9b 00 00 11 11-22 22 33 33 44 44 55 55")
    (tmp_path / "vcsim.vmdk").touch()
    with pytest.raises(ResolveError) as caught:
        resolve_in_datastore(UUID, tmp_path)
    message = str(caught.value)
    assert f"disk UUID {UUID}: no disk found: searched 1 VMDK descriptor(s) under {tmp_path}" in (
        message
    )
    assert "1 .vmdk file(s) without a descriptor not checked as vcsim disks" in message
    assert "add datacenter=MOID" in message
    with pytest.raises(ResolveError, match="checked as vcsim disks of Datacenter:datacenter-1"):
        resolve_in_datastore(UUID, tmp_path, datacenter="datacenter-1")


def test_datastore_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ResolveError, match=f"{tmp_path}/nope is not a directory"):
        resolve_in_datastore(UUID, tmp_path / "nope")


# ---------------------------------------------------------------------- vcsim's disks


def test_vcsim_uuid_is_derived_as_vcsim_does() -> None:
    datacenter, path, seen = VCSIM_SEEN
    assert vcsim_disk_uuid(datacenter, path) == seen


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("govcsim-DC0-LocalDS_0-3579808830", "LocalDS_0"),
        ("govcsim-my-dc-LocalDS_1-12", "LocalDS_1"),
        ("FB_VMFS_0", "FB_VMFS_0"),
    ],
)
def test_datastore_name_of_a_vcsim_folder(folder: str, name: str) -> None:
    assert datastore_name(Path("/x") / folder) == name


def vcsim_disk(datastore: Path, rel: str) -> Path:
    """What vcsim 0.46 leaves for a new disk: two empty files, ``x.vmdk`` and
    ``x-flat.vmdk``."""
    path = datastore / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    flat = path.with_name(path.name.replace(".vmdk", "-flat.vmdk"))
    flat.touch()
    return flat


def test_vcsim_disk_found_from_the_datastore_or_its_parent(tmp_path: Path) -> None:
    datacenter, _, seen = VCSIM_SEEN
    ds = tmp_path / "govcsim-DC0-LocalDS_0-3579808830"
    flat = vcsim_disk(ds, "fb-exp/disk-0.vmdk")
    vcsim_disk(ds, "fb-exp/fb-exp.vmdk")
    vcsim_disk(tmp_path / "govcsim-DC0-LocalDS_1-1", "fb-exp/disk-0.vmdk")  # another datastore
    assert resolve_in_datastore(seen, ds, datacenter=datacenter) == flat
    assert resolve_in_datastore(seen.upper(), tmp_path, datacenter=datacenter) == flat
    with pytest.raises(ResolveError, match="no disk found"):
        resolve_in_datastore(seen, ds, datacenter="datacenter-2")


def test_vcsim_disk_in_a_folder_named_otherwise(tmp_path: Path) -> None:
    datacenter, _, seen = VCSIM_SEEN
    flat = vcsim_disk(tmp_path / "copy", "fb-exp/disk-0.vmdk")
    with pytest.raises(ResolveError, match="on datastores copy, fb-exp"):
        resolve_in_datastore(seen, tmp_path / "copy", datacenter=datacenter)
    got = resolve_in_datastore(
        seen, tmp_path / "copy", datacenter=datacenter, datastore="LocalDS_0"
    )
    assert got == flat


def test_vcsim_disk_without_a_flat_file_is_its_own_image(tmp_path: Path) -> None:
    datacenter, _, seen = VCSIM_SEEN
    path = tmp_path / "fb-exp" / "disk-0.vmdk"
    path.parent.mkdir()
    path.write_text("1048576")  # vcsim's CreateVirtualDisk with a spec writes the size in KiB
    got = resolve_in_datastore(seen, tmp_path, datacenter=datacenter, datastore="LocalDS_0")
    assert got == path


# ---------------------------------------------------------------------- the flags


def test_resolve_disks_names_the_flag_the_resolver_and_what_it_searched(tmp_path: Path) -> None:
    root = tmp_path / "by-id"
    link(root, f"wwn-0x{HEX}", tmp_path / "sdb")
    given = tmp_path / "d1.flat"
    given.touch()
    resolver = ByIdResolver(root)
    assert resolve_disks({UUID: None, "d1": given}, resolver) == {
        UUID: root / f"wwn-0x{HEX}",
        "d1": given,
    }
    with pytest.raises(ConfigError) as caught:
        resolve_disks({OTHER: None}, resolver)
    assert str(caught.value).startswith(
        f"--disk {OTHER} (--disk-resolver by-id:{root}): disk UUID {OTHER}: neither {root}/wwn-0x"
    )
    with pytest.raises(ConfigError, match=f"--disk d2={tmp_path}/d2: no such file or device"):
        resolve_disks({"d2": tmp_path / "d2"}, resolver)


def mt_files(tmp_path: Path) -> dict[str, str]:
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_bytes(b"x")
    return {
        "listen": "127.0.0.1:9443",
        "cert": str(tmp_path / "tls.crt"),
        "key": str(tmp_path / "tls.key"),
        "client_ca": str(tmp_path / "ca.crt"),
        "retention_dir": str(tmp_path / "retention"),
    }


def test_build_config_resolves_disks_given_by_uuid(tmp_path: Path) -> None:
    flat = vmdk(tmp_path / "ds" / "web-01", "web-01.vmdk", DDB)
    given = tmp_path / "other.flat"
    given.touch()
    config = build_config(
        **mt_files(tmp_path),
        disks=[UUID, f"other={given}"],
        disk_resolver=f"datastore:{tmp_path / 'ds'}",
        groups=[f"web-01={UUID},other"],
    )
    assert config.disks == {UUID: flat, "other": given}
    assert config.groups == {"web-01": (UUID, "other")}


def test_cli_refuses_a_uuid_that_resolves_to_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = mt_files(tmp_path)
    root = tmp_path / "by-id"
    root.mkdir()
    argv = ["master-target", "--cert", files["cert"], "--key", files["key"]]
    argv += ["--client-ca", files["client_ca"], "--retention-dir", files["retention_dir"]]
    argv += ["--disk", UUID, "--disk-resolver", f"by-id:{root}"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"failback master-target: error: --disk {UUID} (--disk-resolver by-id:{root}): "
        f"disk UUID {UUID}: neither {root}/wwn-0x{HEX} nor {root}/scsi-3{HEX} exists"
    )


def test_cli_refuses_a_uuid_that_resolves_to_two_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = mt_files(tmp_path)
    vmdk(tmp_path / "ds" / "a", "a.vmdk", DDB)
    vmdk(tmp_path / "ds" / "b", "b.vmdk", DDB)
    argv = ["master-target", "--cert", files["cert"], "--key", files["key"]]
    argv += ["--client-ca", files["client_ca"], "--retention-dir", files["retention_dir"]]
    argv += ["--disk", UUID, "--disk-resolver", f"datastore:{tmp_path / 'ds'}"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"failback master-target: error: --disk {UUID} (--disk-resolver datastore:" in err
    assert f"disk UUID {UUID}: 2 files under {tmp_path / 'ds'} carry it" in err


# ---------------------------------------------------------------------- the real vcsim


@pytest.fixture
def vsphere(vcenter: VCenter) -> Iterator[Any]:
    from pyVim.connect import Disconnect, SmartConnect

    si = SmartConnect(
        host=vcenter.host,
        port=vcenter.port,
        user=vcenter.username,
        pwd=vcenter.password,
        sslContext=ssl.create_default_context(cafile=str(vcenter.ca_file)),
    )
    try:
        yield si.content
    finally:
        Disconnect(si)


def finish(content: Any, moref: str) -> None:
    from failback.adapters.vsphere.operations import task_state

    deadline = time.monotonic() + 60
    while (state := task_state(content, moref)).state not in ("success", "error"):
        assert time.monotonic() < deadline, f"task {moref} did not end"
        time.sleep(0.05)
    assert state.state == "success", state.error


@pytest.mark.testbed
def test_a_vcsim_disk_is_found_by_the_uuid_vcsim_reports(
    vcenter: VCenter, vsphere: Any, tmp_path: Path
) -> None:
    from pyVmomi import vim

    from failback.adapters.vsphere.operations import create_vm, find_vm
    from failback.ports.vsphere import NewDisk, NewVM, VMPlacement

    instance_uuid = str(uuid.uuid4())
    name = f"fb-mt-{instance_uuid[:8]}"
    spec = NewVM(
        name=name,
        guest_id="otherLinux64Guest",
        placement=VMPlacement(datacenter="DC0", datastore="LocalDS_0", host="DC0_H0"),
        new_disks=(NewDisk(f"[LocalDS_0] {name}/{name}-0.vmdk", 1 << 20),),
        extra_config={"disk.EnableUUID": "TRUE"},
        instance_uuid=instance_uuid,
    )
    started = create_vm(vsphere, spec)
    assert not isinstance(started, str)
    finish(vsphere, started.moref)
    vm = find_vm(vsphere, instance_uuid)
    try:
        disk = next(
            d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
        )
        datacenter = next(
            dc for dc in vsphere.rootFolder.childEntity if isinstance(dc, vim.Datacenter)
        )
        datastore_dir = Path(disk.backing.datastore.info.url)
        assert disk.backing.fileName == f"[LocalDS_0] {name}/{name}-0.vmdk"
        expected = datastore_dir / name / f"{name}-0-flat.vmdk"
        assert expected.is_file()  # vcsim made it (empty), beside an empty descriptor
        assert (datastore_dir / name / f"{name}-0.vmdk").stat().st_size == 0
        found = resolve_in_datastore(
            disk.backing.uuid, vcenter.datastore_dir, datacenter=datacenter._moId
        )
        assert found == expected
        assert (
            resolve_in_datastore(disk.backing.uuid, datastore_dir, datacenter=datacenter._moId)
            == expected
        )
    finally:
        finish(vsphere, vm.Destroy_Task()._moId)
