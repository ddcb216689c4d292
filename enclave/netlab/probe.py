"""NAT behaviour probes with real UDP/TCP sockets inside a lab (used by tests and selfcheck).

The UDP probe, from inside host H (socket c) to two reflectors R1, R2 on the internet (sockets
r1a, r1b on R1 and r2a, r2b on R2, opened in their namespaces by this process)::

  step  packet                                  tells
  ----  --------------------------------------  ----------------------------------------------
  0     r2a -> H.public_ip:c.port  (unsolicited) does unsolicited inbound pass before any mapping?
  1     c -> r1a ; r1a sees m1                   the public mapping towards R1
  2     r1a -> m1                                 a reply from the contacted address+port
  3     r1b -> m1                                 same address, other port (address filtering?)
  4     r2a -> m1                                 other address, never contacted (full cone?)
  5     c -> r2b ; r2b sees m2                   m1 == m2: endpoint-independent mapping
                                                (r2b: R2's other port, a tuple nothing touched)
  ctl   r1a -> m1 "control"                       always passes; ends the observation

Negative steps cannot time out into a false "dropped": the control packet is sent after them
over the same path, and the probe reads until the control arrives, so anything sent before it
that the NAT let through has arrived by then (the lab has no reordering unless netem says so;
do not probe through a site with netem reorder).

Every probe takes ``family`` (socket.AF_INET, the default, or AF_INET6): with AF_INET6 it runs
over the hosts' IPv6 addresses (Host.ip6 / public_ip6), which is how the IPv6 firewall and NAT66
site modes are checked.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from enclave.netlab.lab import Host

REFLECT_PORT = 3478
REFLECT_ALT_PORT = 3479
RECV_TIMEOUT_S = 2.0
SETTLE_S = 0.05

Addr = tuple[str, int]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_of(host: Host, family: int = socket.AF_INET, *, public: bool = False) -> IpAddress:
    """``host``'s own (or, with ``public``, its internet-visible) address of ``family``."""
    if family == socket.AF_INET6:
        ip6 = host.public_ip6 if public else host.ip6
        if ip6 is None:
            raise ValueError(f"{host.name} has no IPv6 address")
        return ip6
    ip = host.public_ip if public else host.ip
    if not isinstance(ip, ipaddress.IPv4Address):
        raise ValueError(f"{host.name} has no IPv4 address")
    return ip


@dataclass(frozen=True)
class UdpObservation:
    local: Addr  # the probing socket's own address
    mapped_r1: Addr  # source address R1 saw
    mapped_r2: Addr  # source address R2 saw
    unsolicited_in: bool  # step 0 delivered
    reply_in: bool  # step 2 delivered
    same_addr_other_port_in: bool  # step 3 delivered
    other_addr_in: bool  # step 4 delivered

    @property
    def translated(self) -> bool:
        return self.mapped_r1 != self.local

    @property
    def endpoint_independent_mapping(self) -> bool:
        return self.mapped_r1 == self.mapped_r2

    @property
    def filtering(self) -> str:
        """'none' | 'endpoint-independent' | 'address' | 'address-and-port'."""
        if self.unsolicited_in:
            return "none"
        if self.other_addr_in:
            return "endpoint-independent"
        if self.same_addr_other_port_in:
            return "address"
        return "address-and-port"


def _recv_from(sock: socket.socket, timeout: float = RECV_TIMEOUT_S) -> tuple[bytes, Addr]:
    sock.settimeout(timeout)
    data, addr = sock.recvfrom(2048)
    return data, (addr[0], addr[1])


def _any(family: int) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


@contextlib.contextmanager
def _udp(host: Host, port: int = 0, family: int = socket.AF_INET) -> Iterator[socket.socket]:
    sock = host.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((_any(family), port))
        yield sock
    finally:
        sock.close()


