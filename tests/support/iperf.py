"""iperf3 between lab hosts (each process in its host's namespace), for tests that need a
saturating TCP flow.

    pytestmark = [..., NEEDS_IPERF3]                           skip where iperf3 is missing
    received = iperf3_received(a.host, b.host, b.ip, PORT, 2)  bytes one stream a -> b delivered
    with iperf3_server(b.host, b.ip, PORT):                    a one-test server, killed at exit
        end = iperf3_end(iperf3_client(a.host, b.ip, PORT, "-t", "2"), timeout=32)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from enclave.netlab import Host

NEEDS_IPERF3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")


@contextmanager
def iperf3_server(host: Host, ip: str, port: int) -> Iterator[None]:
    """`iperf3 -s -1` (one test) bound to ip:port in host's namespace, given half a second to
    listen; killed when the block ends."""
    server = host.popen(["iperf3", "-s", "-1", "-B", ip, "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield
    finally:
        server.kill()
        server.wait(10)


def iperf3_client(host: Host, ip: str, port: int, *args: str) -> subprocess.Popen[str]:
    """`iperf3 -c ip -p port ARGS -J` from host's namespace (JSON report on stdout)."""
    return host.popen(["iperf3", "-c", ip, "-p", str(port), *args, "-J"],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def iperf3_end(client: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The client's "end" summary, once it exits 0 (within timeout seconds)."""
    out, _ = client.communicate(timeout=timeout)
    assert client.returncode == 0, out[-2000:]
    end: dict[str, Any] = json.loads(out)["end"]
    return end


def iperf3_received(src: Host, dst: Host, dst_ip: str, port: int, seconds: int) -> int:
    """Bytes one iperf3 TCP stream src -> dst_ip (a server on dst) delivered in `seconds`."""
    with iperf3_server(dst, dst_ip, port):
        end = iperf3_end(iperf3_client(src, dst_ip, port, "-t", str(seconds)), seconds + 30)
    return int(end["sum_received"]["bytes"])
