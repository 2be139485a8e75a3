"""The master target's flags, parsed: table-driven, pure (no process, no socket)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from failback.dataplane.mt.config import (
    ConfigError,
    parse_duration,
    parse_groups,
    parse_listen,
    parse_size,
)

ANY = "0.0.0.0"  # noqa: S104 - what the parser must produce for "every interface"


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


def test_a_disk_listed_twice_in_one_group_is_refused() -> None:
    with pytest.raises(ConfigError, match="disk 'a' is already in group 'vm1'"):
        parse_groups(["vm1=a,a,b"], {"a": Path("/a"), "b": Path("/b")})
