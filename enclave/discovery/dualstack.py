"""IPv4 and IPv6 through one dual-stack UDP socket: the two forms of an IPv4 address (pure).

The agent's data socket (and the platform's sockets bound to ``::``) is AF_INET6 with
IPV6_V6ONLY off, so one port serves both families. Through such a socket the kernel reports an
IPv4 sender as ``::ffff:a.b.c.d``, and Python's ``sendto`` wants that form for an IPv4
destination (it refuses ``a.b.c.d`` on an AF_INET6 socket). Everywhere above the socket --
candidates, paths, the platform's reflector and relay tables, the compiled data plane (whose
``ub_recv`` rewrites mapped senders to sockaddr_in, _fp_udp.pxi) -- an IPv4 peer is plain
``a.b.c.d``, one form per peer:

    received  ("::ffff:198.18.1.1", p)  --unmapped()-->  ("198.18.1.1", p)   everywhere above
    sending   ("198.18.1.1", p)         --sendable()-->  ("::ffff:198.18.1.1", p) on AF_INET6
"""

from __future__ import annotations

import ipaddress

Addr = tuple[str, int]
_MAPPED_PREFIX = "::ffff:"


def unmapped(host: str) -> str:
    """``host`` with an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) written as IPv4; any other
    text unchanged."""
    if ":" not in host or "." not in host:  # the mapped form always has both
        return host
    try:
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    mapped = ip.ipv4_mapped
    return host if mapped is None else str(mapped)


def unmapped_addr(addr: tuple[object, ...]) -> Addr:
    """(host, port) of a socket address tuple (2-tuple or AF_INET6's 4-tuple), IPv4 unmapped."""
    return unmapped(str(addr[0])), int(str(addr[1]))


def sendable(addr: Addr, v6_socket: bool) -> Addr:
    """``addr`` in the form ``sendto`` takes on a socket of that family: an IPv4 host becomes
    ``::ffff:a.b.c.d`` on an AF_INET6 (dual-stack) socket; everything else is unchanged."""
    host, port = addr
    if v6_socket and ":" not in host:
        return _MAPPED_PREFIX + host, port
    return addr


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[2001:db8::1]:51820``, RFC 3986)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def family_of(host: str) -> int:
    """4 or 6: the IP version of an address literal (ValueError for anything else)."""
    return ipaddress.ip_address(unmapped(host)).version
