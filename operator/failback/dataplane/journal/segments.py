"""Segment file naming. Pure."""

from __future__ import annotations

import re

_NAME = re.compile(r"^seg-([0-9a-f]{16})\.jnl$")
ROLLBACK_INTENT = "ROLLBACK"
"""A file present only while a rollback is in progress (names the target point)."""
LOCK = "journal.lock"


def segment_name(index: int) -> str:
    """The file name of segment ``index``; names sort in index order."""
    if index < 0:
        raise ValueError(f"segment index {index} must be >= 0")
    return f"seg-{index:016x}.jnl"


def parse_segment_name(name: str) -> int | None:
    """The index of a segment file name, or None for any other file."""
    match = _NAME.match(name)
    return int(match.group(1), 16) if match else None


def segment_indexes(names: list[str]) -> list[int]:
    """The segment indexes among ``names``, ascending; other files are ignored."""
    return sorted(i for i in map(parse_segment_name, names) if i is not None)
