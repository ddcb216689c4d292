"""Throughput of a birthday-probed direct path with the real product (platform + 2 agents).

    sudo python3 bench/birthday_throughput.py            # iperf3 5 s each way over the overlay

A netlab with a platform, `enclave up` agents pr1 (port-restricted NAT) and sy1 (symmetric NAT);
once both show direct-udp (the birthday run won), iperf3 single-stream TCP over the overlay
sy1 -> pr1 and pr1 -> sy1.  The symmetric side's packets pass its winning socket's loopback
forwarder (enclave/agent/birthday_io.py, Python per packet); the figures show what that costs.
Prints Gbit/s and TCP retransmits per direction and both sides' paths. Needs root and iperf3.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enclave.netlab import NatType, Site, Topology
from tests.support.iperf import iperf3_client, iperf3_end, iperf3_server
from tests.support.lab import Agent, platform_lab, start_all
from tests.support.wait import wait_for

IPERF_PORT = 5201  # iperf3's own default


def _peer(agent: Agent, name: str) -> dict[str, Any]:
    return next((p for p in agent.peers() if p["name"] == name), {})


def _iperf(client: Agent, server: Agent, seconds: int) -> dict[str, Any]:
    with iperf3_server(server.host, server.overlay_ip, IPERF_PORT):
        end = iperf3_end(iperf3_client(client.host, server.overlay_ip, IPERF_PORT,
                                       "-t", str(seconds)), seconds + 20)
    return {"gbit_s": round(end["sum_received"]["bits_per_second"] / 1e9, 3),
            "retransmits": end["sum_sent"].get("retransmits")}


def main() -> int:
    topo = Topology(sites=[Site("pr", nat=NatType.PORT_RESTRICTED),
                           Site("sy", nat=NatType.SYMMETRIC)], public_hosts=["plat"])
    with platform_lab(topo, Path(tempfile.mkdtemp()), ["pr1", "sy1"]) as (_lab, _p, agents):
        easy, hard = agents["pr1"], agents["sy1"]
        start_all(agents.values())
        easy.intent("add", hard.name)
        hard.intent("add", easy.name)
        wait_for(lambda: _peer(easy, hard.name).get("path") == "direct-udp"
                 and _peer(hard, easy.name).get("path") == "direct-udp", timeout=30,
                 what="direct-udp on both sides")
        out = {"symmetric->port-restricted": _iperf(hard, easy, 5),
               "port-restricted->symmetric": _iperf(easy, hard, 5),
               "paths": {a.host.name: {k: _peer(a, b.name).get(k) for k in ("path", "endpoint")}
                         for a, b in ((easy, hard), (hard, easy))}}
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
