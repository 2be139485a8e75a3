"""The process server (PS) service: replicates Azure managed disks to master targets.

An HTTPS server with mutual TLS (9443 by default) holding one replication session per
ProtectedVM; each session runs cycles of incremental snapshots
(:mod:`failback.dataplane.source_azure`) into a consistency group of a master target
(:mod:`failback.dataplane.mt`). The API is ``docs/processserver-api.md``.

Public surface::

    build_config(...) -> ProcessServerConfig     every flag validated (ConfigError)
    serve(config, compute_for) -> int            run until SIGTERM (StartupError)
    ProcessServerService, Session                the application and one session
"""

from failback.dataplane.httpkit import StartupError
from failback.dataplane.ps.config import ProcessServerConfig, build_config
from failback.dataplane.ps.service import ProcessServerService, serve
from failback.dataplane.ps.session import Session

__all__ = [
    "ProcessServerConfig",
    "ProcessServerService",
    "Session",
    "StartupError",
    "build_config",
    "serve",
]
