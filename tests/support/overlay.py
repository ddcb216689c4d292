"""Static-key overlays for data-plane tests: N lab hosts, each with a TAP + DataPlane in-process.

    lab (enclave.netlab, public hosts on 198.18.0.0/16)
    +-------------------------+        +-------------------------+
    | netns pa                |  UDP   | netns pb                |
    |  enclave0 100.64.0.1/10 |<------>|  enclave0 100.64.0.2/10 |
    |  02:00:00:00:00:01      | 51820  |  02:00:00:00:00:02      |
    +-------------------------+        +-------------------------+
           ^ TAP fd + UDP fd                   ^ TAP fd + UDP fd
           '--------- DataPlane threads in this test process -------'

udp_roundtrip / tcp_transfer carry traffic between two members over the overlay.

Keys are random (nacl.utils.random) and installed as the Node would hand them over (one
PeerKeysUpdated per peer, applied with DataPlane.apply, the member's certified identity in it):
for each ordered pair (i, j), i's tx key for j is j's rx key from i, with matching indices.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import nacl.utils

from enclave.cert import SystemIdentity
from enclave.dataplane.engine import DataPlane
from enclave.dataplane.tap import TapDevice
from enclave.netlab import Host, Lab
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.keys import SessionKeys
from enclave.proto.wire import Cipher

PORT = 51820


def overlay_ip(i: int) -> str:
    return f"100.64.0.{i + 1}"


def overlay_mac(i: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, i + 1])


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def index_of(src: int, dst: int) -> int:
    """Receiver index `dst` allocated for packets from `src` (nonzero, unique)."""
    return 0x1000 * (dst + 1) + src + 1


def member_identity(m: Member, *, bridging: bool = False) -> SystemIdentity:
    """Member m's identity as its certificate would state it: its MAC and overlay address; a
    gateway route when it may bridge (carry frames from other MACs)."""
    routes = (ipaddress.IPv4Network("192.168.0.0/16"),) if bridging else ()
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return SystemIdentity(
        name=m.name, org="lab", overlay_ip=ipaddress.IPv4Address(overlay_ip(m.n)),
        overlay_prefix=10, mac=overlay_mac(m.n), tags=(), public_key=bytes(32), serial=m.n + 1,
        not_before=start, not_after=start + dt.timedelta(days=3650), gateway_routes=routes)


@dataclass
class Member:
    host: Host
    n: int
    tap: TapDevice
    sock: socket.socket
    dp: DataPlane
    name: str = ""
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # peer -> (tx, rx)

    @property
    def ip(self) -> str:
        return overlay_ip(self.n)


class Overlay:
    """Build members on lab hosts, install static sessions between them, tear down."""

    def __init__(
        self,
        lab: Lab,
        hosts: list[Host],
        *,
        offload: bool = True,
        cipher: Cipher = Cipher.AES256_GCM,
        mtu: int = 1406,
        tap_mtu: int | None = None,
        ipv6: bool = False,
        udp_offload: bool | None = None,
        aqm: bool = True,
        threads: int = 1,
    ) -> None:
        self.lab = lab
        self.cipher = cipher
        self.members: list[Member] = []
        try:
            for n, host in enumerate(hosts):
                tap = TapDevice(
                    "enclave0",
                    mac=mac_str(overlay_mac(n)),
                    address=f"{overlay_ip(n)}/10",
                    mtu=tap_mtu or mtu,
                    vnet_hdr=offload,
                    offload=offload,
                    netns=host.netns,
                    queues=threads,
                )
                if ipv6:
                    host.run(["sysctl", "-qw", "net.ipv6.conf.enclave0.disable_ipv6=0"], check=True)
                    host.run(
                        [
                            "ip",
                            "-6",
                            "addr",
                            "add",
                            f"fd00::{n + 1}/64",
                            "dev",
                            "enclave0",
                            "nodad",
                        ],
                        check=True,
                    )
                sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
                if threads > 1:  # the DataPlane binds a socket per further worker beside it
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((str(host.ip), PORT))
                dp = DataPlane(
                    tap, sock, offload=offload, mtu=mtu, max_peers=16, udp_offload=udp_offload,
                    aqm=aqm,
                )
                self.members.append(Member(host, n, tap, sock, dp, name=host.name))
            for m in self.members:
                m.dp.start()
        except BaseException:
            self.close()
            raise

    def update_for(self, a: Member, b: Member, *, tx_key: bytes, rx_key: bytes,
                   bridging: bool = False) -> PeerKeysUpdated:
        tx = SessionKeys(index_of(b.n, a.n), index_of(a.n, b.n), rx_key, tx_key, self.cipher)
        return PeerKeysUpdated(b.name, (str(b.host.ip), PORT), tx, (tx,),
                               member_identity(b, bridging=bridging))

    def connect(
        self, a: Member, b: Member, *, bridging: tuple[bool, bool] = (False, False)
    ) -> None:
        """Install a session both ways between a and b (fresh random keys)."""
        k_ab = nacl.utils.random(32)
        k_ba = nacl.utils.random(32)
        a.keys[b.n] = (k_ab, k_ba)
        b.keys[a.n] = (k_ba, k_ab)
        a.dp.apply(self.update_for(a, b, tx_key=k_ab, rx_key=k_ba, bridging=bridging[1]))
        b.dp.apply(self.update_for(b, a, tx_key=k_ba, rx_key=k_ab, bridging=bridging[0]))

    def mesh(self) -> None:
        for i, a in enumerate(self.members):
            for b in self.members[i + 1 :]:
                self.connect(a, b)

    def close(self) -> None:
        for m in self.members:
            try:
                m.dp.close()
            finally:
                m.tap.close()
                m.sock.close()
        self.members = []

    def __enter__(self) -> Overlay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- traffic between members (their hosts' namespaces) ------------------------------------


LOCAL_ETHERTYPE = 0x88B5  # IEEE 802 local experimental: frames no protocol stack answers


def frame_socket(m: Member) -> socket.socket:
    """An AF_PACKET socket on m's enclave0 sending and receiving LOCAL_ETHERTYPE frames."""
    s = m.host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(LOCAL_ETHERTYPE))
    s.bind(("enclave0", LOCAL_ETHERTYPE))
    return s


class FrameTap:
    """What reaches a member's enclave0 as LOCAL_ETHERTYPE frames, one frame a get()."""

    def __init__(self, m: Member) -> None:
        self.s = frame_socket(m)
        self.s.settimeout(0.3)

    def get(self) -> bytes | None:
        """The next frame, or None after 0.3 s without one."""
        try:
            return self.s.recv(4096)
        except TimeoutError:
            return None


def udp_roundtrip(a: Member, b: Member, payload: bytes, port: int = 5000) -> bytes:
    rs = b.host.socket()
    rs.bind((b.ip, port))
    rs.settimeout(0.3)
    ss = a.host.socket()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ss.sendto(payload, (b.ip, port))  # first one may wait for ARP
            try:
                return rs.recv(65535)
            except TimeoutError:
                continue
        raise AssertionError("no UDP datagram crossed the overlay")
    finally:
        rs.close()
        ss.close()


def tcp_transfer(a: Member, b: Member, nbytes: int, port: int = 5001) -> tuple[str, str]:
    """Send nbytes of random data a -> b over TCP; (sha256 sent, sha256 received)."""
    data = os.urandom(nbytes)
    ls = b.host.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((b.ip, port))
    ls.listen(1)
    ls.settimeout(10)
    got = hashlib.sha256()
    done = threading.Event()

    def serve() -> None:
        try:
            conn, _ = ls.accept()
            conn.settimeout(10)
            with conn:
                while chunk := conn.recv(1 << 16):
                    got.update(chunk)
        finally:
            done.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cs = a.host.socket(socket.AF_INET, socket.SOCK_STREAM)
    cs.settimeout(10)
    try:
        cs.connect((b.ip, port))
        cs.sendall(data)
        cs.shutdown(socket.SHUT_WR)
        assert done.wait(20), "TCP receiver did not finish"
    finally:
        cs.close()
        ls.close()
    t.join(5)
    return hashlib.sha256(data).hexdigest(), got.hexdigest()
