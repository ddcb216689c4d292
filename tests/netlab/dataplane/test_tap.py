"""A real TAP device (enclave/dataplane/tap.py) in a private network namespace.

    netns enl-tap-<random>
    +---------------------------------------------+
    |  kernel TCP socket 100.64.0.1 ----> enclave0 (TAP, vnet_hdr, CSUM|TSO4|TSO6)
    |                                        | fd  |
    +----------------------------------------|----+
                                             v
                     this test = the "peer" 100.64.0.2 (static neighbour 02:00:00:00:00:02):
                     answers the SYN, reads the kernel's TSO super-frame and splits it with
                     tso_split; sends data back as one GRO super-frame (gro_coalesce).

Nothing leaves the namespace; the namespace (and with it the TAP) is deleted afterwards.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from enclave.dataplane import mtu as mtu_mod
from enclave.dataplane import tap as tapmod
from enclave.dataplane.tap import TapDevice, TapError
from tests.support.offload_frames import csum_sum, pseudo
from tests.support.scratch_ns import scratch_ns

fp = pytest.importorskip("enclave._fastpath")

pytestmark = [pytest.mark.netlab, pytest.mark.root]

LOCAL_IP, PEER_IP = "100.64.0.1", "100.64.0.2"
LOCAL_MAC, PEER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
MTU = mtu_mod.DEFAULT_OVERLAY_MTU
T = TypeVar("T")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _static_neighbour(ns: str, ip: str) -> None:
    """PEER_MAC as ip's permanent neighbour on enclave0 in ns (no ARP/NDP needed)."""
    _ip("-n", ns, "neigh", "add", ip, "lladdr", PEER_MAC, "dev", "enclave0", "nud", "permanent")


