"""The master target's flags, parsed: table-driven, pure (no process, no socket)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from failback.dataplane.mt.config import (
    ConfigError,
    parse_disk_resolver,
    parse_disks,
    parse_duration,
    parse_groups,
    parse_listen,
    parse_size,
)
from failback.dataplane.mt.resolver import BY_ID_ROOT, ByIdResolver, DatastoreResolver

ANY = "0.0.0.0"  # noqa: S104 - what the parser must produce for "every interface"
UUID = "6000C29a-1b2c-3d4e-5f60-718293a4b5c6"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9443", ("127.0.0.1", 9443)),
        ("0.0.0.0:1", (ANY, 1)),
        (":8443", (ANY, 8443)),
        ("mt.example", ("mt.example", 9443)),
        ("[::1]:9443", ("::1", 9443)),
        ("::1", ("::1", 9443)),
    ],
)
def test_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["h:0", "h:65536", "h:port", "h:-1"])
def test_listen_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="the port must be a number from 1 to 65535"):
        parse_listen(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("90m", 5400), ("1d12h", 129600), ("3600s", 3600), ("0s", 0)],
)
def test_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "24", "h", "1 day", "1h 30m", "-1h", "1.5h", "1w"])
def test_duration_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="use a duration like 24h"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("64Mi", 64 << 20),
        ("1Ti", 1 << 40),
        ("500G", 500 * 10**9),
        ("2KiB", 2048),
        ("1K", 1000),
    ],
)
def test_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5Gi", "Gi", "10 Gi", "1Xi"])
def test_size_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="use bytes, or a size like"):
        parse_size(text)


def test_without_groups_every_disk_is_in_default() -> None:
    disks = {"a": Path("/a"), "b": Path("/b")}
    assert parse_groups([], disks) == {"default": ("a", "b")}
    assert parse_groups(["vm1=a", "vm2=b"], disks) == {"vm1": ("a",), "vm2": ("b",)}


def test_without_disks_there_is_no_group() -> None:
    """The service may start with no disk: the operator registers groups at run time."""
    assert parse_disks([]) == {}
    assert parse_groups([], {}) == {}


@pytest.mark.parametrize("name", ["groups.json", "groups.json.tmp"])
def test_a_group_cannot_be_named_like_the_groups_file(name: str) -> None:
    with pytest.raises(ConfigError, match=f"--group {name}=a: the name '{name}' is reserved"):
        parse_groups([f"{name}=a"], {"a": Path("/a")})


def test_a_disk_listed_twice_in_one_group_is_refused() -> None:
    with pytest.raises(ConfigError, match="disk 'a' is already in group 'vm1'"):
        parse_groups(["vm1=a,a,b"], {"a": Path("/a"), "b": Path("/b")})


def test_a_disk_given_by_uuid_alone_can_be_in_a_group() -> None:
    assert parse_groups([f"vm1={UUID},b"], {UUID: None, "b": Path("/b")}) == {"vm1": (UUID, "b")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("by-id", ByIdResolver(BY_ID_ROOT)),
        ("by-id:/host/dev/disk/by-id", ByIdResolver(Path("/host/dev/disk/by-id"))),
        ("datastore:/ds", DatastoreResolver(Path("/ds"))),
        (
            "datastore:/ds,datacenter=datacenter-2",
            DatastoreResolver(Path("/ds"), datacenter="datacenter-2"),
        ),
        (
            "datastore:/d,s,datastore=LocalDS_0,datacenter=ha-datacenter",
            DatastoreResolver(Path("/d,s"), datacenter="ha-datacenter", datastore="LocalDS_0"),
        ),
        ("datastore:/ds,other=1", DatastoreResolver(Path("/ds,other=1"))),
    ],
)
def test_disk_resolver_flag(text: str, expected: Any) -> None:
    resolver = parse_disk_resolver(text)
    assert resolver == expected
    assert parse_disk_resolver(str(resolver)) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "use by-id, by-id:DIR or datastore:DIR"),
        ("serial", "use by-id, by-id:DIR or datastore:DIR"),
        ("datastore:", "use by-id, by-id:DIR or datastore:DIR"),
        ("by-id:", "use by-id or by-id:DIR"),
        ("datastore:,datacenter=dc-1", "name the datastore's directory"),
        ("datastore:/ds,datacenter=", "datacenter= needs one value"),
        ("datastore:/ds,datacenter=a,datacenter=b", "datacenter= needs one value"),
    ],
)
def test_disk_resolver_flag_refused(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=f"--disk-resolver {text}: {words}"):
        parse_disk_resolver(text)


def test_disks_given_by_uuid_alone_or_with_a_path() -> None:
    assert parse_disks([UUID, "d1=/x/d1.flat"]) == {UUID: None, "d1": Path("/x/d1.flat")}


@pytest.mark.parametrize(
    ("specs", "words"),
    [
        (["d3"], "--disk d3: use --disk ID=PATH; only a disk UUID"),
        (["d3="], "--disk d3=: use --disk ID=PATH, or --disk UUID alone"),
        ([UUID, f"{UUID}=/x"], f"disk id '{UUID}' is given twice"),
    ],
)
def test_disks_refused(specs: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        parse_disks(specs)
