"""Command-line tools (kubectl, helm), the real binaries, bound to the test bed's API server."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed.procs import TestbedError


@dataclass(frozen=True)
class Tool:
    """A command-line tool bound to one kubeconfig (kubectl, helm).

    ``run`` raises with the tool's own error text when ``check`` is true, so a test
    failure shows what the tool said.
    """

    binary: Path
    kubeconfig: Path
    home: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECACHEDIR": str(self.home / "kube-cache"),
        }

    def run(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise TestbedError(
                f"`{self.binary.name} {' '.join(args)}` failed with status {proc.returncode}:\n"
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc
