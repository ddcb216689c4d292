"""How fast the platform's native UDP relay forwarder moves DATA on loopback, and its CPU per GB.

    python3 bench/relay_udp_forward.py [--seconds 3] [--size 1400] [--gso 0|N]

    RelayServer (its RelayForwarder thread, enclave-relay) on 127.0.0.1, two RelayClients
    registered with minted tickets; X sends DATA of --size bytes with recvmmsg/sendmmsg
    batches of 64 (--gso N: as UDP GSO runs of N datagrams, as the agent's fast path does),
    Y takes them with recvmmsg. Reported: datagrams/s and Gbit/s that reached Y, and the
    enclave-relay thread's CPU (/proc/self/task/TID/stat) per GB forwarded.

All three run in this process on a shared machine: the figures move with its load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import threading
import time
from array import array
from pathlib import Path

from enclave._fastpath import UdpBatchIO
from enclave.agent.relay_client import RelayClient
from enclave.platform.relay import RelayCore, RelayServer, mint_ticket
from enclave.proto.wire import MSG_RELAY_DATA, pack_relay_header

KEY = bytes(range(32))
LO = "127.0.0.1"


def _thread_cpu(name: str) -> float:
    for task in Path("/proc/self/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


async def _register(rc: RelayClient, sock: socket.socket, me: str, peer: str,
                    relay: tuple[str, int]) -> int:
    loop = asyncio.get_running_loop()
    ticket = mint_ticket(KEY, me, peer, int(time.time()) + 600)
    out = rc.add(peer, relay, ticket, time.time())
    for _ in range(10):
        for data, dst in out:
            sock.sendto(data, dst)
        data, src = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
        r = rc.receive(data, (str(src[0]), int(src[1])), time.time())
        assert r is not None
        if r.kind in ("registered", "refreshed"):
            path = rc.path_for(peer)
            route = None if path is None else rc.route(path)
            assert route is not None
            return route[1]
        out = r.send
    raise SystemExit("not registered")


def _sender(sock: socket.socket, relay: tuple[str, int], channel: int, size: int, gso: int,
            until: float, sent: list[int]) -> None:
    one = pack_relay_header(MSG_RELAY_DATA, channel) + os.urandom(size - 8)
    per = max(1, gso)
    buf = bytearray(one * per * 64)
    io = UdpBatchIO()
    offsets = array("I", [i * per * size for i in range(64)])
    lengths = array("I", [per * size] * 64)
    sock.setblocking(True)
    while time.monotonic() < until:
        n = io.send(sock.fileno(), buf, offsets, lengths, relay, gso_size=size if gso else 0)
        sent[0] += n * per


def _receiver(sock: socket.socket, size: int, until: float, got: list[int]) -> None:
    io = UdpBatchIO()
    slot = 65536
    buf = bytearray(64 * slot)
    offsets = array("I", [i * slot for i in range(64)])
    sizes = array("I", [slot] * 64)
    lengths = array("I", [0] * 64)
    while time.monotonic() < until + 0.5:
        n = io.recv(sock.fileno(), buf, offsets, sizes, lengths, timeout=0.2)
        for i in range(n):
            got[0] += 1 if lengths[i] <= size else (lengths[i] + size - 1) // size
            got[1] += lengths[i]


async def main(seconds: float, size: int, gso: int) -> None:
    server = RelayServer(RelayCore(KEY))
    relay = await server.start(LO, 0)
    sx, sy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (sx, sy):
            s.bind((LO, 0))
            s.setblocking(False)
            for opt in (32, 33):  # SO_SNDBUFFORCE, SO_RCVBUFFORCE (root)
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
                except OSError:
                    pass
        cx = await _register(RelayClient(), sx, "XXXXX", "YYYYY", relay)
        await _register(RelayClient(), sy, "YYYYY", "XXXXX", relay)
        sy.setsockopt(socket.SOL_UDP, 104, 1)  # UDP_GRO: take GSO runs whole
        until = time.monotonic() + seconds
        sent, got = [0], [0, 0]
        cpu0, t0 = _thread_cpu("enclave-relay"), time.monotonic()
        threads = [threading.Thread(target=_sender, args=(sx, relay, cx, size, gso, until, sent)),
                   threading.Thread(target=_receiver, args=(sy, size, until, got))]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.1)
        wall = time.monotonic() - t0
        cpu = _thread_cpu("enclave-relay") - cpu0
        c = server.forwarder.counters() if server.forwarder else {}
    finally:
        server.close()
        sx.close()
        sy.close()
    gb = got[1] / 1e9
    wait_mean = int(c.get("aqm_wait_us", 0)) // max(1, int(c.get("aqm_timed", 0)))
    print(f"size={size} gso={gso} sent={sent[0]} received={got[0]} "
          f"pps={got[0] / seconds:.0f} gbit_s={8 * gb / seconds:.2f} relay_cpu_s={cpu:.2f} "
          f"relay_cpu_s_per_gb={cpu / gb if gb else 0:.2f} wall={wall:.1f} "
          f"forwarded={c.get('forwarded')} gro_runs={c.get('gro_runs')} "
          f"gso_sends={c.get('gso_sends')} drop_send={c.get('drop_send')} "
          f"drop_rate={c.get('drop_rate')} drop_aqm={c.get('drop_aqm')} "
          f"queue_wait_mean_us={wait_mean} "
          f"queue_wait_max_us={c.get('aqm_wait_max_us')} "
          f"python_data={server.python_data}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--gso", type=int, default=0, help="datagrams per UDP GSO run (0: none)")
    args = ap.parse_args()
    asyncio.run(main(args.seconds, args.size, args.gso))
