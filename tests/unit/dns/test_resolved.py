"""enclave.agent.dns_resolved: the resolvectl command lines and when they are (not) used."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from enclave.agent.dns_resolved import (
    ResolvedRoute,
    resolved_available,
    revert_command,
    route_commands,
    same_netns,
)

IP = ipaddress.IPv4Address("100.64.0.7")


def test_route_commands_set_the_server_and_the_routing_domain() -> None:
    assert route_commands("/usr/bin/resolvectl", "enclave0", IP) == [
        ["/usr/bin/resolvectl", "dns", "enclave0", "100.64.0.7"],
        ["/usr/bin/resolvectl", "domain", "enclave0", "~enclave"],
    ]


def test_route_commands_take_an_ipv6_server() -> None:
    cmds = route_commands("resolvectl", "ens0", ipaddress.IPv6Address("fd00::7"))
    assert cmds[0] == ["resolvectl", "dns", "ens0", "fd00::7"]


def test_revert_drops_the_interface_settings() -> None:
    assert revert_command("resolvectl", "enclave0") == ["resolvectl", "revert", "enclave0"]


def test_no_runtime_directory_means_no_resolved(tmp_path: Path) -> None:
    why = resolved_available(tmp_path / "absent")
    assert why is not None and "not running" in why


def test_same_netns_compares_namespace_inodes(tmp_path: Path) -> None:
    assert same_netns(pid=1) == same_netns(pid=1)  # stable
    assert same_netns(pid=0, proc=tmp_path) is False  # unreadable: treated as different


def test_apply_without_resolved_logs_once_and_changes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    route = ResolvedRoute("enclave0", IP, runtime=tmp_path / "absent")
    with caplog.at_level(logging.INFO, logger="enclave.agent.dns"):
        assert route.apply() is False
    assert not route.applied
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "systemd-resolved is not running" in msgs[0]
    route.revert()  # nothing applied: nothing to undo, nothing run
    assert not route.applied