def probe_udp(host: Host, r1: Host, r2: Host, port: int = 0,
              family: int = socket.AF_INET) -> UdpObservation:
    """Run the UDP probe (table above) from ``host`` against public hosts ``r1`` and ``r2``."""
    with (
        _udp(host, port, family) as c,
        _udp(r1, REFLECT_PORT, family) as r1a,
        _udp(r1, REFLECT_ALT_PORT, family) as r1b,
        _udp(r2, REFLECT_PORT, family) as r2a,
        _udp(r2, REFLECT_ALT_PORT, family) as r2b,
    ):
        local = (str(address_of(host, family)), c.getsockname()[1])
        guess = (str(address_of(host, family, public=True)), local[1])
        r2a.sendto(b"0-unsolicited", guess)
        time.sleep(SETTLE_S)
        c.sendto(b"1-out-r1", (str(address_of(r1, family)), REFLECT_PORT))
        data, m1 = _recv_from(r1a)
        if data != b"1-out-r1":
            raise RuntimeError(f"reflector r1 got unexpected {data!r}")
        r1a.sendto(b"2-reply", m1)
        r1b.sendto(b"3-same-addr-other-port", m1)
        r2a.sendto(b"4-other-addr", m1)
        time.sleep(SETTLE_S)
        r1a.sendto(b"ctl", m1)
        seen: set[bytes] = set()
        while b"ctl" not in seen:
            data, _ = _recv_from(c)
            seen.add(data)
        c.sendto(b"5-out-r2", (str(address_of(r2, family)), REFLECT_ALT_PORT))
        data, m2 = _recv_from(r2b)
        if data != b"5-out-r2":
            raise RuntimeError(f"reflector r2 got unexpected {data!r}")
        return UdpObservation(
            local=local,
            mapped_r1=m1,
            mapped_r2=m2,
            unsolicited_in=b"0-unsolicited" in seen,
            reply_in=b"2-reply" in seen,
            same_addr_other_port_in=b"3-same-addr-other-port" in seen,
            other_addr_in=b"4-other-addr" in seen,
        )


@dataclass(frozen=True)
class TcpObservation:
    local_port: int
    mapped_r1: Addr
    mapped_r2: Addr
    unsolicited_in: bool  # R2 could connect to the mapped port (before and after mapping)
    same_addr_other_port_in: bool  # R1 could connect from another port to the mapped port

    @property
    def endpoint_independent_mapping(self) -> bool:
        return self.mapped_r1 == self.mapped_r2


def _tcp(host: Host, family: int = socket.AF_INET) -> socket.socket:
    sock = host.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _try_connect(sock: socket.socket, addr: Addr, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        sock.connect(addr)
    except (TimeoutError, ConnectionRefusedError, OSError):
        return False
    finally:
        sock.close()
    return True


def probe_tcp(host: Host, r1: Host, r2: Host, *, negative_timeout: float = 0.4,
              family: int = socket.AF_INET) -> TcpObservation:
    """TCP: two connections from one local port (to R1 and R2) and two unsolicited connects.

    ``host`` also listens on that port, so a connect that the NAT let through would be accepted.
    """
    socks: list[socket.socket] = []
    anyaddr = _any(family)
    try:
        listeners = []
        for r in (r1, r2):
            lst = _tcp(r, family)
            socks.append(lst)
            lst.bind((anyaddr, REFLECT_PORT))
            lst.listen(4)
            lst.settimeout(RECV_TIMEOUT_S)
            listeners.append(lst)
        out1 = _tcp(host, family)
        socks.append(out1)
        out1.bind((anyaddr, 0))
        port = out1.getsockname()[1]
        out1.settimeout(RECV_TIMEOUT_S)
        out1.connect((str(address_of(r1, family)), REFLECT_PORT))
        conn1, m1 = listeners[0].accept()
        socks.append(conn1)
        out2 = _tcp(host, family)
        socks.append(out2)
        out2.bind((anyaddr, port))
        out2.settimeout(RECV_TIMEOUT_S)
        out2.connect((str(address_of(r2, family)), REFLECT_PORT))
        conn2, m2 = listeners[1].accept()
        socks.append(conn2)
        lst_in = _tcp(host, family)
        socks.append(lst_in)
        lst_in.bind((anyaddr, port))
        lst_in.listen(4)
        mapped = (m1[0], m1[1])
        unsolicited = _try_connect(_tcp(r2, family), mapped, negative_timeout)
        other_port = _try_connect(_tcp(r1, family), mapped, negative_timeout)
        return TcpObservation(
            local_port=port,
            mapped_r1=mapped,
            mapped_r2=(m2[0], m2[1]),
            unsolicited_in=unsolicited,
            same_addr_other_port_in=other_port,
        )
    finally:
        for s in socks:
            s.close()


def udp_reachable(src: Host, dst: Host, dst_ip: IpAddress | None = None) -> Addr | None:
    """Send one datagram src -> dst (at dst_ip, default dst.ip); the source address dst saw.
    The family is dst_ip's (dst.ip's)."""
    target = dst_ip or dst.ip
    family = socket.AF_INET6 if target.version == 6 else socket.AF_INET
    with _udp(dst, family=family) as rx, _udp(src, family=family) as tx:
        port = rx.getsockname()[1]
        tx.sendto(b"hello", (str(target), port))
        try:
            _, seen = _recv_from(rx, 1.0)
        except TimeoutError:
            return None
        return seen