@pytest.fixture
def ns() -> Iterator[str]:
    # no IPv6 on new links: keeps router solicitations / MLD reports off the TAP
    with scratch_ns("tap", "net.ipv6.conf.default.disable_ipv6=1") as name:
        yield name


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run fn in a thread that entered netns `name` (the main thread never moves)."""
    from pyroute2 import netns

    box: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            netns.setns(name, flags=0)
            box.append(fn())
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    if err:
        raise err[0]
    return box[0]


def links(name: str) -> str:
    return subprocess.run(
        ["ip", "-n", name, "-o", "link", "show"], capture_output=True, text=True, timeout=10
    ).stdout


# --- a minimal TCP/IP model for the checks, independent of the C code ----------------------------
# (RFC 1071 sum and pseudo-header: the TSO/GRO reference model, tests/support/offload_frames.py)


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


@dataclass(frozen=True)
class Fam:
    v6: bool
    local: str
    peer: str

    @property
    def af(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self.v6 else socket.AF_INET

    @property
    def ethertype(self) -> bytes:
        return b"\x86\xdd" if self.v6 else b"\x08\x00"


V4 = Fam(False, LOCAL_IP, PEER_IP)
V6 = Fam(True, "fd00::1", "fd00::2")


def tcp_frame(
    fam: Fam,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    data: bytes = b"",
    opts: bytes = b"",
    ident: int = 1,
) -> bytes:
    """An Ethernet frame from the peer to the TAP with correct checksums."""
    src, dst = socket.inet_pton(fam.af, fam.peer), socket.inet_pton(fam.af, fam.local)
    doff = (20 + len(opts)) // 4 << 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff, flags, 65535, 0, 0)
    tcp += opts + data
    check = 0xFFFF ^ csum_sum(pseudo(src, dst, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", check) + tcp[18:]
    if fam.v6:
        ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), ident, 0x4000, 64, 6, 0)
        ip += src + dst
        ip = ip[:10] + struct.pack("!H", 0xFFFF ^ csum_sum(ip)) + ip[12:]
    return mac(LOCAL_MAC) + mac(PEER_MAC) + fam.ethertype + ip + tcp


def parse_tcp(fam: Fam, frame: bytes) -> dict[str, int | bytes]:
    """Fields of an IPv4|6/TCP frame; asserts the checksums and the lengths are right."""
    assert frame[12:14] == fam.ethertype
    if fam.v6:
        ip = frame[14:54]
        assert struct.unpack("!H", ip[4:6])[0] == len(frame) - 54
        src, dst, ident = ip[8:24], ip[24:40], 0
    else:
        ip = frame[14 : 14 + (frame[14] & 15) * 4]
        assert csum_sum(ip) == 0xFFFF, "IPv4 header checksum"
        assert struct.unpack("!H", ip[2:4])[0] == len(frame) - 14
        src, dst, ident = ip[12:16], ip[16:20], struct.unpack("!H", ip[4:6])[0]
    tcp = frame[14 + len(ip) :]
    assert csum_sum(pseudo(src, dst, len(tcp)) + tcp) == 0xFFFF, "TCP checksum"
    doff = (tcp[12] >> 4) * 4
    sport, dport, seq, ack = struct.unpack("!HHII", tcp[:12])
    return {
        "sport": sport,
        "dport": dport,
        "seq": seq,
        "ack": ack,
        "flags": tcp[13],
        "id": ident,
        "data": tcp[doff:],
        "dst_mac": frame[:6],
        "src_mac": frame[6:12],
    }


def read_until(tap: TapDevice, want: Callable[[bytes], bool], limit: int = 200) -> bytes:
    """Read frames (vnet header included) until `want` accepts one; fails after 5 s idle."""
    for _ in range(limit):
        r, _, _ = select.select([tap.fd], [], [], 5.0)
        assert r, "no frame from the TAP within 5 s"
        pkt = tap.read()
        if pkt is not None and want(pkt):
            return pkt
    raise AssertionError("wanted frame not seen")


def is_tcp(fam: Fam, pkt: bytes, off: int, flag: int = 0) -> bool:
    f = pkt[off:]
    if len(f) < (74 if fam.v6 else 54) or f[12:14] != fam.ethertype:
        return False
    if fam.v6:
        if f[20] != 6:
            return False
        l4 = 54
    else:
        if f[23] != 6:
            return False
        l4 = 14 + (f[14] & 15) * 4
    return not flag or bool(f[l4 + 13] & flag)


# --- tests ---------------------------------------------------------------------------------------


def test_tap_configured_in_namespace_and_removed_on_close(ns: str) -> None:
    with TapDevice(mac=LOCAL_MAC, address=f"{LOCAL_IP}/10", mtu=1300, netns=ns) as tap:
        assert tap.fd >= 0 and not tap.vnet_hdr and tap.offload == 0
        assert os.get_blocking(tap.fd) is False
        shown = subprocess.run(
            ["ip", "-n", ns, "-o", "addr", "show", "enclave0"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        assert f"inet {LOCAL_IP}/10" in shown
        line = next(ln for ln in links(ns).splitlines() if "enclave0" in ln)
        assert "mtu 1300" in line and LOCAL_MAC in line and ",UP" in line
        assert (
            "enclave0"
            not in subprocess.run(
                ["ip", "-o", "link"], capture_output=True, text=True, timeout=10
            ).stdout
        )

        # the kernel's UDP datagram to a static neighbour comes out as one plain frame
        _static_neighbour(ns, PEER_IP)
        sock = in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        with sock:
            sock.sendto(b"hello enclave", (PEER_IP, 9999))
        frame = read_until(tap, lambda p: len(p) > 23 and p[12:14] == b"\x08\x00" and p[23] == 17)
        assert frame[:6] == mac(PEER_MAC) and frame[6:12] == mac(LOCAL_MAC)
        assert frame.endswith(b"hello enclave")
    assert "enclave0" not in links(ns)
    assert tap.closed


def test_tap_errors_leave_nothing_behind(ns: str) -> None:
    with pytest.raises(TapError):
        TapDevice(netns="enl-tap-does-not-exist-" + secrets.token_hex(3))
    with pytest.raises(ValueError):
        TapDevice("bad/name", netns=ns)
    with pytest.raises(ValueError):
        TapDevice(mac="01:00:5e:00:00:01", netns=ns)  # multicast MAC
    with pytest.raises(ValueError):
        TapDevice(mtu=20, netns=ns)
    with TapDevice("enclave1", netns=ns):
        with pytest.raises(TapError):  # the name is taken by a live TAP: EBUSY
            TapDevice("enclave1", netns=ns)
        assert "enclave1" in links(ns)
    assert "enclave1" not in links(ns)
    # a failure after the device exists (the kernel refuses MTU 65535 for a TAP, max 65521)
    # closes the fd, which removes the half-configured device
    with pytest.raises(Exception, match="Invalid argument"):
        TapDevice("enclave2", netns=ns, mtu=65535)
    assert "enclave2" not in links(ns)


def test_offload_refusal_falls_back(ns: str, caplog: pytest.LogCaptureFixture) -> None:
    with TapDevice(vnet_hdr=True, netns=ns) as tap:
        assert tap.vnet_hdr and tap.offload == tapmod.TCP_OFFLOADS
        caplog.set_level(logging.WARNING, logger="enclave.dataplane.tap")
        assert tap._set_offload(1 << 20) == 0  # an unknown TUN_F_* bit: the kernel says EINVAL
        assert "running without TAP offloads" in caplog.text


@pytest.mark.parametrize("fam", [V4, V6], ids=["ipv4", "ipv6"])
def test_tso_superframe_from_kernel_split_and_gro_back(ns: str, fam: Fam) -> None:
    gso_type = tapmod.VIRTIO_NET_HDR_GSO_TCPV6 if fam.v6 else tapmod.VIRTIO_NET_HDR_GSO_TCPV4
    l4 = 54 if fam.v6 else 34
    with TapDevice(
        mac=LOCAL_MAC, address=f"{LOCAL_IP}/10", mtu=MTU, vnet_hdr=True, netns=ns
    ) as tap:
        assert tap.vnet_hdr and tap.offload == tapmod.TCP_OFFLOADS
        if fam.v6:
            _ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.enclave0.disable_ipv6=0")
            _ip("-n", ns, "addr", "add", f"{fam.local}/64", "dev", "enclave0", "nodad")
        _static_neighbour(ns, fam.peer)
        sock = in_netns(ns, lambda: socket.socket(fam.af, socket.SOCK_STREAM))
        with sock:
            sock.setblocking(False)
            assert sock.connect_ex((fam.peer, 5201)) in (115, 11)  # EINPROGRESS
            # 1. the SYN (CHECKSUM_PARTIAL from the kernel: tso_split completes it)
            pkt = read_until(tap, lambda p: is_tcp(fam, p, 10, 0x02))
            [syn_frame] = fp.tso_split(pkt)
            syn = parse_tcp(fam, syn_frame)
            mss = MTU - (l4 - 14) - 20
            # 2. our SYN-ACK (MSS option only: no timestamps, no window scaling)
            synack = tcp_frame(
                fam,
                5201,
                int(syn["sport"]),
                7000,
                int(syn["seq"]) + 1,
                0x12,
                opts=struct.pack("!BBH", 2, 4, mss),
            )
            tap.write(tapmod.vnet_hdr_pack() + synack)
            _, w, _ = select.select([], [sock], [], 5.0)
            assert w and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            # 3. a large write leaves the kernel as TSO super-frame(s) on the TAP
            data = bytes((i * 31 + 7) & 0xFF for i in range(60000))
            sent = sock.send(data)
            assert sent > 10 * mss
            pkt = read_until(tap, lambda p: p[1] == gso_type)
            flags, _gso, _hl, gso_size, cstart, coff = tapmod.vnet_hdr_unpack(pkt)
            assert flags & tapmod.VIRTIO_NET_HDR_F_NEEDS_CSUM and (cstart, coff) == (l4, 16)
            assert gso_size == mss
            segs = fp.tso_split(pkt, max_frame=mtu_mod.max_frame_len(MTU))
            assert len(segs) >= 2
            first = parse_tcp(fam, segs[0])
            offset = int(first["seq"]) - (int(syn["seq"]) + 1)
            stream = b""
            for i, seg in enumerate(segs):
                f = parse_tcp(fam, seg)
                assert len(seg) <= mtu_mod.max_frame_len(MTU)
                assert f["seq"] == (int(first["seq"]) + len(stream)) % 2**32
                if not fam.v6:
                    assert f["id"] == (int(first["id"]) + i) & 0xFFFF
                assert (f["sport"], f["dport"]) == (syn["sport"], 5201)
                assert f["dst_mac"] == mac(PEER_MAC) and f["src_mac"] == mac(LOCAL_MAC)
                if i < len(segs) - 1:
                    assert len(f["data"]) == mss and not int(f["flags"]) & 0x09  # no FIN/PSH
                stream += bytes(f["data"])
            assert stream == data[offset : offset + len(stream)]

            # 4. the other direction: 10 segments coalesced into ONE super-frame write
            ack_no = (int(syn["seq"]) + 1 + offset + len(stream)) % 2**32
            reply = bytes((i * 13 + 1) & 0xFF for i in range(10 * mss))
            frames = [
                tcp_frame(
                    fam,
                    5201,
                    int(syn["sport"]),
                    7001 + i * mss,
                    ack_no,
                    0x10,
                    reply[i * mss : (i + 1) * mss],
                    ident=100 + i,
                )
                for i in range(10)
            ]
            out = fp.gro_coalesce(frames)
            assert len(out) == 1 and out[0][1] == gso_type
            assert tap.write(out[0]) == len(out[0])
            got = b""
            while len(got) < len(reply):
                r, _, _ = select.select([sock], [], [], 5.0)
                assert r, f"kernel delivered only {len(got)} of {len(reply)} bytes"
                got += sock.recv(65536)
            assert got == reply
    assert "enclave0" not in links(ns)
