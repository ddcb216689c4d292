"""Thin wrappers around iproute2/nft/tc and setns(2): the only place netlab touches the system.

Commands run through ``ip netns exec`` / ``ip -n``; every call has a timeout. Sockets are opened
inside a namespace by a short-lived thread that setns()es into it (a socket keeps the namespace
it was created in, whichever thread uses it later).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
CMD_TIMEOUT_S = 20.0

T = TypeVar("T")


class NetlabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


def run(
    cmd: Sequence[str], *, input: str | None = None, timeout: float = CMD_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a setup command; raise NetlabError with its stderr when it fails."""
    try:
        proc = subprocess.run(
            list(cmd), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NetlabError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    except FileNotFoundError as exc:
        raise NetlabError(f"command not found: {cmd[0]}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise NetlabError(f"{' '.join(cmd)} failed ({proc.returncode}): {detail}")
    return proc


def ip_batch(netns: str | None, commands: Sequence[str]) -> None:
    """Run iproute2 commands (one per line, without the leading ``ip``) in ``netns``."""
    if not commands:
        return
    base = ["ip"] if netns is None else ["ip", "-n", netns]
    run([*base, "-batch", "-"], input="\n".join(commands) + "\n")


def exec_argv(netns: str, cmd: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *cmd]


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def add_netns(name: str) -> None:
    run(["ip", "netns", "add", name])


def netns_pids(name: str) -> list[int]:
    try:
        out = run(["ip", "netns", "pids", name]).stdout
    except NetlabError:
        return []
    return [int(tok) for tok in out.split() if tok.isdigit()]


def kill_netns_processes(name: str) -> None:
    """SIGKILL every process whose network namespace is ``name`` (never ourselves)."""
    me = os.getpid()
    for pid in netns_pids(name):
        if pid == me:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def delete_netns(name: str) -> None:
    """Kill what runs inside, then delete. Missing namespaces are fine."""
    if name not in list_netns():
        return
    kill_netns_processes(name)
    try:
        run(["ip", "netns", "del", name])
    except NetlabError:
        if name in list_netns():
            raise


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def call_in_netns(netns: str, fn: Callable[[], T], timeout: float = CMD_TIMEOUT_S) -> T:
    """Run ``fn()`` in a fresh thread that has joined ``netns``; return its result."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetlabError(f"call in netns {netns} did not finish within {timeout}s")
    if error:
        raise error[0]
    return result[0]


def socket_in_netns(
    netns: str,
    family: int = socket.AF_INET,
    type: int = socket.SOCK_DGRAM,
    proto: int = 0,
) -> socket.socket:
    return call_in_netns(netns, lambda: socket.socket(family, type, proto))


def write_sysctls(netns: str, values: dict[str, str]) -> None:
    """Set sysctls (dotted names, e.g. ``net.ipv4.ip_forward``) inside ``netns``.

    /proc/sys/net resolves to the namespace of the thread that opens the file.
    """

    def body() -> None:
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)

    if values:
        call_in_netns(netns, body)
