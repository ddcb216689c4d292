"""The agent's UDP data socket: one port for IPv4 and IPv6.

    data_socket()  AF_INET6, IPV6_V6ONLY off: bound to [::]:P it takes IPv4 peers too
                   (they appear as ::ffff:a.b.c.d; enclave.discovery.dualstack maps between the
                   forms); AF_INET where the host has no IPv6 at all (ipv6.disable=1)
    any_address()  what to bind it to: "::" or "0.0.0.0"

The compiled data plane reads and writes the same socket: its recvmmsg rewrites mapped IPv4
senders to sockaddr_in (_fp_udp.pxi ub_unmap_v4), and Linux's IPv6 UDP sendmsg takes a
sockaddr_in on a dual-stack socket, so the native loops need no other change.
"""

from __future__ import annotations

import socket

from enclave.discovery.dualstack import Addr, sendable


def dual_stack_socket(kind: int) -> socket.socket:
    """A new, unbound socket of `kind` (SOCK_DGRAM / SOCK_STREAM) for both families: AF_INET6
    with IPV6_V6ONLY off where the kernel allows it, else AF_INET."""
    try:
        sock = socket.socket(socket.AF_INET6, kind)
    except OSError:  # no IPv6 in this kernel: IPv4 only, as before
        return socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except OSError:
        sock.close()
        return socket.socket(socket.AF_INET, kind)
    return sock


def data_socket() -> socket.socket:
    """A new, unbound UDP socket for both families where the kernel allows it."""
    return dual_stack_socket(socket.SOCK_DGRAM)


def any_address(sock: socket.socket) -> str:
    """The wildcard address of `sock`'s family."""
    return "::" if sock.family == socket.AF_INET6 else "0.0.0.0"


def send_to(sock: socket.socket, data: bytes, addr: Addr) -> None:
    """sock.sendto(data, addr) with an IPv4 `addr` written as the socket's family wants."""
    sock.sendto(data, sendable(addr, sock.family == socket.AF_INET6))
