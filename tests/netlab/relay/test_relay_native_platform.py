"""A real `enclave platform serve` on loopback: its UDP relay forwards DATA in the native thread
(Python sees none of it, the metrics say so), and a revoked system's forwarding is cut although
its ticket and its registration would still be good and its peer keeps sending.

    X, Y enrolled, mutual intent; their ControlClients (driven here) get each other's
    introduction with a relay ticket
    RelayClient X, Y (own UDP sockets) --REGISTER--> relay --> REGISTERED
    X --DATA--> relay --DATA--> Y        (enclave_platform_relay_forwarded_packets_total moves,
                                          ..._python_data_packets_total stays 0)
    `enclave platform systems revoke Y`; X keeps sending: nothing reaches Y any more,
    drops_total{reason="unknown"} counts it
    SIGTERM: the platform shuts down cleanly (the forwarder thread stopped), exit status 0
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from enclave.agent.relay_client import RelayClient
from enclave.proto.wire import MSG_RELAY_DATA, pack_relay_header
from tests.support.control_client import mutual_pair, relay_intros, relay_ticket
from tests.support.platform import Platform
from tests.support.proc import free_port
from tests.support.relay import register_over
from tests.support.wait import wait_for

LO = "127.0.0.1"
Samples = dict[tuple[str, ...], float]


def _scrape(listen: str) -> Samples:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, *(f"{k}={v}" for k, v in sorted(s.labels.items())))] = s.value
    return out


def _register(rc: RelayClient, peer: str, relay: tuple[str, int], ticket: bytes,
              sock: socket.socket) -> int:
    """REGISTER (answering the challenge) until REGISTERED; our channel."""
    channel = register_over(sock, rc, peer, relay, ticket)
    assert channel is not None, f"not registered for {peer}"
    return channel


def _delivered(src: socket.socket, dst: socket.socket, relay: tuple[str, int], channel: int,
               n: int) -> int:
    """Send n DATA from src on `channel` (20 at a time, so dst's socket buffer never
    overflows); how many reached dst (it listens until quiet)."""
    got = 0
    for start in range(0, n, 20):
        burst = min(20, n - start)
        for i in range(burst):
            src.sendto(pack_relay_header(MSG_RELAY_DATA, channel) + b"m%05d" % (start + i)
                       + bytes(500), relay)
        for _ in range(burst):
            try:
                dst.recvfrom(2048)
            except TimeoutError:
                break
            got += 1
    return got


def test_platform_relay_forwards_natively_and_cuts_a_revoked_system(tmp_path: Path) -> None:
    relay_port, metrics_port = free_port(), free_port()
    metrics = f"{LO}:{metrics_port}"
    plat = Platform.loopback(tmp_path, ENCLAVE_PLATFORM_RELAY=f"{LO}:{relay_port}",
                             ENCLAVE_PLATFORM_METRICS=metrics)
    relay = (LO, relay_port)
    sx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (sx, sy):
            s.bind((LO, 0))
            s.settimeout(0.5)
        x, y, xname, yname = mutual_pair(plat, tmp_path)
        mx, my = asyncio.run(asyncio.wait_for(relay_intros(x, y, xname, yname), 60))
        tx, ty = relay_ticket(mx), relay_ticket(my)
        cx = _register(RelayClient(), yname, relay, tx, sx)
        cy = _register(RelayClient(), xname, relay, ty, sy)

        assert _delivered(sx, sy, relay, cx, 200) == 200
        assert _delivered(sy, sx, relay, cy, 200) == 200
        m = _scrape(metrics)
        assert m[("enclave_platform_relay_forwarded_packets_total",)] == 400
        assert m[("enclave_platform_relay_forwarded_bytes_total",)] == 400 * 506
        assert m[("enclave_platform_relay_python_data_packets_total",)] == 0

        res = plat.cli("systems", "revoke", yname)
        assert res.returncode == 0, res.stderr
        # X (and Y) keep sending as a misbehaving agent would; the relay stops forwarding
        wait_for(lambda: _delivered(sx, sy, relay, cx, 20) == 0
                 and _delivered(sy, sx, relay, cy, 20) == 0,
                 timeout=15, interval=0.2, what="the revoked system's forwarding cut")
        m = _scrape(metrics)
        assert m[("enclave_platform_relay_drops_total", "reason=unknown")] >= 40
        assert m[("enclave_platform_relay_python_data_packets_total",)] == 0
        assert _delivered(sx, sy, relay, cx, 50) == 0  # and it stays cut
    finally:
        sx.close()
        sy.close()
        status = plat.stop()
    # SIGTERM: the app's shutdown stops the forwarder thread and the process exits by itself
    assert status == 0 and "Traceback" not in plat.log(), plat.log()[-3000:]
