"""The master target (MT) service: writes target disks and keeps the recovery-point journal.

A network front for :mod:`failback.dataplane.journal`: an HTTPS server with mutual TLS on
one port (9443 by default, R-ARCH-5), one journal per consistency group. The API is
``docs/master-target-api.md``; the batch body's framing is :mod:`.wire`. Groups come from
the flags and, registered at run time, from ``<retention-dir>/groups.json`` (:mod:`.groups`).

Public surface::

    build_config(...) -> MasterTargetConfig       every flag validated (ConfigError)
    serve(config) -> int                          run until SIGTERM (StartupError)
    MasterTargetService                           the aiohttp application and its journals
    encode_batch(seq, extents) / decode_batch(body)   the wire format (FrameError)
"""

from failback.dataplane.httpkit import StartupError
from failback.dataplane.mt.config import (
    DEFAULT_PORT,
    ConfigError,
    MasterTargetConfig,
    build_config,
)
from failback.dataplane.mt.service import MasterTargetService, serve
from failback.dataplane.mt.wire import MEDIA_TYPE, FrameError, decode_batch, encode_batch

__all__ = [
    "DEFAULT_PORT",
    "MEDIA_TYPE",
    "ConfigError",
    "FrameError",
    "MasterTargetConfig",
    "MasterTargetService",
    "StartupError",
    "build_config",
    "decode_batch",
    "encode_batch",
    "serve",
]
