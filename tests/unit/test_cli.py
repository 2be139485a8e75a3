"""The `failback` command lists its verbs and refuses, loudly, the ones not built yet."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from failback import cli

VERBS = ("operator", "process-server", "master-target", "demo")


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_unbuilt_verb_says_so_and_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every verb is built today: one that is not yet is made up to check the refusal.
    pending = cli.Verb("fail-forward", "not a verb", "it is not built")
    monkeypatch.setattr(cli, "VERBS", (*cli.VERBS, pending))
    assert cli.main(["fail-forward"]) == cli.EXIT_NOT_BUILT
    err = capsys.readouterr().err
    assert "failback fail-forward: not available yet: it is not built." in err


def test_demo_says_it_runs_from_a_source_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo"]) == cli.EXIT_DEMO_ELSEWHERE == 2
    err = capsys.readouterr().err
    assert "source checkout" in err
    assert "`make demo`" in err


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fail-forward"])
    assert exit_.value.code == 2
    assert "invalid choice: 'fail-forward'" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    """The `failback` entry point of pyproject.toml is installed next to the interpreter."""
    script = Path(sys.executable).parent / "failback"
    assert script.is_file(), f"{script} is missing: install the project with `make venv`"
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0
    assert all(verb in helped.stdout for verb in VERBS)
    refused = subprocess.run([script, "demo"], capture_output=True, text=True, check=False)
    assert refused.returncode == cli.EXIT_DEMO_ELSEWHERE
    assert "`make demo`" in refused.stderr


def _operator_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["operator", *argv])


def test_operator_without_a_namespace_says_how_to_give_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("FAILBACK_NAMESPACES", "POD_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["operator"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "failback operator: error: no namespace to serve: pass --namespace NAME" in err


@pytest.mark.parametrize(
    ("argv", "environ", "namespaces"),
    [
        (["-n", "a", "--namespace", "b", "-n", "a"], {}, ("a", "b")),
        ([], {"FAILBACK_NAMESPACES": "x, y,,"}, ("x", "y")),
        ([], {"POD_NAMESPACE": "failback-system"}, ("failback-system",)),
        (["-n", "flag"], {"FAILBACK_NAMESPACES": "env", "POD_NAMESPACE": "pod"}, ("flag",)),
    ],
)
def test_operator_namespaces_come_from_flags_then_environment(
    argv: list[str], environ: dict[str, str], namespaces: tuple[str, ...]
) -> None:
    settings = cli.operator_settings(_operator_args(*argv), environ)
    assert settings.namespaces == namespaces


def test_operator_settings_carry_every_flag() -> None:
    args = _operator_args(
        "-n", "ns", "--peering", "p", "--standalone", "--priority", "7",
        "--liveness", "http://127.0.0.1:8080/healthz", "--recheck-interval", "5",
    )  # fmt: skip
    settings = cli.operator_settings(args, {"POD_NAME": "failback-operator-abc"})
    assert settings.peering == "p"
    assert settings.standalone is True
    assert settings.priority == 7
    assert settings.liveness_endpoint == "http://127.0.0.1:8080/healthz"
    assert settings.recheck_interval == 5.0
    assert settings.instance == "failback-operator-abc"


def test_operator_refuses_a_non_positive_recheck_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["operator", "-n", "ns", "--recheck-interval", "0"])
    assert exit_.value.code == 2
    assert "--recheck-interval must be positive, not 0" in capsys.readouterr().err


def test_operator_azure_and_vsphere_flags(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    args = _operator_args(
        "-n", "ns", "--azure-arm-endpoint", "https://arm.example", "--azure-authority",
        "https://login.example", "--azure-ca-file", str(ca), "--azure-writes-per-hour", "600",
        "--vsphere-max-concurrency", "2",
    )  # fmt: skip
    settings = cli.operator_settings(args, {})
    assert settings.azure_arm_endpoint == "https://arm.example"
    assert settings.azure_authority == "https://login.example"
    assert settings.azure_ca_file == str(ca)
    assert settings.azure_writes_per_hour == 600
    assert settings.vsphere_max_concurrency == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--azure-ca-file", "/nonexistent/ca.pem"],
            "--azure-ca-file /nonexistent/ca.pem: no such",
        ),
        (["--azure-writes-per-hour", "0"], "--azure-writes-per-hour must be positive, not 0"),
        (["--vsphere-max-concurrency", "0"], "--vsphere-max-concurrency must be at least 1"),
    ],
)
def test_operator_refuses_bad_flags(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["operator", "-n", "ns", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------- master-target


def _mt_argv(tmp_path: Path, *extra: str) -> list[str]:
    for name in ("tls.crt", "tls.key", "ca.crt", "d1.flat", "d2.flat"):
        (tmp_path / name).write_bytes(b"x")
    return [
        "master-target", "--listen", "127.0.0.1:9443", "--cert", str(tmp_path / "tls.crt"),
        "--key", str(tmp_path / "tls.key"), "--client-ca", str(tmp_path / "ca.crt"),
        "--retention-dir", str(tmp_path / "retention"),
        "--disk", f"d1={tmp_path / 'd1.flat'}", "--disk", f"d2={tmp_path / 'd2.flat'}", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "127.0.0.1:99999"], "--listen 127.0.0.1:99999: the port must be"),
        (["--disk", "d3"], "--disk d3: use --disk ID=PATH"),
        (["--disk", "a/b=/x"], "the id 'a/b' must be 1-128 letters"),
        (["--disk", "d1=/x"], "disk id 'd1' is given twice"),
        (["--disk", "d3=/nonexistent/d3"], "--disk d3=/nonexistent/d3: no such file or device"),
        (["--group", "vm1=d1,d9"], "disk 'd9' is not a --disk (known: d1, d2)"),
        (["--group", "vm1=d1", "--group", "vm2=d1,d2"], "disk 'd1' is already in group 'vm1'"),
        (["--group", "vm1=d1"], "disk 'd2' is in no --group"),
        (["--group", "VM_1=d1,d2"], "the name 'VM_1' must be lower-case"),
        (["--group", "vm1"], "--group vm1: use --group NAME=DISKID,DISKID"),
        (["--capacity", "lots"], "--capacity lots: use bytes, or a size like 64Mi"),
        (["--capacity", "0"], "--capacity 0: must be more than 0 bytes"),
        (["--retention", "1 day"], "--retention 1 day: use a duration like 24h"),
        (["--cert", "/nonexistent/tls.crt"], "--cert /nonexistent/tls.crt: no such file"),
    ],
)
def test_master_target_refuses_bad_flags(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(_mt_argv(tmp_path, *extra))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "failback master-target: error: " in err
    assert message in err


def test_master_target_needs_its_files_and_a_disk(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["master-target", "--listen", "127.0.0.1:9443"])
    assert exit_.value.code == 2
    assert "the following arguments are required: --cert, --key, --client-ca" in (
        capsys.readouterr().err
    )


def test_master_target_with_an_unusable_certificate_cannot_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(_mt_argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "failback master-target: cannot start: cannot use --cert" in err


def _ps_argv(tmp_path: Path, *extra: str) -> list[str]:
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_bytes(b"x")
    creds = tmp_path / "azure"
    creds.mkdir(exist_ok=True)
    for key in ("tenantId", "clientId", "clientSecret"):
        (creds / key).write_text("x")
    return [
        "process-server", "--listen", "127.0.0.1:9443", "--cert", str(tmp_path / "tls.crt"),
        "--key", str(tmp_path / "tls.key"), "--client-ca", str(tmp_path / "ca.crt"),
        "--state-dir", str(tmp_path / "state"), "--azure-credentials", str(creds), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "127.0.0.1:0"], "--listen 127.0.0.1:0: the port must be"),
        (["--max-queue", "lots"], "--max-queue lots: use bytes, or a size like 64Mi"),
        (["--batch-size", "1000"], "--batch-size 1000: a multiple of 512 bytes"),
        (["--batch-size", "128Mi"], "--max-queue 64Mi: must hold at least one batch"),
        (["--compression-level", "20"], "--compression-level 20: 0 (off) to 19"),
        (["--snapshot-rate", "often"], "--snapshot-rate often: use COUNT/DURATION"),
        (["--datastore", "LocalDS_0"], "--datastore LocalDS_0: use --datastore NAME=DIR"),
        (["--datastore", "ds=/nonexistent"], "/nonexistent is not a directory"),
        (["--mt-ca", "/nonexistent/ca.crt"], "--mt-ca /nonexistent/ca.crt: no such file"),
        (["--control-plane", "https://:x"], "--control-plane https://:x"),
        (["--azure-poll-interval", "0"], "--azure-poll-interval must be positive"),
    ],
)
def test_process_server_flag_errors_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(_ps_argv(tmp_path, *extra))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("failback process-server: error: ")
    assert message in err


def test_process_server_credentials_are_checked_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _ps_argv(tmp_path)
    (tmp_path / "azure" / "clientSecret").unlink()
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert "the Secret has no key clientSecret" in capsys.readouterr().err
    argv = _ps_argv(tmp_path, "--vcenter-credentials", str(tmp_path / "nope"))
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert "--vcenter-credentials " in capsys.readouterr().err
