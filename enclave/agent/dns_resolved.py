"""Route `~enclave` to the agent's DNS server through systemd-resolved, and take it back on exit.

    resolved_available()  systemd-resolved runs (/run/systemd/resolve exists) and resolvectl is
                          installed, and the agent runs in the init process's network namespace
                          (an interface name in another namespace would name a different link)
    route_commands()      resolvectl dns IFACE IP ; resolvectl domain IFACE ~enclave
    revert_command()      resolvectl revert IFACE

The command lines are pure (unit-tested); ResolvedRoute runs them (blocking: call it off the
event loop) and logs once, at info, when systemd-resolved is not there.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("enclave.agent.dns")

RESOLVED_RUNTIME = Path("/run/systemd/resolve")
ROUTING_DOMAIN = "~enclave"
TIMEOUT = 5.0


def route_commands(resolvectl: str, interface: str,
                   address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[list[str]]:
    """The resolvectl calls that send every `*.enclave` lookup to `address` on `interface`."""
    return [[resolvectl, "dns", interface, str(address)],
            [resolvectl, "domain", interface, ROUTING_DOMAIN]]


def revert_command(resolvectl: str, interface: str) -> list[str]:
    """The resolvectl call that drops what route_commands set on `interface`."""
    return [resolvectl, "revert", interface]


def same_netns(pid: int = 1, proc: Path = Path("/proc")) -> bool:
    """True when this process shares the network namespace of `pid` (the init process)."""
    try:
        return os.stat(proc / "self/ns/net").st_ino == os.stat(proc / f"{pid}/ns/net").st_ino
    except OSError:
        return False


def resolved_available(runtime: Path = RESOLVED_RUNTIME) -> str | None:
    """Why systemd-resolved cannot be told about `~enclave` here, or None when it can."""
    if not runtime.is_dir():
        return f"systemd-resolved is not running ({runtime} does not exist)"
    if shutil.which("resolvectl") is None:
        return "resolvectl is not installed"
    if not same_netns():
        return "the agent runs in another network namespace than systemd-resolved"
    return None


class ResolvedRoute:
    """Applies and reverts the `~enclave` route for one interface (blocking calls)."""

    def __init__(self, interface: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 runtime: Path = RESOLVED_RUNTIME) -> None:
        self.interface = interface
        self.address = address
        self.runtime = runtime
        self.applied = False

    def apply(self) -> bool:
        why_not = resolved_available(self.runtime)
        if why_not is not None:
            log.info("dns: not routing ~enclave through systemd-resolved: %s", why_not)
            return False
        exe = shutil.which("resolvectl") or "resolvectl"
        for cmd in route_commands(exe, self.interface, self.address):
            if not _run(cmd):
                self.revert_now(exe)
                return False
        self.applied = True
        log.info("dns: systemd-resolved sends ~enclave to %s on %s", self.address,
                 self.interface)
        return True

    def revert(self) -> None:
        if self.applied:
            self.revert_now(shutil.which("resolvectl") or "resolvectl")

    def revert_now(self, exe: str) -> None:
        _run(revert_command(exe, self.interface))
        self.applied = False


def _run(cmd: list[str]) -> bool:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("dns: %s failed: %s", " ".join(cmd), exc)
        return False
    if done.returncode != 0:
        log.warning("dns: %s failed: %s", " ".join(cmd), done.stderr.strip())
        return False
    return True
