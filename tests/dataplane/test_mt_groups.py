"""Groups registered at run time on the master target (``PUT``/``DELETE /v1/groups/{group}``)
and recorded in ``<retention-dir>/groups.json``, against the real service process.

Disks are flat files in ``tmp_path``: found by UUID through udev-like links
(``--disk-resolver by-id:DIR``, which never extends a file), or, for the test bed's
``datastore:`` resolver, as vcsim leaves them (an empty ``.vmdk`` and an empty
``-flat.vmdk``). Whether a disk is open is read from ``/proc/<pid>/fd``. The harness
(:class:`MasterTarget`, :class:`Client`) is ``test_mt_service.py``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failback import cli
from failback.adapters.mastertarget.points import PointsClient, parse_group
from failback.adapters.mtls import MutualTLS
from failback.dataplane.journal import Extent
from failback.dataplane.mt.resolver import vcsim_disk_uuid
from failback.domain.outcome import Refused
from failback.domain.recoverypoints import GroupState, GroupStatus, Released
from failback.ports.mastertarget import RecoveryPoints
from failback.ports.tls import TLSMaterial

from .test_mt_service import T0, Client, MasterTarget, error_code

MIB = 1 << 20
U = {n: f"6000C29{n}-1b2c-3d4e-5f60-718293a4b5c{n}" for n in "123456789"}
"""Disk UUIDs; ``U["7"]`` is never attached."""


def hex_of(uuid: str) -> str:
    return uuid.replace("-", "").lower()


def attach(root: Path, uuid: str, size: int = MIB, *, target: Path | None = None) -> Path:
    """A flat file of ``size`` bytes linked as ``root/by-id/wwn-0x<hex>`` (udev's link of a
    disk with that UUID); ``target``: link to that file instead (two names, one disk)."""
    links = root / "by-id"
    links.mkdir(exist_ok=True)
    flat = target or root / "disks" / f"{hex_of(uuid)}.flat"
    if target is None:
        flat.parent.mkdir(exist_ok=True)
        flat.write_bytes(os.urandom(size))
    (links / f"wwn-0x{hex_of(uuid)}").symlink_to(flat)
    return flat


def put(client: Client, group: str, *disks: tuple[str, int]) -> tuple[int, Any]:
    body = {"disks": [{"id": d, "sizeBytes": s} for d, s in disks]}
    return client.request("PUT", f"/v1/groups/{group}", body)


def open_files(mt: MasterTarget) -> set[Path]:
    """The files the service holds open."""
    assert mt.proc is not None
    fds = Path(f"/proc/{mt.proc.pid}/fd")
    out = set()
    for fd in fds.iterdir():
        try:
            out.add(Path(os.readlink(fd)))
        except OSError:
            continue
    return out


def groups_file(mt: MasterTarget) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((mt.retention / "groups.json").read_text())
    assert data["version"] == 1
    groups: dict[str, Any] = data["groups"]
    return groups


def by_id_mt(root: Path, flags: tuple[str, ...] = ()) -> MasterTarget:
    """A service with one flag group, ``flagged`` (disk ``os``, a 4 MiB file given by
    path), finding other disks under ``root/by-id``."""
    (root / "by-id").mkdir(parents=True, exist_ok=True)
    mt = MasterTarget(
        root, groups=("flagged=os", *flags), extra=("--disk-resolver", f"by-id:{root / 'by-id'}")
    )
    for disk_id in ("data", "other"):
        mt.disks.pop(disk_id).unlink()
    return mt


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterTarget]:
    root = tmp_path_factory.mktemp("mt-groups")
    mt = by_id_mt(root)
    for n in "123456":
        attach(root, U[n])
    attach(root, U["8"], target=root / "disks" / f"{hex_of(U['3'])}.flat")  # U3's file again
    mt.start()
    try:
        yield mt
    finally:
        assert mt.stop() == 0, mt.log_text()[-3000:]


# ---------------------------------------------------------------------- PUT


def test_put_creates_a_group_then_confirms_it(shared: MasterTarget) -> None:
    client = shared.client()
    status, created = put(client, "web-01", (U["1"], MIB))
    assert status == 201, created
    group = parse_group(created)  # the answer is GET /v1/groups/{group}'s
    assert (group.name, group.state, group.disks) == ("web-01", GroupState.ACTIVE, (U["1"],))
    assert (group.last_durable_seq, group.point_count, group.cycle_open) == (0, 0, False)
    assert client.request("GET", "/v1/groups/web-01") == (200, created)
    assert put(client, "web-01", (U["1"], MIB)) == (200, created)  # idempotent

    status, answer = put(client, "web-01", (U["1"], MIB), (U["2"], MIB))
    assert (status, error_code(answer)) == (409, "group_conflict"), answer
    assert answer["error"]["disks"] == [U["1"]]

    health = client.request("GET", "/v1/health")[1]
    disk = next(d for d in health["disks"] if d["id"] == U["1"])
    assert disk == {
        "id": U["1"],
        "path": str(shared.root / "by-id" / f"wwn-0x{hex_of(U['1'])}"),
        "sizeBytes": MIB,
        "group": "web-01",
    }
    assert {g["name"]: g["state"] for g in health["groups"]}["web-01"] == "active"
    assert groups_file(shared)["web-01"] == {
        "disks": [{"id": U["1"], "sizeBytes": MIB}],
        "released": False,
    }
    # The group takes batches and points like any other.
    assert client.batch("web-01", 1, [Extent.of(U["1"], 4096, b"w" * 4096)])[0] == 200
    assert client.point("web-01", "p-1", T0)[0] == 201
    flat = shared.root / "disks" / f"{hex_of(U['1'])}.flat"
    assert flat.read_bytes()[4096:8192] == b"w" * 4096


def test_a_disk_belongs_to_one_group(shared: MasterTarget) -> None:
    client = shared.client()
    assert put(client, "owner", (U["3"], MIB))[0] == 201
    for disk_id in (U["3"], hex_of(U["3"]).upper(), U["8"], "os"):  # U8's link is U3's file
        status, answer = put(client, "thief", (disk_id, MIB))
        assert (status, error_code(answer)) == (409, "disk_in_use"), (disk_id, answer)
        assert answer["error"]["group"] == ("flagged" if disk_id == "os" else "owner")
    assert error_code(client.request("GET", "/v1/groups/thief")[1]) == "unknown_group"


def test_a_disk_that_is_not_attached_is_named_with_what_was_searched(shared: MasterTarget) -> None:
    status, answer = put(shared.client(), "lost", (U["4"], MIB), (U["7"], MIB))
    assert (status, error_code(answer)) == (409, "disk_not_found"), answer
    message = answer["error"]["message"]
    assert f"disk UUID {U['7']}" in message
    assert f"wwn-0x{hex_of(U['7'])}" in message
    assert f"--disk-resolver by-id:{shared.root / 'by-id'}" in message
    assert answer["error"]["diskId"] == U["7"]
    assert shared.client().request("GET", "/v1/groups/lost")[0] == 404
    assert put(shared.client(), "lost", (U["4"], MIB))[0] == 201  # U4 was not kept


def test_a_disk_smaller_than_asked_is_refused(shared: MasterTarget) -> None:
    client = shared.client()
    flat = shared.root / "disks" / f"{hex_of(U['5'])}.flat"
    status, answer = put(client, "small", (U["5"], 2 * MIB))
    assert (status, error_code(answer)) == (409, "disk_too_small"), answer
    assert (answer["error"]["sizeBytes"], answer["error"]["diskSizeBytes"]) == (2 * MIB, MIB)
    assert flat.stat().st_size == MIB  # by-id never extends a disk
    assert client.request("GET", "/v1/groups/small")[0] == 404
    # An open group too: the flag group's disk is 4 MiB.
    status, answer = put(client, "flagged", ("os", 8 * MIB))
    assert (status, error_code(answer)) == (409, "disk_too_small"), answer


def _invalid() -> list[tuple[str, str, Any, str]]:
    one = {"id": U["6"], "sizeBytes": MIB}
    return [
        # (id, group, body, field)
        ("no-disks", "g", {}, "disks"),
        ("empty", "g", {"disks": []}, "disks"),
        ("65-disks", "g", {"disks": [one] * 65}, "disks"),
        ("not-a-list", "g", {"disks": one}, "disks"),
        ("not-an-object", "g", {"disks": [U["6"]]}, "disks[0]"),
        ("no-id", "g", {"disks": [{"sizeBytes": MIB}]}, "disks[0].id"),
        ("id-not-a-uuid", "g", {"disks": [{"id": "sdb", "sizeBytes": MIB}]}, "disks[0].id"),
        ("id-a-path", "g", {"disks": [{"id": "../x", "sizeBytes": MIB}]}, "disks[0].id"),
        ("twice", "g", {"disks": [one, one]}, "disks[1].id"),
        (
            "twice-spelled-otherwise",
            "g",
            {"disks": [one, {"id": hex_of(U["6"]), "sizeBytes": MIB}]},
            "disks[1].id",
        ),
        ("no-size", "g", {"disks": [{"id": U["6"]}]}, "disks[0].sizeBytes"),
        ("size-zero", "g", {"disks": [{"id": U["6"], "sizeBytes": 0}]}, "disks[0].sizeBytes"),
        ("size-odd", "g", {"disks": [{"id": U["6"], "sizeBytes": 1000}]}, "disks[0].sizeBytes"),
        ("size-text", "g", {"disks": [{"id": U["6"], "sizeBytes": "1Mi"}]}, "disks[0].sizeBytes"),
        ("size-bool", "g", {"disks": [{"id": U["6"], "sizeBytes": True}]}, "disks[0].sizeBytes"),
        ("name-upper", "Web-01", {"disks": [one]}, "group"),
        ("name-too-long", "a" * 64, {"disks": [one]}, "group"),
        ("name-of-the-file", "groups.json", {"disks": [one]}, "group"),
    ]


@pytest.mark.parametrize(
    ("group", "body", "field"), [pytest.param(*c[1:], id=c[0]) for c in _invalid()]
)
def test_an_invalid_put_names_the_field(
    shared: MasterTarget, group: str, body: Any, field: str
) -> None:
    status, answer = shared.client().request("PUT", f"/v1/groups/{group}", body)
    assert (status, error_code(answer)) == (400, "invalid_field"), answer
    assert answer["error"]["field"] == field
    assert answer["error"]["message"].startswith(field), answer


# ---------------------------------------------------------------------- DELETE


def test_delete_forgets_a_released_group_only(shared: MasterTarget) -> None:
    client = shared.client()
    assert put(client, "done", (U["6"], MIB))[0] == 201
    assert (shared.retention / "done").is_dir()
    status, answer = client.request("DELETE", "/v1/groups/done")
    assert (status, error_code(answer)) == (409, "group_active"), answer
    assert "release it first" in answer["error"]["message"]

    assert client.request("POST", "/v1/groups/done/release")[0] == 200
    assert groups_file(shared)["done"]["released"] is True
    assert client.request("DELETE", "/v1/groups/done") == (
        200,
        {"group": "done", "deleted": True},
    )
    assert not (shared.retention / "done").exists()
    assert not list(shared.retention.glob(".deleting-*"))
    assert "done" not in groups_file(shared)
    assert "done" not in {g["name"] for g in client.request("GET", "/v1/health")[1]["groups"]}
    # Again: 404, which a client takes as done.
    status, answer = client.request("DELETE", "/v1/groups/done")
    assert (status, error_code(answer)) == (404, "unknown_group"), answer
    # Its disk is free for another group, with a new journal.
    status, created = put(client, "done-again", (U["6"], MIB))
    assert (status, created["lastDurableSeq"], created["pointCount"]) == (201, 0, 0), created


# ---------------------------------------------------------------------- the operator's client


async def test_the_operators_client_registers_and_deletes_a_group(shared: MasterTarget) -> None:
    mtls = MutualTLS(timeout=15)
    points: RecoveryPoints = PointsClient(mtls)
    pair, endpoint = shared.client_pair, f"https://127.0.0.1:{shared.port}"
    tls = TLSMaterial(pair.cert.read_text(), pair.key.read_text(), shared.pki.ca_file.read_text())
    try:
        for _ in range(2):  # created, then confirmed
            group = await points.ensure_group(endpoint, tls, "by-client", [(U["2"], MIB)])
            assert isinstance(group, GroupStatus), group
            assert (group.name, group.state, group.disks) == ("by-client", "active", (U["2"],))
        refused = await points.ensure_group(endpoint, tls, "by-client", [(U["2"], 2 * MIB)])
        assert isinstance(refused, Refused), refused
        assert (refused.status, refused.code) == (409, "disk_too_small")
        refused = await points.ensure_group(endpoint, tls, "by-client", [(U["1"], MIB)])
        assert isinstance(refused, Refused), refused
        assert (refused.code, refused.extra["disks"]) == ("group_conflict", [U["2"]])
        refused = await points.delete_group(endpoint, tls, "by-client")
        assert isinstance(refused, Refused), refused
        assert (refused.status, refused.code) == (409, "group_active")

        assert isinstance(await points.release(endpoint, tls, "by-client"), Released)
        assert await points.delete_group(endpoint, tls, "by-client") is True
        assert await points.delete_group(endpoint, tls, "by-client") is False  # 404: done
    finally:
        await mtls.close()


# ---------------------------------------------------------------------- restarts


def test_a_released_group_stays_released_across_restarts(tmp_path: Path) -> None:
    """Release a registered group, a flag group and a flag group given by UUID; SIGKILL;
    the disk given by UUID is detached meanwhile. After the restart none of the three is
    open; the registered one answers its points, refuses changes, and is taken back by a
    PUT with its disks; the flag group too."""
    mt = by_id_mt(tmp_path, flags=(f"by-uuid={U['9']}",))
    mt.extra += ("--disk", U["9"])
    keep, back = attach(tmp_path, U["1"]), attach(tmp_path, U["2"])
    by_uuid = attach(tmp_path, U["9"])
    flagged = mt.disks["os"].resolve()
    mt.start()
    client = mt.client()
    assert put(client, "keep", (U["1"], MIB))[0] == 201
    assert put(client, "back", (U["2"], MIB))[0] == 201
    assert client.batch("back", 1, [Extent.of(U["2"], 0, b"b" * 512)])[0] == 200
    status, committed = client.point("back", "p-1", T0)
    assert status == 201, committed
    for group in ("back", "flagged", "by-uuid"):
        assert client.request("POST", f"/v1/groups/{group}/release")[0] == 200
    assert {keep, back, flagged, by_uuid} & open_files(mt) == {keep}

    mt.kill()
    (tmp_path / "by-id" / f"wwn-0x{hex_of(U['9'])}").unlink()  # attached elsewhere now
    mt.start()
    assert {keep, back, flagged, by_uuid} & open_files(mt) == {keep}
    health = client.request("GET", "/v1/health")[1]
    states = {g["name"]: g["state"] for g in health["groups"]}
    assert states == {
        "flagged": "released",
        "by-uuid": "released",
        "keep": "active",
        "back": "released",
    }
    paths = {d["id"]: d["path"] for d in health["disks"]}
    assert (paths[U["2"]], paths[U["1"]] is not None) == (None, True)
    released = next(g for g in health["groups"] if g["name"] == "back")
    assert released["newestPoint"] == committed["point"]
    assert released["lastDurableSeq"] == 1
    assert client.request("GET", "/v1/groups/back/points")[1]["points"] == [committed["point"]]
    status, answer = client.batch("back", 2, [Extent.of(U["2"], 0, b"c" * 512)])
    assert (status, error_code(answer)) == (409, "group_released"), answer
    assert "PUT /v1/groups/back" in answer["error"]["message"]
    again = client.request("POST", "/v1/groups/back/release")
    assert again == (200, {"group": "back", "released": True, "point": committed["point"]})

    # Taken back (the operator reattached the disks): reopened, active, the journal kept.
    status, taken = put(client, "back", (U["2"], MIB))
    assert status == 200, taken
    assert (taken["state"], taken["lastDurableSeq"], taken["pointCount"]) == ("active", 1, 1)
    assert client.batch("back", 2, [Extent.of(U["2"], 0, b"c" * 512)])[0] == 200
    status, taken = put(client, "flagged", ("os", 4 * MIB))
    assert (status, taken["state"]) == (200, "active"), taken
    assert {keep, back, flagged} <= open_files(mt)

    assert mt.stop() == 0
    mt.start()
    health = client.request("GET", "/v1/health")[1]
    assert {g["name"]: g["state"] for g in health["groups"]} == {
        "flagged": "active",
        "by-uuid": "released",
        "keep": "active",
        "back": "active",
    }
    assert client.request("GET", "/v1/groups/back")[1]["lastDurableSeq"] == 2
    assert mt.stop() == 0


def _refused_starts() -> list[tuple[str, Any, str]]:
    other = {"disks": [{"id": U["1"], "sizeBytes": MIB}], "released": False}
    return [
        # (id, groups.json content, what stderr says)
        (
            "other-disks",
            {"version": 1, "groups": {"flagged": other}},
            "cannot start: group flagged: the flags (--group/--disk) give it disks os but ",
        ),
        (
            "disk-in-two-groups",
            {"version": 1, "groups": {"web": {**other, "disks": [{"id": "os", "sizeBytes": 0}]}}},
            "cannot start: disk os is in group flagged and in group web",
        ),
        ("not-json", "{", "groups.json: not JSON"),
        ("bad-field", {"version": 1, "groups": {"web": {**other, "released": 1}}}, "released"),
    ]


@pytest.mark.parametrize(
    ("content", "words"), [pytest.param(*c[1:], id=c[0]) for c in _refused_starts()]
)
def test_flags_and_groups_file_must_agree(tmp_path: Path, content: Any, words: str) -> None:
    mt = by_id_mt(tmp_path)
    mt.retention.mkdir()
    text = content if isinstance(content, str) else json.dumps(content)
    (mt.retention / "groups.json").write_text(text)
    done = subprocess.run(mt.argv(), capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1, done.stderr
    assert words in done.stderr


# ---------------------------------------------------------------------- no --disk at all


@contextlib.contextmanager
def started(mt: MasterTarget) -> Iterator[MasterTarget]:
    mt.start()
    try:
        yield mt
    finally:
        assert mt.stop() == 0, mt.log_text()[-3000:]


LAUNCH = """\
import argparse, json, sys
from failback import cli
sys.exit(cli.run_master_target(argparse.Namespace(**json.loads(sys.argv[1]))))
"""


class NoDiskMasterTarget(MasterTarget):
    """The service started with no ``--disk`` and no ``--group``, through the CLI's runner
    with what its parser gives for such a command line (``disks=None``): cli.py's parser
    still requires ``--disk`` (see :func:`test_the_cli_parser_accepts_no_disk`)."""

    def argv(self) -> list[str]:
        args = argparse.Namespace(
            listen=f"127.0.0.1:{self.port}",
            cert=str(self.server.cert),
            key=str(self.server.key),
            client_ca=str(self.pki.ca_file),
            retention_dir=str(self.retention),
            disks=None,
            disk_resolver=self.extra[-1],
            groups=[],
            capacity=None,
            retention="24h",
            first_cycle="direct",
            verbose=False,
        )
        return [sys.executable, "-c", LAUNCH, json.dumps(vars(args))]


def test_a_service_without_disks_takes_a_vcsim_disk_extended_to_its_size(tmp_path: Path) -> None:
    """The test bed's ``datastore:`` resolver: vcsim's flat file is empty; it is extended."""
    folder = tmp_path / "ds" / "govcsim-DC0-LocalDS_0-4242" / "fb-vm"
    folder.mkdir(parents=True)
    (folder / "disk-0.vmdk").touch()
    flat = folder / "disk-0-flat.vmdk"
    flat.touch()
    uuid = vcsim_disk_uuid("datacenter-2", "[LocalDS_0] fb-vm/disk-0.vmdk")
    resolver = f"datastore:{tmp_path / 'ds'},datacenter=datacenter-2"
    mt = NoDiskMasterTarget(tmp_path, extra=("--disk-resolver", resolver))
    for path in mt.disks.values():
        path.unlink()
    mt.disks.clear()
    with started(mt):
        client = mt.client()
        health = client.request("GET", "/v1/health")[1]
        assert (health["groups"], health["disks"], health["rpoSourceTime"]) == ([], [], None)
        status, answer = client.request("GET", "/v1/groups/vm")
        assert (status, error_code(answer)) == (404, "unknown_group")
        assert "(have: none)" in answer["error"]["message"]

        status, created = put(client, "vm", (uuid, 2 * MIB))
        assert status == 201, created
        assert flat.stat().st_size == 2 * MIB
        assert '"message": "test bed: flat file extended"' in mt.log_text()
        assert client.batch("vm", 1, [Extent.of(uuid, MIB, b"v" * 512)])[0] == 200
        assert flat.read_bytes()[MIB : MIB + 512] == b"v" * 512


def test_the_cli_parser_accepts_no_disk(tmp_path: Path) -> None:
    argv = ["master-target", "--cert", "c", "--key", "k", "--client-ca", "a"]
    args = cli.build_parser().parse_args([*argv, "--retention-dir", str(tmp_path)])
    assert args.disks is None
