"""Traffic over an overlay between lab hosts: ICMP echo on a raw socket, UDP echo, TCP with a
digest.  Every socket is opened inside a host's namespace (Host.socket); every read has a timeout.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from typing import Any

from enclave.dataplane.checksum import inet_checksum
from enclave.netlab import Host

IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2  # <linux/in.h>: set DF, never fragment locally


def ping(src: Host, dst_ip: str, *, count: int = 3, timeout: float = 1.0, size: int = 32,
         df: bool = False, from_ip: str | None = None) -> int:
    """ICMP echo over a raw socket in src's namespace; the number of matching replies. Each
    echo carries `size` random bytes (an IP packet of size + 28) and waits at most
    ``timeout`` s: other ICMP the raw socket sees (an agent's gateway liveness probes, say)
    does not extend the wait. ``df``: DF set (`ping -M do`); an echo over the local MTU
    raises OSError (EMSGSIZE). ``from_ip``: the source address (`ping -I`)."""
    sock = src.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if df:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    if from_ip is not None:
        sock.bind((from_ip, 0))
    ident = os.getpid() & 0xFFFF
    got = 0
    try:
        for seq in range(1, count + 1):
            payload = os.urandom(size)
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            pkt = struct.pack("!BBHHH", 8, 0, inet_checksum(hdr + payload), ident, seq) + payload
            sock.sendto(pkt, (dst_ip, 0))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, addr = sock.recvfrom(65535)
                except TimeoutError:
                    break
                ihl = (data[0] & 0x0F) * 4
                icmp = data[ihl:]
                if (addr[0] == dst_ip and len(icmp) >= 8 and icmp[0] == 0
                        and struct.unpack("!HH", icmp[4:8]) == (ident, seq)
                        and icmp[8:] == payload):
                    got += 1
                    break
    finally:
        sock.close()
    return got


def udp_exchange(a: Host, a_ip: str, b: Host, b_ip: str, *, count: int = 20,
                 timeout: float = 1.0) -> int:
    """b echoes datagrams back; the number of datagrams that came back intact."""
    srv = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        srv.bind((b_ip, 0))
        srv.settimeout(timeout)
        cli.bind((a_ip, 0))
        cli.settimeout(timeout)
        port = srv.getsockname()[1]
        ok = 0
        for i in range(count):
            msg = i.to_bytes(4, "big") + os.urandom(200 + 50 * (i % 20))
            cli.sendto(msg, (b_ip, port))
            try:
                data, peer = srv.recvfrom(4096)
                srv.sendto(data, peer)
                back, _ = cli.recvfrom(4096)
            except TimeoutError:
                continue
            ok += back == msg
        return ok
    finally:
        srv.close()
        cli.close()


def read_digest(conn: socket.socket, size: int) -> tuple[bytes, int]:
    """Read from conn until `size` bytes or EOF: (their sha256, how many bytes came)."""
    h = hashlib.sha256()
    n = 0
    while n < size:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    return h.digest(), n


def tcp_transfer(a: Host, b: Host, b_ip: str, size: int = 4 << 20,
                 timeout: float = 10.0) -> tuple[str, str]:
    """Send `size` random bytes a -> b over TCP; (sent sha256, received sha256)."""
    srv = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli = a.socket(socket.AF_INET, socket.SOCK_STREAM)
    data = os.urandom(size)
    got: dict[str, Any] = {}

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(timeout)
                digest, got["n"] = read_digest(conn, size)
                got["digest"] = digest.hex()
        except OSError as exc:
            got["error"] = repr(exc)

    try:
        srv.bind((b_ip, 0))
        srv.listen(1)
        srv.settimeout(timeout)
        port = srv.getsockname()[1]
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        cli.settimeout(timeout)
        cli.connect((b_ip, port))
        cli.sendall(data)
        cli.shutdown(socket.SHUT_WR)
        t.join(timeout + 1)
        assert not t.is_alive(), "TCP receiver did not finish"
        assert "error" not in got, got.get("error")
        return hashlib.sha256(data).hexdigest(), str(got.get("digest"))
    finally:
        srv.close()
        cli.close()
