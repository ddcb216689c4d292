"""`enclave netcheck`: this system's NAT behaviour, platform reachability and relay RTT.

Talks to the platform's discovery reflector (enclave.platform.discovery) with signed requests
from the system's own key, from sockets of its own (the agent may hold the data port):

    socket 1  plain request -> udp A, plain request -> udp B   mapping behaviour, reflected
                                                              addresses, UDP round-trip times
    socket 2  ALT_PORT request -> udp A, reply from udp B      does port B get in? (filtering)
              then a plain request -> udp A                    (the socket's path works at all)
    socket 3  ALT_ADDR request -> udp A, reply from the         does another address get in?
              platform's alternate address (only when its replies say it has one)
    TCP       connect -> tcp B, plain request                  TCP reachability, TCP mapping

The verdicts come from enclave.discovery.natcheck (pure).  Where the reflector is and the relay
round-trip times come from the running agent when there is one (local API "status": the
platform's discovery ports from the control channel's welcome; "peers": relay_rtt_ms measured
by its relay registrations, to the millisecond); without an agent the reflector is taken to
listen on the API URL's port and the next one, and the relay is not measured (it needs a peer's
relay ticket).
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

from enclave.agent.discovery import classify, private_addresses, reflect_request
from enclave.cert.keys import Ed25519PrivateKey
from enclave.discovery.candidates import NatBehaviour
from enclave.discovery.natcheck import Filtering, classify_filtering, nat_name
from enclave.proto import wire

REPLY_TIMEOUT = 0.6  # per try
TRIES = 3
TCP_TIMEOUT = 3.0

Addr = tuple[str, int]


@dataclass(frozen=True)
class Target:
    """Where the reflector listens: an IP address, its two UDP ports, its TCP port."""

    host: str
    udp: tuple[int, int]
    tcp: int | None


@dataclass(frozen=True)
class Reply:
    mapping: Addr  # our address as the reflector saw it
    source: Addr  # where the reply came from
    rtt: float  # seconds from the (last) request to the reply
    flags: int


def resolve(host: str) -> str:
    """An IP literal for `host` (IPv4 first); OSError when it does not resolve."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    return str(infos[0][4][0])


def _udp_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    sock.setblocking(False)
    return sock


def udp_reflect(sock: socket.socket, dst: Addr, name: str, key: Ed25519PrivateKey,
                msg_type: int = wire.MSG_REFLECT_REQUEST, *, tries: int = TRIES,
                timeout: float = REPLY_TIMEOUT) -> Reply | None:
    """Send a signed request (again after each `timeout`, `tries` times); the first reply that
    echoes one of our nonces, from wherever it comes; None when none came."""
    nonces: set[bytes] = set()
    for _ in range(tries):
        nonce, req = reflect_request(name, key, msg_type)
        nonces.add(nonce)
        sent = time.monotonic()
        with contextlib.suppress(OSError):
            sock.sendto(req, dst)
        deadline = sent + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            try:
                data, src = sock.recvfrom(2048)
                got_nonce, host, port = wire.decode_reflect_reply(data)
            except (OSError, wire.WireError):
                continue
            if got_nonce in nonces:
                return Reply((host, port), (str(src[0]), int(src[1])), time.monotonic() - sent,
                             wire.reflect_reply_flags(data))
    return None


def tcp_reflect(target: Target, name: str, key: Ed25519PrivateKey,
                timeout: float = TCP_TIMEOUT) -> tuple[Reply | None, str | None]:
    """(reply, None) or (None, why) for one request over TCP to the reflector's TCP port."""
    if target.tcp is None:
        return None, "the platform reflects no TCP"
    nonce, req = reflect_request(name, key)
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            start = time.monotonic()
            sock.connect((target.host, target.tcp))
            rtt = time.monotonic() - start
            sock.sendall(req)
            data = b""
            while len(data) < wire.REFLECT_REPLY_SIZE:
                chunk = sock.recv(wire.REFLECT_REPLY_SIZE - len(data))
                if not chunk:
                    break
                data += chunk
            got, host, port = wire.decode_reflect_reply(data)
    except (OSError, wire.WireError) as exc:
        return None, str(exc) or type(exc).__name__
    if got != nonce:
        return None, "the reply did not echo our nonce"
    return Reply((host, port), (target.host, target.tcp), rtt, 0), None


