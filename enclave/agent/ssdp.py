"""SSDP search for the default gateway's UPnP Internet Gateway Device (UPnP Device Architecture
1.1, section 1.3), for the port-mapping client (enclave.agent.portmap).

    agent :ephemeral --M-SEARCH ST: ...InternetGatewayDevice:1 / :2--> 239.255.255.250:1900
                     <--HTTP/1.1 200 OK  LOCATION: http://GW:PORT/rootDesc.xml------ the gateway
                     <--the same from any other LAN host: read, counted, dropped

Anyone on the LAN can answer an M-SEARCH and name any URL. An answer is taken only when it
comes from the default gateway's IPv4 address and its LOCATION is plain http:// to that address
(gateway_url); that one root description URL is all miniupnpc is given (UPnP.selectigd(url)
fetches that description and nothing else), so no other device is ever contacted.

Bounds: one search waits at most `wait_ms`, reads at most MAX_ANSWERS datagrams, each of at most
MAX_ANSWER_BYTES (a longer one arrives truncated and is dropped). parse_answer never raises: an
answer that is not a well-formed 200 OK for a searched type with exactly one LOCATION is None.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

GROUP = "239.255.255.250"
PORT = 1900
SEARCH_TARGETS = ("urn:schemas-upnp-org:device:InternetGatewayDevice:1",
                  "urn:schemas-upnp-org:device:InternetGatewayDevice:2")
MX_S = 1  # a device waits up to MX seconds before it answers
MAX_ANSWERS = 64  # datagrams read per search
MAX_ANSWER_BYTES = 1500
MAX_LOCATION = 256
TTL = 2  # as miniupnpc


@dataclass(frozen=True)
class Answer:
    """A well-formed answer to our search (not yet checked to be the gateway's)."""

    st: str
    location: str


def m_search(st: str, *, group: str = GROUP, port: int = PORT) -> bytes:
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: {group}:{port}\r\nMAN: \"ssdp:discover\"\r\n"
            f"MX: {MX_S}\r\nST: {st}\r\n\r\n").encode()


def gateway_url(url: str, gateway: str) -> bool:
    """Whether `url` is plain http:// to `gateway` (an IPv4 address, optional port) and nothing
    a URL parser could read differently (no user part, no odd characters)."""
    if not url.isascii() or not url.isprintable() or any(c in url for c in " \\@"):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in range
        host = ipaddress.IPv4Address(parts.hostname or "")
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        return False
    netloc = str(host) if port is None else f"{host}:{port}"
    return parts.scheme == "http" and host == gw and parts.netloc == netloc


def parse_answer(data: bytes) -> Answer | None:
    """The search answer in `data`: printable ASCII lines (CRLF or LF; tabs allowed), an
    HTTP/1.x 200 status line, header lines "Name: value" up to the first empty line, ST one of
    SEARCH_TARGETS, exactly one LOCATION of up to MAX_LOCATION characters; None for anything
    else."""
    if len(data) > MAX_ANSWER_BYTES or not data.isascii():
        return None
    lines = [line.removesuffix("\r") for line in data.decode("ascii").split("\n")]
    if not all(line.replace("\t", " ").isprintable() for line in lines):
        return None  # control characters: binary, or a CR inside a line
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[0] not in ("HTTP/1.0", "HTTP/1.1") or status[1] != "200":
        return None
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            break  # end of the header block
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip(" \t"):
            return None
        headers.setdefault(name.lower(), []).append(value.strip(" \t"))
    st, location = headers.get("st", []), headers.get("location", [])
    if len(st) != 1 or st[0] not in SEARCH_TARGETS or len(location) != 1:
        return None
    url = location[0]
    if not url or len(url) > MAX_LOCATION or "\t" in url:
        return None
    return Answer(st[0], url)


def search(gateway: str, wait_ms: int, *, on_ignored: Callable[[str, str], None] | None = None,
           group: str = GROUP, port: int = PORT) -> str | None:
    """Send M-SEARCH for every SEARCH_TARGETS type out of the interface towards `gateway` and
    wait up to `wait_ms` for an answer from `gateway` whose LOCATION is on it (gateway_url);
    that LOCATION, or None. Blocks: call it in a thread. on_ignored(source IP, LOCATION) is
    told of each well-formed answer that is not taken."""
    try:
        gw = str(ipaddress.IPv4Address(gateway))  # never a name to resolve
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((gw, port))  # sends nothing: picks the route's own address
            own = str(probe.getsockname()[0])
    except (OSError, ValueError):
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((own, 0))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(own))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, TTL)
            for st in SEARCH_TARGETS:
                sock.sendto(m_search(st, group=group, port=port), (group, port))
        except OSError:
            return None
        deadline = time.monotonic() + wait_ms / 1000
        for _ in range(MAX_ANSWERS):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, _anc, flags, addr = sock.recvmsg(MAX_ANSWER_BYTES)
            except TimeoutError:
                break
            except OSError:  # an ICMP error queued on the socket: not an answer
                continue
            if flags & socket.MSG_TRUNC:
                continue
            answer = parse_answer(data)
            if answer is None:
                continue
            if addr[0] == gw and gateway_url(answer.location, gw):
                return answer.location
            if on_ignored is not None:
                on_ignored(str(addr[0]), answer.location)
    return None
