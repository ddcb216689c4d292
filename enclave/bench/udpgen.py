"""The bench's own UDP tools: packet-rate sender/receiver and a ping-pong latency pair.

    python -m enclave.bench.udpgen recv --port 5311 [--idle 1.0] [--wait 10]   -> JSON line
    python -m enclave.bench.udpgen send --to IP:5311 --size 64 --duration 5     -> JSON line
    python -m enclave.bench.udpgen echo --port 5312 [--lifetime 600]
    python -m enclave.bench.udpgen ping --to IP:5312 --count 200 --interval 0.005 -> JSON line

Every datagram starts with a 16-byte header (all integers big-endian)::

     0        4        8                16                      size
     +--------+--------+----------------+------- ... zero padding -+
     | magic  | run id | seq / count    |                          |
     +--------+--------+----------------+--------------------------+
     magic: b"EBGD" data, b"EBGE" end of run (seq field = packets sent), b"EBGP" ping

The sender keeps one connected socket and calls send() in a tight loop (the clock is read every
256 packets); the receiver counts datagrams of its run id until it sees the end marker (then
drains briefly) or the link goes idle. Loss is computed by the caller from the sender's and the
receiver's counts: receiver counts are what the report shows. ping is strictly one request in
flight: RTT = reply time - send time on the client's monotonic clock.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

HEADER = struct.Struct("!4sIQ")
HEADER_LEN = HEADER.size  # 16
MAGIC_DATA = b"EBGD"
MAGIC_END = b"EBGE"
MAGIC_PING = b"EBGP"
MIN_SIZE = HEADER_LEN
MAX_SIZE = 65507
END_REPEATS = 8
RCVBUF = 8 * 1024 * 1024


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (pct in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"payload size must be {MIN_SIZE}..{MAX_SIZE} bytes, got {size}")


def send(sock: socket.socket, *, size: int, duration: float, run_id: int,
         rate_pps: float | None = None) -> dict[str, Any]:
    """Send data datagrams on a connected socket for ``duration`` s, then the end marker."""
    _check_size(size)
    buf = bytearray(size)
    pack = HEADER.pack_into
    sent = 0
    errors = 0
    t0 = time.monotonic()
    deadline = t0 + duration
    now = t0
    gap = 1.0 / rate_pps if rate_pps else 0.0
    next_at = t0
    while now < deadline:
        for _ in range(256 if not gap else 1):
            pack(buf, 0, MAGIC_DATA, run_id, sent)
            try:
                sock.send(buf)
            except (BlockingIOError, ConnectionRefusedError, InterruptedError):
                errors += 1  # ICMP unreachable / full buffer: counted, never fatal
                continue
            except OSError:
                errors += 1
                continue
            sent += 1
        now = time.monotonic()
        if gap:
            next_at += gap
            if next_at > now:
                time.sleep(next_at - now)
                now = time.monotonic()
    seconds = now - t0
    end = bytearray(HEADER_LEN)
    pack(end, 0, MAGIC_END, run_id, sent)
    for _ in range(END_REPEATS):
        try:
            sock.send(end)
        except OSError:
            pass
        time.sleep(0.002)
    return {"sent": sent, "bytes": sent * size, "seconds": seconds, "size": size,
            "errors": errors, "pps": sent / seconds if seconds > 0 else 0.0}


def recv(sock: socket.socket, *, run_id: int, idle: float = 1.0, wait: float = 10.0,
         drain: float = 0.2) -> dict[str, Any]:
    """Count data datagrams of ``run_id`` until the end marker (+ drain) or ``idle`` s of quiet.

    Gives up after ``wait`` s if nothing arrives at all. Foreign datagrams are ignored.
    """
    buf = bytearray(MAX_SIZE + 1)
    view = memoryview(buf)
    received = 0
    nbytes = 0
    first = last = 0.0
    sent_reported: int | None = None
    unpack = HEADER.unpack_from
    start = time.monotonic()
    sock.settimeout(min(idle, wait))
    while True:
        try:
            n = sock.recv_into(view)
        except TimeoutError:
            now = time.monotonic()
            if sent_reported is not None or (received and now - last >= idle):
                break
            if not received and now - start >= wait:
                break
            continue
        if n < HEADER_LEN:
            continue
        magic, rid, seq = unpack(buf, 0)
        if rid != run_id:
            continue
        if magic == MAGIC_DATA:
            last = time.monotonic()
            if not received:
                first = last
            received += 1
            nbytes += n
        elif magic == MAGIC_END and sent_reported is None:
            sent_reported = seq
            sock.settimeout(drain)
    seconds = last - first
    return {"received": received, "bytes": nbytes, "seconds": seconds,
            "pps": received / seconds if seconds > 0 else 0.0, "sent_reported": sent_reported}


def echo(sock: socket.socket, *, lifetime: float = 600.0) -> int:
    """Reflect ping datagrams back to their sender until ``lifetime`` s pass; returns count."""
    buf = bytearray(MAX_SIZE + 1)
    count = 0
    deadline = time.monotonic() + lifetime
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            n, addr = sock.recvfrom_into(buf)
        except TimeoutError:
            continue
        except OSError:  # socket closed under us: done
            break
        if n >= HEADER_LEN and buf[:4] == MAGIC_PING:
            try:
                sock.sendto(buf[:n], addr)
            except OSError:
                continue
            count += 1
    return count


def ping(sock: socket.socket, *, count: int, interval: float, timeout: float = 1.0,
         size: int = 64, run_id: int = 0) -> dict[str, Any]:
    """One request in flight at a time on a connected socket; RTTs in microseconds."""
    _check_size(size)
    req = bytearray(size)
    reply = bytearray(MAX_SIZE + 1)
    rtts: list[float] = []
    lost = 0
    for seq in range(count):
        HEADER.pack_into(req, 0, MAGIC_PING, run_id, seq)
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            sock.send(req)
        except OSError:
            lost += 1
            time.sleep(interval)
            continue
        got = False
        while not got:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                n = sock.recv_into(reply)
            except (TimeoutError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    break
                continue
            if n >= HEADER_LEN:
                magic, rid, rseq = HEADER.unpack_from(reply, 0)
                if magic == MAGIC_PING and rid == run_id and rseq == seq:
                    rtts.append((time.monotonic() - t0) * 1e6)
                    got = True
        if not got:
            lost += 1
        spent = time.monotonic() - t0
        if interval > spent:
            time.sleep(interval - spent)
    return {
        "sent": count,
        "received": len(rtts),
        "lost": lost,
        "p50_us": percentile(rtts, 50),
        "p99_us": percentile(rtts, 99),
        "min_us": min(rtts) if rtts else None,
        "max_us": max(rtts) if rtts else None,
    }


# -- command line ------------------------------------------------------------------------------


def _addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected IP:PORT, got {text!r}")
    return host, int(port)


def _udp(bind_port: int | None = None, to: tuple[str, int] | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
        except OSError:
            pass
    if bind_port is not None:
        s.bind(("0.0.0.0", bind_port))
    if to is not None:
        s.connect(to)
    return s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enclave.bench.udpgen")
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("send")
    p.add_argument("--to", type=_addr, required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=None, help="packets/s (default: flat out)")
    p.add_argument("--run-id", type=int, default=1)
    p = sub.add_parser("recv")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--idle", type=float, default=1.0)
    p.add_argument("--wait", type=float, default=15.0)
    p.add_argument("--run-id", type=int, default=1)
    p = sub.add_parser("echo")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--lifetime", type=float, default=3600.0)
    p = sub.add_parser("ping")
    p.add_argument("--to", type=_addr, required=True)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--interval", type=float, default=0.005)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--run-id", type=int, default=os.getpid() & 0xFFFFFFFF)
    args = parser.parse_args(argv)
    try:
        result: dict[str, Any]
        if args.mode == "send":
            with _udp(to=args.to) as s:
                result = send(s, size=args.size, duration=args.duration, run_id=args.run_id,
                              rate_pps=args.rate)
        elif args.mode == "recv":
            with _udp(bind_port=args.port) as s:
                print(json.dumps({"ready": True}), flush=True)
                result = recv(s, run_id=args.run_id, idle=args.idle, wait=args.wait)
        elif args.mode == "echo":
            with _udp(bind_port=args.port) as s:
                print(json.dumps({"ready": True}), flush=True)
                result = {"echoed": echo(s, lifetime=args.lifetime)}
        else:
            with _udp(to=args.to) as s:
                result = ping(s, count=args.count, interval=args.interval, timeout=args.timeout,
                              size=args.size, run_id=args.run_id)
    except (OSError, ValueError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
