import shutil
import subprocess
from pathlib import Path

import docker
import pytest

from harness.doctor import (
    check_docker,
    check_netns,
    check_network_tools,
    check_suite_programs,
    check_tap,
    check_xen,
    run_checks,
)
from harness.xen import lab
from harness.xen.dom0 import LocalDom0


def test_every_finding_that_is_not_ok_says_how_to_fix_it() -> None:
    findings = run_checks()
    assert {f.check for f in findings} >= {"docker engine", "qemu", "kvm", "tap devices"}
    for finding in findings:
        assert finding.status in ("ok", "warn", "missing")
        assert finding.detail
        if finding.status != "ok":
            assert finding.fix, finding


def test_docker_check_agrees_with_the_engine(docker_client: docker.DockerClient) -> None:
    finding = check_docker()
    assert finding.status == "ok"
    assert str(docker_client.version()["Version"]) in finding.detail


def test_tap_and_namespace_checks_leave_nothing_behind() -> None:
    before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    check_tap()
    check_netns()
    after_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ubdoc" not in after_links and after_links.count("\n") == before.count("\n")
    assert "unibench-doctor" not in namespaces


def test_missing_network_tools_are_named_with_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_which = shutil.which

    def which(tool: str) -> str | None:
        return None if tool == "iperf3" else real_which(tool)

    monkeypatch.setattr(shutil, "which", which)
    finding = check_network_tools()
    assert finding.status == "missing"
    assert "iperf3" in finding.detail and "ethtool" not in finding.detail
    assert finding.fix == "apt-get install iperf3"


def test_missing_suite_peers_are_named_with_their_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_which = shutil.which

    def which(tool: str) -> str | None:
        return None if tool in ("wrk", "named") else real_which(tool)

    monkeypatch.setattr(shutil, "which", which)
    finding = check_suite_programs()
    assert finding.status == "missing"
    assert "wrk" in finding.detail and "bind9" in finding.detail and "nginx" not in finding.detail
    assert "dns and web suite" in finding.detail
    assert finding.fix == "apt-get install bind9 wrk"


def test_the_xen_check_says_where_xen_targets_will_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if LocalDom0.present():
        pytest.skip("this host is a Xen dom0")
    monkeypatch.setattr(lab, "STATE_DIR", tmp_path)  # no lab is up, whatever runs elsewhere
    finding = check_xen()
    assert finding.status == "ok" and "start the Xen lab" in finding.detail
    assert "bench lab xen up" in finding.fix
