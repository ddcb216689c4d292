"""What a stranger's namespace receives, read off the wire (an AF_PACKET socket on its eth0):
every IPv4/IPv6 packet whose source is one of the watched addresses, whatever the protocol
(UDP answers, SYN-ACKs, RSTs, ICMP errors alike).

    with Sniffer(evil, {b1_ip, b1_ip6}) as heard:
        ... probe ...
    assert heard.packets == []      # (src, proto, summary) of each packet from a watched address

    Sniffer(b1, set(), sent_to=net).packets          # what b1 itself sends to a network
    Sniffer(b1, set(), keep_udp_to=51820).payloads   # or: the UDP payloads arriving at a port
                                                     # (to replay them from elsewhere)

IPv6 neighbour discovery (ICMPv6 133-137) is link housekeeping, not an answer, and is skipped,
as are packets to multicast and broadcast addresses (an agent's own SSDP discovery on its LAN).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from types import TracebackType

from enclave.netlab import Host

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_NDP = range(133, 138)


def _udp_payload(frame: bytes, port: int) -> bytes | None:
    """The payload of an IPv4 UDP frame to `port`; None for anything else."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ip = frame[14:]
    body = ip[(ip[0] & 0x0F) * 4:]
    if len(body) < 8 or struct.unpack("!H", body[2:4])[0] != port:
        return None
    return bytes(body[8:struct.unpack("!H", body[4:6])[0]])


def _to_group(frame: bytes) -> bool:
    """Whether an IP frame goes to a multicast or broadcast address (an agent's own LAN
    discovery, SSDP say, is not an answer to anyone)."""
    if frame[12:14] == b"\x08\x00" and len(frame) >= 34:
        dst = ipaddress.IPv4Address(frame[30:34])
        return dst.is_multicast or frame[33] == 255
    if frame[12:14] == b"\x86\xdd" and len(frame) >= 54:
        return frame[38] == 0xFF
    return False


def _describe(frame: bytes, outgoing: bool = False) -> tuple[str, str, str] | None:
    """(source address, protocol, summary) of an IP frame (`outgoing`: its destination
    address instead of its source); None for anything else."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20:
        src = str(ipaddress.IPv4Address(ip[16:20] if outgoing else ip[12:16]))
        proto, body = ip[9], ip[(ip[0] & 0x0F) * 4:]
    elif ethertype == 0x86DD and len(ip) >= 40:
        src = str(ipaddress.IPv6Address(ip[24:40] if outgoing else ip[8:24]))
        proto, body = ip[6], ip[40:]
        if proto == 58 and body and body[0] in _NDP:
            return None
    else:
        return None
    if proto in (6, 17) and len(body) >= 4:
        sport, dport = struct.unpack("!HH", body[:4])
        name = "tcp" if proto == 6 else "udp"
        flags = f" flags=0x{body[13]:02x}" if proto == 6 and len(body) >= 14 else ""
        return src, name, f"{name} {sport}->{dport}{flags} len={len(body)}"
    if proto in (1, 58) and len(body) >= 2:
        name = "icmp" if proto == 1 else "icmp6"
        return src, name, f"{name} type={body[0]} code={body[1]}"
    return src, str(proto), f"proto {proto}"


class Sniffer:
    """Collects, on a background thread, the packets `host` receives from `watch`."""

    def __init__(self, host: Host, watch: set[str], keep_udp_to: int | None = None,
                 sent_to: ipaddress.IPv4Network | None = None) -> None:
        self.watch = {str(ipaddress.ip_address(a)) for a in watch}
        self._sent_to = sent_to
        self.packets: list[tuple[str, str, str]] = []
        self.payloads: list[bytes] = []
        self._keep = keep_udp_to
        self._sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if self._sent_to is not None:
                if addr[2] == PACKET_OUTGOING:
                    out = _describe(frame, outgoing=True)
                    if out is not None and ipaddress.ip_address(out[0]) in self._sent_to:
                        self.packets.append(out)
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            if self._keep is not None:
                payload = _udp_payload(frame, self._keep)
                if payload is not None:
                    self.payloads.append(payload)
            got = _describe(frame)
            if got is not None and got[0] in self.watch and not _to_group(frame):
                self.packets.append(got)

    def __enter__(self) -> Sniffer:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
