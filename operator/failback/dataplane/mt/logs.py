"""The master target's logger (see :mod:`failback.dataplane.logs`)."""

from __future__ import annotations

import logging

from failback.dataplane.logs import JsonFormatter, event
from failback.dataplane.logs import configure as _configure

LOGGER = "failback.mt"

__all__ = ["LOGGER", "JsonFormatter", "configure", "event"]


def configure(verbose: bool = False) -> logging.Logger:
    return _configure(LOGGER, verbose)