def _fmt(addr: Addr | None) -> str | None:
    if addr is None:
        return None
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def run_netcheck(target: Target, name: str, key: Ed25519PrivateKey,
                 relays: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Measure everything; the report as JSON-able dict (see `enclave netcheck --json`)."""
    a, b = (target.host, target.udp[0]), (target.host, target.udp[1])
    with _udp_socket(target.host) as s1:
        local_port = int(s1.getsockname()[1])
        ra = udp_reflect(s1, a, name, key)
        rb = udp_reflect(s1, b, name, key)
    try:
        local = private_addresses()
    except OSError:
        local = []
    mapping = classify(ra.mapping if ra else None, rb.mapping if rb else None, local, local_port)
    with _udp_socket(target.host) as s2:
        alt_port = udp_reflect(s2, a, name, key, wire.MSG_REFLECT_REQUEST_ALT_PORT)
        plain2 = udp_reflect(s2, a, name, key)
    offers_alt = any(r is not None and r.flags & wire.REFLECT_FLAG_ALT_ADDR for r in (ra, rb))
    alt_addr: Reply | None = None
    if offers_alt:
        with _udp_socket(target.host) as s3:
            alt_addr = udp_reflect(s3, a, name, key, wire.MSG_REFLECT_REQUEST_ALT_ADDR)
    filtering = classify_filtering(plain2 is not None, alt_port is not None,
                                   (alt_addr is not None) if offers_alt else None)
    tcp, tcp_error = tcp_reflect(target, name, key)
    udp_ok = ra is not None or rb is not None
    if not udp_ok:
        mapping = NatBehaviour.UNKNOWN
    return {
        "platform": {"host": target.host, "udp_ports": list(target.udp), "tcp_port": target.tcp},
        "udp": {
            "reachable": udp_ok,
            "local_port": local_port,
            "reflected": [_fmt(r.mapping) if r else None for r in (ra, rb)],
            "rtt_ms": [_ms(r.rtt) if r else None for r in (ra, rb)],
        },
        "tcp": {
            "reachable": tcp is not None,
            "reflected": _fmt(tcp.mapping) if tcp else None,
            "connect_ms": _ms(tcp.rtt) if tcp else None,
            "error": tcp_error,
        },
        "mapping": mapping.value,
        "filtering": filtering.behaviour.value,
        "filtering_note": filtering.note,
        "filtering_probes": {
            "other_port": alt_port is not None,
            "other_address": (alt_addr is not None) if offers_alt else None,
            "other_address_source": _fmt(alt_addr.source) if alt_addr else None,
        },
        "nat": nat_name(mapping, filtering.behaviour if udp_ok else Filtering.UNKNOWN),
        "relay": relays if relays is not None else None,
    }


def _relay_rtt(ms: float | None) -> str:
    """The agent times relay registrations with its event loop's clock, which ticks in
    milliseconds: 0 means "under a millisecond"."""
    if ms is None:
        return "-"
    return "<1ms" if ms < 1 else f"{ms:.0f}ms"


def report_text(r: dict[str, Any]) -> str:
    """The report for people (`enclave netcheck` without --json)."""
    udp, tcp = r["udp"], r["tcp"]
    refl = ", ".join(x or "-" for x in udp["reflected"])
    rtts = ", ".join("-" if x is None else f"{x:.1f}ms" for x in udp["rtt_ms"])
    plat = r["platform"]
    lines = [
        f"platform     {plat['host']} udp {plat['udp_ports'][0]},{plat['udp_ports'][1]}"
        + (f" tcp {plat['tcp_port']}" if plat["tcp_port"] else ""),
        f"udp          {'reachable' if udp['reachable'] else 'unreachable'}; reflected {refl};"
        f" rtt {rtts}",
        "tcp          " + (f"reachable; reflected {tcp['reflected']}; connect "
                           f"{tcp['connect_ms']:.1f}ms" if tcp["reachable"]
                           else f"unreachable ({tcp['error']})"),
        f"mapping      {r['mapping']}",
        f"filtering    {r['filtering']}"
        + (f" ({r['filtering_note']})" if r.get("filtering_note") else ""),
        f"nat          {r['nat']}",
    ]
    relays = r.get("relay")
    if relays is None:
        lines.append("relay        not measured (no agent running: the relay RTT comes from its "
                     "relay registrations)")
    elif not relays:
        lines.append("relay        not measured (no peer is relayed; the agent registers with "
                     "the relay only for peers without a direct path)")
    for rel in relays or []:
        lines.append(f"relay        {rel.get('relay')} rtt {_relay_rtt(rel.get('rtt_ms'))} "
                     f"(peer {rel.get('peer')})")
    return "\n".join(lines)
