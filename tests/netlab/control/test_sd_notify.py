"""`enclave up` speaks the systemd notify protocol: READY=1 once up, STOPPING=1 on SIGTERM.

A real platform process and a real agent; the "service manager" is an AF_UNIX datagram socket
bound in the test's temp dir and handed to the agent as $NOTIFY_SOCKET.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from tests.support.agent import AgentProc
from tests.support.platform import Platform
from tests.support.proc import enclave, local_popen, stop
from tests.support.wait import wait_for


def _receive(sock: socket.socket, want: str, timeout: float) -> list[str]:
    """Datagrams until one line is ``want`` (sd_notify messages are newline-separated)."""
    sock.settimeout(timeout)
    got: list[str] = []
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            raise AssertionError(f"no {want} within {timeout}s (got {got!r})") from None
        got.append(data.decode())
        if want in data.decode().splitlines():
            return got


def test_up_notifies_ready_and_stopping(tmp_path: Path) -> None:
    plat = Platform.loopback(tmp_path)
    agent = AgentProc.local(tmp_path, "agent")
    notify_path = tmp_path / "notify.sock"
    proc: subprocess.Popen[bytes] | None = None
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        try:
            agent.enrol(plat.token())
            with open(agent.log_path, "ab") as log:
                proc = local_popen(["env", f"NOTIFY_SOCKET={notify_path}",
                                    *enclave("up", "--state", str(agent.state),
                                             "--port", str(agent.port), "--no-tap",
                                             "--no-portmap")],
                                   stdout=log, stderr=subprocess.STDOUT)
            _receive(notify, "READY=1", timeout=20)
            assert proc.poll() is None
            # ready means ready: the local API answers at once
            assert agent.cmd("status", "--json").returncode == 0, agent.log()
            proc.send_signal(signal.SIGTERM)
            got = _receive(notify, "STOPPING=1", timeout=10)
            assert all("READY=1" not in g.splitlines() for g in got)  # sent once
            assert proc.wait(timeout=10) == 0, agent.log()
        finally:
            if proc is not None:
                stop(proc)
            plat.stop()


def test_up_without_notify_socket_is_quiet(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET nobody listens on must not stop the agent (sd_notify is best effort)."""
    plat = Platform.loopback(tmp_path)
    agent = AgentProc.local(tmp_path, "agent")
    proc: subprocess.Popen[bytes] | None = None
    try:
        agent.enrol(plat.token())
        with open(agent.log_path, "ab") as log:
            proc = local_popen(["env", f"NOTIFY_SOCKET={tmp_path / 'nobody.sock'}",
                                *enclave("up", "--state", str(agent.state),
                                         "--port", str(agent.port), "--no-tap", "--no-portmap")],
                               stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: agent.cmd("status", "--json").returncode == 0 or proc.poll() is not None,
                 timeout=20, what="agent local API")
        assert proc.poll() is None, agent.log()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, agent.log()
    finally:
        if proc is not None:
            stop(proc)
        plat.stop()
