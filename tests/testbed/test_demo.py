"""`make demo`: its live views, and its core run against the test bed (the bring-up of
`python -m testbed up` is tested in test_testbed_cli.py)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from testbed import demo
from testbed import operator as operator_
from testbed.azure.process import AzureEmulator
from testbed.kube import Kube
from testbed.progress import STEP_HEADER, LiveView, Row, plan_rows
from testbed.scenario import Scenario
from testbed.tools import Tool
from testbed.vcsim import VCenter, plain_session


def _screen(written: str) -> list[str]:
    """What a terminal shows after ``written``: the few sequences LiveView uses."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[(\d*)([AK])|(\r)|(\n)|([^\x1b\r\n]+)", written):
        count, code, cr, nl, text = token
        if code == "A":
            row = max(0, row - int(count or 1))
        elif code == "K":
            lines[row] = ""
        elif cr:
            col = 0
        elif nl:
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        else:
            lines[row] = lines[row][:col] + text
            col += len(text)
    return lines


def test_live_view_redraws_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "40")
    out = io.StringIO()
    out.write("before\n")
    view = LiveView(out, tty=True)
    view.show([Row("a", "a 1"), Row("b", "b 1"), Row("c", "c 1")])
    view.show([Row("a", "a 2"), Row("b", "b 2")])  # a shorter frame clears the old line
    assert _screen(out.getvalue()) == ["before", "a 2", "b 2", "", ""]
    view.done()
    out.write("after\n")
    view.show([Row("a", "a 3")])
    assert _screen(out.getvalue()) == ["before", "a 2", "b 2", "after", "a 3", ""]


def test_live_view_fits_a_small_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    monkeypatch.setenv("LINES", "6")
    out = io.StringIO()
    LiveView(out, tty=True).show([Row(str(i), f"row {i} " + "x" * 30) for i in range(10)])
    screen = _screen(out.getvalue())
    assert len(screen) == 6  # five rows and the cursor's line
    assert screen[2] == "  ... 6 more rows"
    assert all(len(line) <= 29 for line in screen)


def test_log_view_appends_only_what_changed() -> None:
    out = io.StringIO()
    view = LiveView(out, tty=False)
    view.show([Row("a", "a Running 1.2s", change="Running"), Row("b", "b Pending")])
    view.show([Row("a", "a Running 1.7s", change="Running"), Row("b", "b Pending")])
    view.show([Row("a", "a Succeeded 2s", change="Succeeded"), Row("b", "b Pending")])
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == ["a Running 1.2s", "b Pending", "a Succeeded 2s"]
    assert "\x1b" not in out.getvalue()


def test_plan_view_folds_finished_and_waiting_vms() -> None:
    def steps(vm: str, group: str, state: str) -> list[dict[str, str]]:
        return [
            {"name": n, "group": group, "vm": vm, "state": state, "startTime":
             "2026-01-01T00:00:00Z", "endTime": "2026-01-01T00:00:02Z"}
            for n in ("fence", "restore")
        ]  # fmt: skip

    plan = {
        "metadata": {"name": "p", "namespace": "ns"},
        "status": {
            "phase": "FailingOver",
            "currentStep": "b fence",
            "activeSite": "Mixed",
            "steps": [
                *steps("a", "g1", "Succeeded"),
                {"name": "fence", "group": "g2", "vm": "b", "state": "Running"},
                {"name": "restore", "group": "g2", "vm": "b", "state": "Pending"},
                *steps("c", "g3", "Pending"),
            ],
        },
    }
    texts = [r.text for r in plan_rows(plan)]
    assert texts[0] == "FailbackPlan ns/p: FailingOver, VMs on Mixed, step b fence"
    assert texts[1] == STEP_HEADER
    assert re.match(r"\s+g1\s+a\s+2 steps\s+Succeeded\s+4s", texts[2])
    assert re.match(r"\s+g2\s+b\s+fence\s+Running", texts[3])
    assert re.match(r"\s+g3\s+c\s+2 steps\s+Pending", texts[5])
    assert len(plan_rows(plan, compact=False)) == 2 + 6


@pytest.mark.testbed
def test_demo_fails_back_and_proves_it(
    namespace: str,
    kubectl: Tool,
    crds_installed: list[str],
    kube: Kube,
    vcenter: VCenter,
    azure_emulator: AzureEmulator,
    tmp_path: Path,
) -> None:
    """The demo's core, in a log (not a terminal), on two of its machines."""
    operator_.install_into(kubectl, namespace)
    machines = [m for m in demo.MACHINES if m.name in ("batch-01", "web-01")]
    out = io.StringIO()
    with plain_session(vcenter) as si:
        sc = Scenario(tmp_path / "sc", namespace, kubectl, azure_emulator, vcenter, si,
                      plan=demo.PLAN)  # fmt: skip
        run = demo.Demo(sc, kube, tmp_path, out, tty=False, timeout=90)
        try:
            run.play(machines)
        except BaseException:
            print(out.getvalue())  # noqa: T201 - what the demo showed, with the failure
            raise
        finally:
            run.stop()
    text = out.getvalue()
    assert "\x1b[" not in text
    assert "applications [batch-01] -> frontends [web-01]" in text
    assert re.search(r"batch-01 +Protected +AzureToOnPrem Replicating", text)
    assert STEP_HEADER in text
    for vm, group in (("batch-01", "applications"), ("web-01", "frontends")):
        step = "(fence|final-sync|restore|attach|power-on)"
        assert re.search(rf"{group} +{vm} +{step} +(Running|Succeeded) ", text), vm
        assert re.search(rf"{group} +{vm} +7 steps +Succeeded", text), vm
        assert re.search(rf"{group}/{vm} +power-on +Succeeded", text), vm  # plan status
        assert re.search(rf"{vm} +runs on-premises as VM .*: poweredOn", text), vm
        assert re.search(rf"{vm} +1 disk\(s\), 4 MiB: equal \(sha256", text), vm
        assert re.search(rf"{vm} +Azure ran until .*, on-premises from .*: never both", text), vm
    assert f"$ failback plan approve {demo.PLAN} -n {namespace}" in text
    assert "The SRE's decision point" in text
    # Resynchronizing too: the VM the failback created has no change tracking in vcsim,
    # so each of its reverse cycles is a full one (the demo waits for either).
    assert re.search(r"web-01 +Protected +OnPremToAzure (Replicating|Resynchronizing)", text)
    assert "  phase:        Completed" in text  # `failback plan status`
