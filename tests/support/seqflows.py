"""Sequence-numbered UDP flows across the overlay: is every datagram delivered once, and in
order within its flow?

    sender (src host)                                    receiver (dst host)
    flow 0: socket, own source port --seq 0,1,2...-->    one socket on (overlay ip, port):
    flow 1: socket, own source port --seq 0,1,2...-->    got[(tag, flow)] = [seq, seq, ...]
    ...  sent round-robin, `pace` seconds between rounds

Each flow has its own source port, so its own 5-tuple: the sending agent's TAP steers it to
one worker, and the flows of one sender spread over the workers. A datagram is
tag (1 byte) | flow (u16 BE) | seq (u32 BE) | padding to `size`. The pace is low enough
that nothing overflows on a loaded 2-core machine: a gap is a fault, not congestion.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time

from enclave.netlab import Host

HEAD = struct.Struct("!BHI")


class SeqReceiver:
    """Collects the sequence numbers of every flow arriving at (ip, port) on `host`."""

    def __init__(self, host: Host, ip: str, port: int) -> None:
        self.sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.1)
        self.got: dict[tuple[int, int], list[int]] = {}
        self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            if len(data) < HEAD.size:
                continue
            tag, flow, seq = HEAD.unpack_from(data)
            self.got.setdefault((tag, flow), []).append(seq)
            self.last = time.monotonic()

    def settle(self, expect: int, timeout: float = 10.0, quiet: float = 1.0) -> None:
        """Wait until `expect` datagrams arrived, or nothing came for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(len(v) for v in self.got.values()) >= expect:
                time.sleep(0.2)            # a duplicate would arrive right behind
                return
            if time.monotonic() - self.last > quiet:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def send_flows(host: Host, dst_ip: str, port: int, *, tag: int, flows: int, count: int,
               size: int = 200, pace: float = 0.002) -> None:
    """`flows` flows of `count` datagrams each to (dst_ip, port), round-robin."""
    socks = [host.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
    pad = bytes(max(0, size - HEAD.size))
    try:
        for seq in range(count):
            for flow, s in enumerate(socks):
                s.sendto(HEAD.pack(tag, flow, seq) + pad, (dst_ip, port))
            time.sleep(pace)
    finally:
        for s in socks:
            s.close()


def faults(got: dict[tuple[int, int], list[int]], tags: list[int], flows: int,
           count: int) -> list[str]:
    """What is wrong with what arrived: a missing flow, a missing, repeated or late datagram."""
    out = []
    for tag in tags:
        for flow in range(flows):
            seqs = got.get((tag, flow), [])
            if seqs == list(range(count)):
                continue
            dup = len(seqs) - len(set(seqs))
            missing = count - len(set(seqs))
            late = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
            out.append(f"sender {tag} flow {flow}: {len(seqs)} arrived, {missing} missing, "
                       f"{dup} repeated, {late} out of order")
    return out
