"""The ``failback`` command: one entry point per process the product runs.

``failback operator`` runs the controllers, ``failback process-server`` and
``failback master-target`` run the data plane services, ``failback demo`` runs a
failback on the embedded test bed. A verb whose capability has not landed yet
says so and exits with status 3, so scripts never mistake it for success.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from failback import __version__

EXIT_NOT_BUILT = 3


@dataclass(frozen=True)
class Verb:
    name: str
    summary: str
    pending: str | None  # why it cannot run yet, or None when it is built


VERBS: tuple[Verb, ...] = (
    Verb(
        "operator",
        "run the controllers (ProtectedVM, FailbackPlan, MasterTarget, ProcessServer)",
        "the controllers arrive with the API, vSphere, Azure and orchestration issues",
    ),
    Verb(
        "process-server",
        "run the process server: reads changed blocks and forwards them to a master target",
        "the replication data plane is not built yet",
    ),
    Verb(
        "master-target",
        "run the master target: writes target disks and keeps the recovery-point journal",
        "the replication data plane is not built yet",
    ),
    Verb(
        "demo",
        "fail back the sample plan on the embedded test bed (see `make demo`)",
        "the end-to-end failback is not built yet; `make demo` brings up the test bed",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failback",
        description="Bring virtual machines home from Azure to on-premises VMware.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verbs.add_parser(verb.name, help=verb.summary, description=verb.summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verb = next(v for v in VERBS if v.name == args.verb)
    if verb.pending is not None:
        print(f"failback {verb.name}: not available yet: {verb.pending}.", file=sys.stderr)
        return EXIT_NOT_BUILT
    raise AssertionError(f"verb {verb.name} is marked built but has no implementation")


if __name__ == "__main__":
    sys.exit(main())
