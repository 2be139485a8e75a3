"""The master target service as a real process: `failback master-target` over mutual TLS.

Certificates come from the test bed's CA (``testbed.pki.Pki``) in ``tmp_path``; the target
disks are flat files there. Each check reads the disks' bytes independently of the service.
The harness (:class:`MasterTarget`, :class:`Client`) is reused by ``test_mt_service_crash.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import random
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zstandard

from failback.dataplane.journal import SECTOR, Extent
from failback.dataplane.mt import MEDIA_TYPE, encode_batch
from failback.dataplane.mt.wire import compress_body
from testbed.pki import CertPair, Pki
from testbed.procs import free_port, log_tail, spawn, wait_until

FAILBACK = Path(sys.executable).parent / "failback"
T0 = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
SIZES = {"os": 4 << 20, "data": 2 << 20, "other": 1 << 20}


# ---------------------------------------------------------------------- harness


@dataclass
class Client:
    """A tiny synchronous HTTPS client: one connection per request, like a resuming PS."""

    port: int
    ca: Path
    pair: CertPair | None
    timeout: float = 10.0

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.pair is not None:
            context.load_cert_chain(self.pair.cert, self.pair.key)
        return context

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        content_type: str | None = None,
        encoding: str | None = None,
    ) -> tuple[int, Any]:
        headers = {}
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        raw: bytes | None
        if isinstance(body, dict):
            raw = json.dumps(body).encode()
            headers["Content-Type"] = content_type or "application/json"
        else:
            raw = body
            if body is not None:
                headers["Content-Type"] = content_type or MEDIA_TYPE
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self._context(), timeout=self.timeout
        )
        try:
            conn.request(method, path, body=raw, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data.decode(errors="replace")

    def batch(self, group: str, seq: int, extents: list[Extent]) -> tuple[int, Any]:
        return self.request("POST", f"/v1/groups/{group}/batches", encode_batch(seq, extents))

    def point(self, group: str, point_id: str, when: dt.datetime, app: bool = False) -> Any:
        body = {"id": point_id, "sourceTime": when.isoformat(), "appConsistent": app}
        return self.request("POST", f"/v1/groups/{group}/points", body)


@dataclass
class MasterTarget:
    """`failback master-target` spawned through the console script, on a free port."""

    root: Path
    groups: tuple[str, ...] = ("vm1=os,data", "vm2=other")
    extra: tuple[str, ...] = ()
    seed: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.pki = Pki(self.root / "pki")
        self.server = self.pki.serving("mt")
        self.client_pair = self.pki.client("ps", "process-server")
        self.log = self.root / "mt.log"
        self.retention = self.root / "retention"
        self.disks: dict[str, Path] = {}
        rng = random.Random(self.seed)
        for disk_id, size in SIZES.items():
            path = self.root / f"{disk_id}.flat"
            path.write_bytes(rng.randbytes(size))
            self.disks[disk_id] = path

    def argv(self) -> list[str]:
        argv = [
            str(FAILBACK),
            "master-target",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--cert",
            str(self.server.cert),
            "--key",
            str(self.server.key),
            "--client-ca",
            str(self.pki.ca_file),
            "--retention-dir",
            str(self.retention),
        ]
        for disk_id, path in self.disks.items():
            argv += ["--disk", f"{disk_id}={path}"]
        for group in self.groups:
            argv += ["--group", group]
        return argv + list(self.extra)

    def client(self, pair: CertPair | None = None) -> Client:
        return Client(self.port, self.pki.ca_file, pair or self.client_pair)

    def start(self) -> None:
        self.proc = spawn(self.argv(), self.log)
        self.starts += 1
        client = self.client()
        wait_until(
            lambda: client.request("GET", "/v1/health")[0] == 200,
            what="failback master-target",
            log=self.log,
            proc=self.proc,
            timeout=30,
        )

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def digest(self, disk_id: str) -> str:
        return hashlib.sha256(self.disks[disk_id].read_bytes()).hexdigest()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running(root: Path, **kwargs: Any) -> Iterator[MasterTarget]:
    mt = MasterTarget(root, **kwargs)
    mt.start()
    try:
        yield mt
    finally:
        code = mt.stop()
        assert code == 0, f"the service exited with {code}:\n{log_tail(mt.log)}"


class Model:
    """The expected bytes of every disk: the initial content plus the batches applied."""

    def __init__(self, mt: MasterTarget) -> None:
        self.disks = {k: bytearray(p.read_bytes()) for k, p in mt.disks.items()}

    def apply(self, extents: list[Extent]) -> None:
        for e in extents:
            self.disks[e.disk_id][e.offset : e.offset + e.length] = (
                e.data if e.data is not None else bytes(e.length)
            )

    def digest(self, disk_id: str) -> str:
        return hashlib.sha256(self.disks[disk_id]).hexdigest()

    def digests(self, disk_ids: tuple[str, ...] = ("os", "data")) -> dict[str, str]:
        return {d: self.digest(d) for d in disk_ids}


def random_extents(
    rng: random.Random,
    count: int = 6,
    max_sectors: int = 256,
    disks: tuple[str, ...] = ("os", "data"),
) -> list[Extent]:
    out = []
    for _ in range(count):
        disk_id = rng.choice(disks)
        sectors = rng.randint(1, max_sectors)
        offset = rng.randrange(0, SIZES[disk_id] // SECTOR - sectors + 1) * SECTOR
        if rng.random() < 0.15:
            out.append(Extent.zero(disk_id, offset, sectors * SECTOR))
        else:
            out.append(Extent.of(disk_id, offset, rng.randbytes(sectors * SECTOR)))
    return out


def disk_digests(mt: MasterTarget, disk_ids: tuple[str, ...] = ("os", "data")) -> dict[str, str]:
    return {d: mt.digest(d) for d in disk_ids}


def error_code(answer: Any) -> str:
    assert isinstance(answer, dict), answer
    assert "error" in answer, answer
    assert answer["error"]["message"], answer
    return str(answer["error"]["code"])


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def mt(tmp_path: Path) -> Iterator[MasterTarget]:
    with running(tmp_path) as service:
        yield service


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterTarget]:
    """One service for the tests that only read or are refused (nothing they do writes)."""
    with running(tmp_path_factory.mktemp("mt-shared")) as service:
        yield service


# ---------------------------------------------------------------------- tests


def test_batches_points_and_rollback_are_byte_exact(mt: MasterTarget) -> None:
    client, model, rng = mt.client(), Model(mt), random.Random(7)
    seq, at_point = 0, {}
    for cycle in range(1, 5):
        for _ in range(3):
            seq += 1
            extents = random_extents(rng)
            status, answer = client.batch("vm1", seq, extents)
            assert (status, answer["lastDurableSeq"], answer["applied"]) == (200, seq, True)
            model.apply(extents)
        status, answer = client.point("vm1", f"p-{cycle}", T0 + dt.timedelta(hours=cycle))
        assert status == 201, answer
        assert answer["point"]["id"] == f"p-{cycle}"
        assert answer["point"]["lastSeq"] == seq
        assert disk_digests(mt) == model.digests()
        at_point[f"p-{cycle}"] = (seq, model.digests())

    status, listed = client.request("GET", "/v1/groups/vm1/points")
    assert status == 200
    assert [p["id"] for p in listed["points"]] == ["p-1", "p-2", "p-3", "p-4"]
    assert listed["points"][1]["sourceTime"] == "2026-11-23T05:00:00Z"
    assert all(p["disks"] == ["data", "os"] and p["restorable"] for p in listed["points"])

    # A batch after the newest point, then roll the whole group back to p-2.
    status, answer = client.batch("vm1", seq + 1, random_extents(rng))
    assert status == 200
    status, answer = client.request("POST", "/v1/groups/vm1/rollback", {"pointId": "p-2"})
    assert status == 200, answer
    assert answer["point"]["id"] == "p-2"
    assert answer["lastDurableSeq"] == at_point["p-2"][0]
    assert disk_digests(mt) == at_point["p-2"][1]
    status, listed = client.request("GET", "/v1/groups/vm1/points")
    assert [p["id"] for p in listed["points"]] == ["p-1", "p-2"]

    # Replication continues from the point's sequence number.
    model = Model(mt)
    seq = answer["lastDurableSeq"] + 1
    extents = random_extents(rng)
    assert client.batch("vm1", seq, extents)[0] == 200
    model.apply(extents)
    assert client.point("vm1", "p-5", T0 + dt.timedelta(hours=5), app=True)[0] == 201
    assert disk_digests(mt) == model.digests()
    # The other group's disk was never touched.
    assert mt.digest("other") == Model(mt).digest("other")


def test_resends_are_harmless(mt: MasterTarget) -> None:
    client, model, rng = mt.client(), Model(mt), random.Random(3)
    first = random_extents(rng)
    assert client.batch("vm1", 1, first)[1]["applied"] is True
    model.apply(first)
    status, answer = client.batch("vm1", 1, random_extents(rng))  # same seq, other bytes
    assert (status, answer["applied"], answer["lastDurableSeq"]) == (200, False, 1)
    assert client.point("vm1", "p-1", T0)[0] == 201
    status, answer = client.point("vm1", "p-1", T0)  # the commit resent
    assert status == 200
    assert answer["point"]["lastSeq"] == 1
    assert disk_digests(mt) == model.digests()


def test_a_flipped_bit_is_refused_and_nothing_is_written(mt: MasterTarget) -> None:
    client, rng = mt.client(), random.Random(11)
    assert client.batch("vm1", 1, random_extents(rng))[0] == 200
    assert client.point("vm1", "p-1", T0)[0] == 201
    before = disk_digests(mt)
    extents = [Extent.of("os", 0, rng.randbytes(64 << 10)), Extent.of("data", 4096, b"x" * 512)]
    body = bytearray(encode_batch(2, extents))
    # In the data of the first extent (header 28 + extent header 24 + "os" + 8).
    data_start = 28 + 24 + 2 + 8
    for bit in (0, 7, 1000 * 8 + 3, (64 << 10) * 8 - 1):
        flipped = bytearray(body)
        flipped[data_start + bit // 8] ^= 1 << (bit % 8)
        status, answer = client.request("POST", "/v1/groups/vm1/batches", bytes(flipped))
        assert (status, error_code(answer)) == (422, "checksum_mismatch"), answer
        assert "nothing written" in answer["error"]["message"]
    # In a header: the offset, the length, the disk id.
    for pos in (28, 28 + 8, 28 + 24):
        flipped = bytearray(body)
        flipped[pos] ^= 0x10
        status, answer = client.request("POST", "/v1/groups/vm1/batches", bytes(flipped))
        assert (status, error_code(answer)) == (400, "malformed_frame"), answer
    assert disk_digests(mt) == before
    status, state = client.request("GET", "/v1/groups/vm1")
    assert (state["lastDurableSeq"], state["cycleOpen"]) == (1, False)
    # The intact body still applies.
    assert client.request("POST", "/v1/groups/vm1/batches", bytes(body))[0] == 200


def test_zstd_batches_are_applied_byte_exact(mt: MasterTarget) -> None:
    client, model, rng = mt.client(), Model(mt), random.Random(17)
    # Compressible data (a repeated pattern, like files and zeroed space) and noise.
    pattern = rng.randbytes(512) * 256
    extents = [
        Extent.of("os", 1 << 20, pattern),
        Extent.of("data", 8192, rng.randbytes(64 << 10)),
        Extent.zero("os", 0, 4096),
    ]
    body = encode_batch(1, extents)
    packed = compress_body(body)
    assert len(packed) < len(body) // 2
    status, answer = client.request("POST", "/v1/groups/vm1/batches", packed, encoding="zstd")
    assert (status, answer["applied"], answer["lastDurableSeq"]) == (200, True, 1), answer
    model.apply(extents)
    # Identity, spelled out, and upper case zstd are accepted as well.
    more = random_extents(rng)
    status, answer = client.request(
        "POST", "/v1/groups/vm1/batches", encode_batch(2, more), encoding="identity"
    )
    assert status == 200, answer
    model.apply(more)
    last = random_extents(rng)
    status, answer = client.request(
        "POST", "/v1/groups/vm1/batches", compress_body(encode_batch(3, last), 1), encoding="ZSTD"
    )
    assert status == 200, answer
    model.apply(last)
    assert client.point("vm1", "p-1", T0)[0] == 201
    assert disk_digests(mt) == model.digests()
    requests = [json.loads(line) for line in mt.log_text().splitlines() if '"request"' in line]
    batches = [e for e in requests if e["path"] == "/v1/groups/vm1/batches"]
    assert [(e["encoding"], e["wireBytes"]) for e in batches[:2]] == [
        ("zstd", len(packed)),
        ("identity", len(encode_batch(2, more))),
    ]


def _zeros(size: int, *, declared: bool) -> bytes:
    """A zstd frame of ``size`` zeros, streamed (never ``size`` bytes in memory here).

    ``declared``: its header states the size (a refusal from the header), or not (a bomb
    the service only finds out about while decompressing).
    """
    stream = zstandard.ZstdCompressor(level=1).compressobj(size=size if declared else -1)
    parts = [stream.compress(bytes(1 << 20)) for _ in range(size >> 20)]
    return b"".join([*parts, stream.flush()])


def _encoding_refusals() -> list[tuple[str, bytes, str, int, str]]:
    body = encode_batch(1, [Extent.of("os", 0, b"e" * 4096)])
    packed = compress_body(body)
    flipped = bytearray(packed)
    flipped[len(packed) // 2] ^= 0x20
    return [
        # (id, body, Content-Encoding, status, code)
        ("gzip", body, "gzip", 415, "unsupported_encoding"),
        ("br", packed, "br", 415, "unsupported_encoding"),
        ("list", packed, "zstd, gzip", 415, "unsupported_encoding"),
        ("identity-sent-as-zstd", body, "zstd", 400, "bad_compression"),
        ("truncated", packed[:-6], "zstd", 400, "bad_compression"),
        ("corrupt", bytes(flipped), "zstd", 400, "bad_compression"),
        ("trailing", packed + b"\0\0", "zstd", 400, "bad_compression"),
        ("zstd-sent-as-identity", packed, "identity", 400, "malformed_frame"),
        # 512 MiB of zeros in ~16 KiB: over the 256 MiB batch limit once decompressed.
        ("bomb", _zeros(512 << 20, declared=False), "zstd", 413, "batch_too_large"),
        ("declared-too-large", _zeros(257 << 20, declared=True), "zstd", 413, "batch_too_large"),
    ]


@pytest.mark.parametrize(
    ("body", "encoding", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in _encoding_refusals()],
)
def test_bad_encodings_get_a_specific_error_and_write_nothing(
    shared: MasterTarget, body: bytes, encoding: str, status: int, code: str
) -> None:
    before = disk_digests(shared, ("os", "data", "other"))
    got, answer = shared.client().request("POST", "/v1/groups/vm1/batches", body, encoding=encoding)
    assert (got, error_code(answer)) == (status, code), answer
    if code == "unsupported_encoding":
        assert "identity or zstd" in answer["error"]["message"]
    if code in ("bad_compression", "batch_too_large"):
        assert "nothing written" in answer["error"]["message"]
    if code == "batch_too_large":
        assert "decompresses to more than 268435456 bytes" in answer["error"]["message"]
    assert disk_digests(shared, ("os", "data", "other")) == before
    assert shared.client().request("GET", "/v1/groups/vm1")[1]["lastDurableSeq"] == 0


def _bad_requests() -> list[tuple[str, str, str, Any, int, str]]:
    good = [Extent.of("os", 0, b"a" * 512)]
    body = encode_batch(1, good)
    zero_seq = encode_batch(0, good)
    return [
        # (id, method, path, body, status, code)
        ("truncated", "POST", "/v1/groups/vm1/batches", body[:-10], 400, "malformed_frame"),
        ("trailing", "POST", "/v1/groups/vm1/batches", body + b"\0", 400, "malformed_frame"),
        ("magic", "POST", "/v1/groups/vm1/batches", b"XXXX" + body[4:], 400, "malformed_frame"),
        ("short", "POST", "/v1/groups/vm1/batches", b"FBB1", 400, "malformed_frame"),
        ("seq-zero", "POST", "/v1/groups/vm1/batches", zero_seq, 400, "malformed_frame"),
        ("unknown-group", "POST", "/v1/groups/nope/batches", body, 404, "unknown_group"),
        (
            "disk-of-other-group",
            "POST",
            "/v1/groups/vm1/batches",
            encode_batch(1, [Extent.of("other", 0, b"a" * 512)]),
            422,
            "unknown_disk",
        ),
        (
            "unknown-disk",
            "POST",
            "/v1/groups/vm1/batches",
            encode_batch(1, [*good, Extent.of("nvme9", 0, b"a" * 512)]),
            422,
            "unknown_disk",
        ),
        (
            "out-of-range",
            "POST",
            "/v1/groups/vm1/batches",
            encode_batch(1, [*good, Extent.of("data", SIZES["data"] - 512, b"a" * 1024)]),
            422,
            "extent_out_of_range",
        ),
        (
            "zero-out-of-range",
            "POST",
            "/v1/groups/vm1/batches",
            encode_batch(1, [Extent.zero("os", SIZES["os"], 512)]),
            422,
            "extent_out_of_range",
        ),
        (
            "misaligned",
            "POST",
            "/v1/groups/vm1/batches",
            encode_batch(1, [Extent.of("os", 100, b"a" * 512)]),
            422,
            "extent_misaligned",
        ),
        (
            "sequence-gap",
            "POST",
            "/v1/groups/vm1/batches",
            encode_batch(5, good),
            409,
            "sequence_gap",
        ),
        (
            "wrong-type",
            "POST",
            "/v1/groups/vm1/batches",
            {"seq": 1},
            415,
            "unsupported_media_type",
        ),
        (
            "unknown-point",
            "POST",
            "/v1/groups/vm1/rollback",
            {"pointId": "p-9"},
            404,
            "unknown_point",
        ),
        ("rollback-no-id", "POST", "/v1/groups/vm1/rollback", {}, 400, "invalid_field"),
        (
            "point-bad-time",
            "POST",
            "/v1/groups/vm1/points",
            {"id": "p", "sourceTime": "noon"},
            400,
            "invalid_field",
        ),
        (
            "point-naive-time",
            "POST",
            "/v1/groups/vm1/points",
            {"id": "p", "sourceTime": "2026-11-23T03:00:00"},
            400,
            "invalid_field",
        ),
        (
            "point-app-flag",
            "POST",
            "/v1/groups/vm1/points",
            {"id": "p", "sourceTime": "2026-11-23T03:00:00Z", "appConsistent": "yes"},
            400,
            "invalid_field",
        ),
        (
            "cycle-no-bytes",
            "POST",
            "/v1/groups/vm1/cycles",
            {"changedBytes": -1},
            400,
            "invalid_field",
        ),
        ("points-unknown-group", "GET", "/v1/groups/nope/points", None, 404, "unknown_group"),
        ("no-endpoint", "GET", "/v1/nothing", None, 404, "not_found"),
        ("wrong-method", "DELETE", "/v1/groups/vm1/points", None, 405, "method_not_allowed"),
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in _bad_requests()],
)
def test_bad_requests_get_a_specific_error_and_write_nothing(
    shared: MasterTarget, method: str, path: str, body: Any, status: int, code: str
) -> None:
    before = disk_digests(shared, ("os", "data", "other"))
    got, answer = shared.client().request(method, path, body)
    assert (got, error_code(answer)) == (status, code), answer
    assert disk_digests(shared, ("os", "data", "other")) == before
    assert shared.client().request("GET", "/v1/groups/vm1")[1]["lastDurableSeq"] == 0


def test_bad_json_is_refused(shared: MasterTarget) -> None:
    status, answer = shared.client().request(
        "POST", "/v1/groups/vm1/points", b"{not json", content_type="application/json"
    )
    assert (status, error_code(answer)) == (400, "bad_json")


def test_a_point_older_than_the_newest_is_refused(mt: MasterTarget) -> None:
    client = mt.client()
    assert client.point("vm1", "p-1", T0 + dt.timedelta(hours=2))[0] == 201
    status, answer = client.point("vm1", "p-0", T0)
    assert (status, error_code(answer)) == (409, "point_order")
    assert "older than the newest point" in answer["error"]["message"]


def test_health_reports_what_the_mastertarget_status_needs(mt: MasterTarget) -> None:
    client = mt.client()
    status, health = client.request("GET", "/v1/health")
    assert status == 200
    assert health["version"] == "0.1.0"
    volume = health["retentionVolume"]
    assert volume["path"] == str(mt.retention.resolve())
    assert volume["fileSystem"]
    assert volume["mountPoint"]
    assert volume["capacityBytes"] > 0
    assert 0 <= volume["freeBytes"] <= volume["capacityBytes"]
    assert volume["writable"] is True
    assert {d["id"]: (d["sizeBytes"], d["group"]) for d in health["disks"]} == {
        "os": (SIZES["os"], "vm1"),
        "data": (SIZES["data"], "vm1"),
        "other": (SIZES["other"], "vm2"),
    }
    assert health["newestPoint"] is None
    assert health["rpoSourceTime"] is None
    assert [g["name"] for g in health["groups"]] == ["vm1", "vm2"]

    assert client.batch("vm1", 1, random_extents(random.Random(1)))[0] == 200
    assert client.point("vm1", "p-1", T0, app=True)[0] == 201
    assert client.point("vm2", "q-1", T0 + dt.timedelta(minutes=30))[0] == 201
    health = client.request("GET", "/v1/health")[1]
    assert health["journalUsedBytes"] > 0
    assert health["newestPoint"]["group"] == "vm2"
    assert health["newestPoint"]["id"] == "q-1"
    assert health["rpoSourceTime"] == "2026-11-23T03:00:00Z"  # the group furthest behind
    vm1 = health["groups"][0]
    assert (vm1["lastDurableSeq"], vm1["pointCount"], vm1["cycleOpen"]) == (1, 1, False)
    assert vm1["newestPoint"]["appConsistent"] is True
    assert vm1["journalCapacityBytes"] == 1 << 40


def test_a_full_retention_volume_refuses_the_cycle_and_keeps_the_points(tmp_path: Path) -> None:
    with running(tmp_path, extra=("--capacity", "256Ki", "--first-cycle", "journal")) as mt:
        client, rng = mt.client(), random.Random(5)
        assert client.batch("vm1", 1, random_extents(rng, count=2, max_sectors=8))[0] == 200
        assert client.point("vm1", "p-1", T0)[0] == 201
        before = disk_digests(mt)
        status, answer = client.request(
            "POST", "/v1/groups/vm1/cycles", {"changedBytes": 1 << 20, "extents": 16}
        )
        assert (status, error_code(answer)) == (507, "retention_volume_full"), answer
        assert answer["error"]["neededBytes"] > answer["error"]["availableBytes"]
        big = [Extent.of("os", 0, rng.randbytes(512 << 10))]
        status, answer = client.batch("vm1", 2, big)
        assert (status, error_code(answer)) == (507, "retention_volume_full"), answer
        assert disk_digests(mt) == before
        status, ok = client.request("POST", "/v1/groups/vm1/cycles", {"changedBytes": 4096})
        assert status == 200, ok
        assert [p["id"] for p in client.request("GET", "/v1/groups/vm1/points")[1]["points"]] == [
            "p-1"
        ]
        assert '"message": "retention volume full"' in mt.log_text()


def test_release_needs_a_point_and_closes_the_group(mt: MasterTarget) -> None:
    client = mt.client()
    assert client.batch("vm1", 1, random_extents(random.Random(2)))[0] == 200
    status, answer = client.request("POST", "/v1/groups/vm1/release")
    assert (status, error_code(answer)) == (409, "cycle_open")
    assert client.point("vm1", "p-1", T0)[0] == 201
    status, answer = client.request("POST", "/v1/groups/vm1/release")
    assert status == 200, answer
    assert answer["released"] is True
    assert answer["point"]["id"] == "p-1"
    assert client.request("POST", "/v1/groups/vm1/release")[0] == 200  # idempotent
    status, answer = client.batch("vm1", 2, random_extents(random.Random(3)))
    assert (status, error_code(answer)) == (409, "group_released")
    health = client.request("GET", "/v1/health")[1]
    assert [g["state"] for g in health["groups"]] == ["released", "active"]
    assert client.batch("vm2", 1, random_extents(random.Random(4), disks=("other",)))[0] == 200


def _refused(client: Client) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
        client.request("GET", "/v1/health")


def test_a_client_without_a_certificate_is_refused_at_the_tls_layer(shared: MasterTarget) -> None:
    _refused(Client(shared.port, shared.pki.ca_file, None))


def test_a_client_certificate_from_another_ca_is_refused(
    shared: MasterTarget, tmp_path: Path
) -> None:
    stranger = Pki(tmp_path / "other-ca").client("ps", "process-server")
    _refused(Client(shared.port, shared.pki.ca_file, stranger))
    # The same name signed by the right CA is answered.
    assert shared.client().request("GET", "/v1/health")[0] == 200


def test_logs_are_json_and_hold_no_secret(shared: MasterTarget) -> None:
    shared.client().request("GET", "/v1/health")
    text = shared.log_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(entry["message"] == "listening" for entry in lines)
    requests = [e for e in lines if e["message"] == "request"]
    assert requests
    assert all(e["client"] == "process-server" for e in requests)
    key = shared.server.key.read_text()
    body = "".join(key.splitlines()[1:-1])
    assert "PRIVATE KEY" not in text
    assert body[:40] not in text


def test_cli_refuses_a_locked_journal(mt: MasterTarget) -> None:
    """A second service on the same retention directory cannot take the journal."""
    argv = mt.argv()
    argv[argv.index("--listen") + 1] = f"127.0.0.1:{free_port()}"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "cannot start: group vm1" in done.stderr
    assert "open in another process" in done.stderr
