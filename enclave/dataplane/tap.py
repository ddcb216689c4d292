"""The TAP device the data plane reads Ethernet frames from and writes them to.

    /dev/net/tun --open--> fd --TUNSETIFF(IFF_TAP|IFF_NO_PI[|IFF_VNET_HDR])--> "enclave0"
                 [--open--> fd 1..N-1, each TUNSETIFF(...|IFF_MULTI_QUEUE): queues > 1]
                           |--TUNSETVNETHDRSZ(10)   virtio_net_hdr in front of every frame
                           |--TUNSETOFFLOAD(CSUM|TSO4|TSO6)  kernel may hand us TCP super-frames
                           '--O_NONBLOCK: the fd goes to the compiled loops as a plain int
    pyroute2 (rtnetlink): MAC, MTU, IPv6 addr_gen_mode eui64, overlay IPv4/prefix,
                          overlay IPv6/64 (nodad), link up

The IPv6 link-local address is generated from the (certified) MAC with modified EUI-64
(addr_gen_mode 0, set before the link comes up, whatever the system default is): the peers'
data planes accept IPv6 from this system only from that address, an overlay IPv6 its
certificate names, or :: (enclave/_fp_ident.pxi); a stable-privacy or random link-local
would not cross.

The overlay IPv6 (derived from the certificate, enclave.cert.overlay6) is added with
IFA_F_NODAD: it is certified and unique in the org, and the peers' data planes drop anyone
else's frames from it, so duplicate address detection across the overlay could only delay the
address (a second or more of "tentative") without ever finding a duplicate.

With ``vnet_hdr=True`` every read() returns, and every write() must start with, the 10-byte
legacy ``struct virtio_net_hdr`` (fields in host byte order; little-endian on x86/arm64):

    byte 0      1         2..3     4..5      6..7        8..9
         flags  gso_type  hdr_len  gso_size  csum_start  csum_offset

We use the 10-byte header, not the 12-byte virtio_net_hdr_v1 (which only appends num_buffers,
meaningless for a TAP): it is the kernel's default for TAP and what wireguard-go uses. The
size is nevertheless set explicitly with TUNSETVNETHDRSZ so the contract is visible.
csum_start counts from the first byte of the Ethernet frame.

Multi-queue (``queues=N`` > 1, one per data-plane worker): every fd is one queue of the same
device (IFF_MULTI_QUEUE). The tun driver puts a frame the kernel sends into the queue its
flow was last *written* from (automatic flow steering: the reverse flow's packets, which the
worker of that peer writes), else into the queue its flow hash picks, so one flow is read by
one worker; the header size and offloads are the device's, set once on the first fd.

The device is not persistent: closing the fd (every queue's fd) removes it, addresses and
routes included, so a crashed agent leaves nothing behind. The TUNSETOFFLOAD call doubles as
a start-up self-test: if the kernel refuses it (EINVAL/EIO) the device runs without offloads
and says so.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final, TypeVar

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from enclave.dataplane.mtu import DEFAULT_OVERLAY_MTU, MAX_TAP_MTU
from enclave.sysinfo import MAX_THREADS as MAX_QUEUES  # one queue per data-plane worker

log = logging.getLogger(__name__)
T = TypeVar("T")

TUN_PATH: Final = "/dev/net/tun"
IFNAMSIZ: Final = 16

# <linux/if_tun.h>
TUNSETIFF: Final = 0x400454CA
TUNGETIFF: Final = 0x800454D2
TUNGETFEATURES: Final = 0x800454CF
TUNSETOFFLOAD: Final = 0x400454D0
TUNGETVNETHDRSZ: Final = 0x800454D7
TUNSETVNETHDRSZ: Final = 0x400454D8
IFF_TAP: Final = 0x0002
IFF_MULTI_QUEUE: Final = 0x0100
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_TSO_ECN: Final = 0x08
TCP_OFFLOADS: Final = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6

# <linux/virtio_net.h>
VNET_HDR_LEN: Final = 10
VNET_HDR_FMT: Final = "=BBHHHH"  # host byte order, as the kernel reads it (legacy, non-v1)
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
VIRTIO_NET_HDR_F_DATA_VALID: Final = 2
VIRTIO_NET_HDR_GSO_NONE: Final = 0
VIRTIO_NET_HDR_GSO_TCPV4: Final = 1
VIRTIO_NET_HDR_GSO_TCPV6: Final = 4
VIRTIO_NET_HDR_GSO_ECN: Final = 0x80

DEFAULT_NAME: Final = "enclave0"
IN6_ADDR_GEN_MODE_EUI64: Final = 0  # <linux/if_link.h>
IFA_F_NODAD: Final = 0x02  # <linux/if_addr.h>: no duplicate address detection

# The TAP's transmit ring (tx_queue_len) is the overlay's bottleneck queue under a bulk flow:
#
#   inner TCP --> qdisc (pfifo_fast) --> tun ptr_ring [tx_queue_len entries] --> dp-tx read()
#                 never backlogged:       tail-drops when full; skbs are orphaned,
#                 tun never stops its     so TCP Small Queues cannot bound it either
#                 queue (fq_codel here
#                 would see nothing)
#
# Without offloads every entry is one <= MTU frame, and the kernel default of 1000 entries
# (~1.4 MB, ~25 ms at the ~0.45 Gbit/s this path carries) is classic bufferbloat: RTT p50
# under one TCP stream 6.4 ms with 1000, 1.0 ms with 256, same throughput (enclave bench
# --no-offload, median of 3); the price is tail drops the inner TCP sees as loss, as at
# any bounded bottleneck. With TSO an entry is a super-frame of up to 64 KB; shrinking the ring far
# enough to matter there (16..32 entries) only trades latency for tail drops, so it stays.
# With the data plane's AQM on (the default; enclave/_fp_aqm.pxi) the tx loop reads this ring
# eagerly into its own bytes-bounded ring, where CoDel sees each frame's waiting time, so this
# ring is only the overflow once that one is full (a flow that ignores drops and marks).
TXQUEUELEN_PLAIN: Final = 256
TXQUEUELEN_OFFLOAD: Final = 1000  # the kernel default (per queue: each has its own ring)


class TapError(OSError):
    """The TAP device could not be created or configured."""


def _ifreq(name: str, flags: int) -> bytes:
    """struct ifreq: char ifr_name[16]; short ifr_flags; padded to 40 bytes."""
    return struct.pack("16sH22x", name.encode(), flags)


def _check_name(name: str) -> None:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or any(c in raw for c in b"/ \t\n\0:"):
        raise ValueError(f"invalid interface name {name!r} (1..15 bytes, no '/', ':' or space)")


def _check_mac(mac: str) -> str:
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"invalid MAC address {mac!r}")
    try:
        octets = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"invalid MAC address {mac!r}") from None
    if octets[0] & 1:
        raise ValueError(f"MAC address {mac!r} is multicast")
    return mac.lower()


def random_mac() -> str:
    """A random locally administered unicast MAC address."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def _open_tun(name: str, flags: int) -> int:
    """open /dev/net/tun and attach it to interface `name` in the caller's network namespace."""
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags))
    except OSError as exc:
        os.close(fd)
        raise TapError(exc.errno, f"TUNSETIFF {name!r} failed: {exc.strerror}") from exc
    return fd


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn()`` in a short-lived thread that has entered network namespace ``ns``.

    setns() only moves the calling thread, so the rest of the process never changes namespace.
    Everything TapDevice does in a namespace goes through here: opening /dev/net/tun (a TAP
    lives in the namespace it was opened in) and configuring it with a plain IPRoute(), whose
    netlink socket belongs to the thread's namespace. Never IPRoute(netns=...): pyroute2 forks
    a child for it, and a forked copy of a threaded process (a test run, the bench) can run on
    where it should have exited.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            netns.setns(ns, flags=0)  # flags=0: never create the namespace by accident
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    t = threading.Thread(target=worker, name=f"tap-{ns}", daemon=True)
    t.start()
    t.join(timeout=10)
    if t.is_alive():  # pragma: no cover - setns/open/netlink do not block
        raise TapError(errno.ETIMEDOUT, f"TAP set-up in netns {ns!r} timed out")
    if failure:
        exc = failure[0]
        if isinstance(exc, (TapError, ValueError)):
            raise exc
        raise TapError(
            getattr(exc, "errno", None) or errno.EIO, f"TAP set-up in netns {ns!r} failed: {exc}"
        ) from exc
    return result[0]


def tun_features() -> int:
    """TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports."""
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        buf = fcntl.ioctl(fd, TUNGETFEATURES, b"\0" * 4)
    finally:
        os.close(fd)
    return int(struct.unpack("I", buf)[0])


class TapDevice:
    """An open, configured TAP interface; a context manager that removes it on exit.

    Attributes for the data-plane loops: ``fd`` (non-blocking; queue 0), ``fds`` (every
    queue's fd, ``queues`` of them: IFF_MULTI_QUEUE when more than one), ``vnet_hdr`` (every
    frame is prefixed by a VNET_HDR_LEN-byte virtio_net_hdr), ``offload`` (TUN_F_* flags in force;
    0 means the kernel sends only frames of at most ``mtu`` + 14 bytes), ``mtu``, ``mac``,
    ``name``, ``ifindex``, ``netns``, ``txqueuelen`` (the transmit ring set: TXQUEUELEN_PLAIN
    without offloads, TXQUEUELEN_OFFLOAD with).
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        mac: str | None = None,
        address: str | None = None,
        address6: str | None = None,
        mtu: int = DEFAULT_OVERLAY_MTU,
        vnet_hdr: bool = False,
        offload: bool = True,
        netns: str | None = None,
        up: bool = True,
        queues: int = 1,
    ) -> None:
        _check_name(name)
        if not 68 <= mtu <= MAX_TAP_MTU:
            raise ValueError(f"MTU {mtu} out of range 68..{MAX_TAP_MTU}")
        if not 1 <= queues <= MAX_QUEUES:
            raise ValueError(f"queues must be 1..{MAX_QUEUES}, got {queues}")
        iface = ipaddress.IPv4Interface(address) if address is not None else None
        iface6 = ipaddress.IPv6Interface(address6) if address6 is not None else None
        self.name = name
        self.mac = _check_mac(mac) if mac is not None else random_mac()
        self.address = iface
        self.address6 = iface6
        self.mtu = mtu
        self.netns = netns
        self.vnet_hdr = False
        self.offload = 0
        self.ifindex = 0
        self.txqueuelen = TXQUEUELEN_PLAIN
        self.fd = -1
        self.fds: list[int] = []
        self.queues = queues

        flags = IFF_TAP | IFF_NO_PI
        if queues > 1:
            if not tun_features() & IFF_MULTI_QUEUE:
                raise TapError(errno.EOPNOTSUPP, "the tun driver lacks IFF_MULTI_QUEUE: "
                               "run with one data-plane worker (--threads 1)")
            flags |= IFF_MULTI_QUEUE
        if vnet_hdr:
            if not tun_features() & IFF_VNET_HDR:
                log.warning("tun driver lacks IFF_VNET_HDR: %s runs without offloads", name)
                vnet_hdr = False
            else:
                flags |= IFF_VNET_HDR

        def open_queues() -> list[int]:
            fds: list[int] = []
            try:
                for _ in range(queues):
                    fds.append(_open_tun(name, flags))
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
            return fds

        self.fds = open_queues() if netns is None else in_netns(netns, open_queues)
        self.fd = self.fds[0]
        try:
            if vnet_hdr:
                self.vnet_hdr = True
                fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                if offload:
                    self.offload = self._set_offload(TCP_OFFLOADS)
            if self.offload:
                self.txqueuelen = TXQUEUELEN_OFFLOAD
            if netns is None:
                self._configure(up)
            else:
                in_netns(netns, lambda: self._configure(up))
        except BaseException:
            self.close()
            raise

    def _set_offload(self, wanted: int) -> int:
        """TUNSETOFFLOAD self-test: the flags in force (0 if the kernel refuses offloads)."""
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, wanted)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EIO, errno.EOPNOTSUPP):
                raise
            log.warning(
                "TUNSETOFFLOAD(CSUM|TSO4|TSO6) refused on %s (%s): running without TAP "
                "offloads, one frame per read",
                self.name,
                os.strerror(exc.errno or errno.EIO),
            )
            try:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)
            except OSError:
                pass
            return 0
        return wanted

    def _configure(self, up: bool) -> None:
        """Link settings and address over rtnetlink, in the caller's (thread's) namespace."""
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.name)
            if not found:
                raise TapError(errno.ENODEV, f"TAP {self.name!r} vanished after creation")
            self.ifindex = int(found[0])
            ipr.link("set", index=self.ifindex, address=self.mac, mtu=self.mtu,
                     txqlen=self.txqueuelen)
            self._eui64_link_local(ipr)
            if self.address is not None:
                ipr.addr(
                    "add",
                    index=self.ifindex,
                    address=str(self.address.ip),
                    prefixlen=self.address.network.prefixlen,
                )
            if self.address6 is not None:
                self._add_address6(ipr, self.address6)
            if up:
                ipr.link("set", index=self.ifindex, state="up")

    def _add_address6(self, ipr: IPRoute, iface: ipaddress.IPv6Interface) -> None:
        """The overlay IPv6, without DAD (see the module docstring). A kernel or link without
        IPv6 refuses it: the system then has its IPv4 only (``address6`` None), as without an
        overlay IPv6."""
        try:
            ipr.addr("add", index=self.ifindex, family=socket.AF_INET6, address=str(iface.ip),
                     prefixlen=iface.network.prefixlen, flags=IFA_F_NODAD)
        except NetlinkError as exc:
            log.warning("no overlay IPv6 %s on %s: %s", iface, self.name, exc)
            self.address6 = None

    def _eui64_link_local(self, ipr: IPRoute) -> None:
        """addr_gen_mode eui64: the link-local address comes from the MAC (see the module
        docstring). A kernel without IPv6 on this link refuses it; nothing to bind then."""
        mode = [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_EUI64)]
        try:
            ipr.link("set", index=self.ifindex,
                     IFLA_AF_SPEC={"attrs": [("AF_INET6", {"attrs": mode})]})
        except NetlinkError as exc:
            log.debug("no IPv6 addr_gen_mode on %s: %s", self.name, exc)

    # -- I/O helpers for tests and slow paths; the data plane uses `fd` from C ------------------

    def read(self, size: int = 65536 + VNET_HDR_LEN) -> bytes | None:
        """One frame (with its virtio_net_hdr when vnet_hdr), or None if none is queued."""
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return None

    def write(self, frame: bytes) -> int:
        """Write one frame (prefixed by a virtio_net_hdr when vnet_hdr) to the kernel."""
        return os.write(self.fd, frame)

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        """Close every queue's fd; the kernel then deletes the (non-persistent) interface."""
        fds, self.fds, self.fd = self.fds, [], -1
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> TapDevice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        queues = f" queues={self.queues}" if self.queues > 1 else ""
        return (
            f"TapDevice({self.name!r}{where} fd={self.fd}{queues} mtu={self.mtu} "
            f"vnet_hdr={self.vnet_hdr} offload={self.offload:#x})"
        )


def vnet_hdr_pack(
    flags: int = 0,
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    """A virtio_net_hdr (see the module docstring) in the kernel's byte order."""
    return struct.pack(VNET_HDR_FMT, flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def vnet_hdr_unpack(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) from a frame's prefix."""
    if len(data) < VNET_HDR_LEN:
        raise ValueError(f"need {VNET_HDR_LEN} bytes of virtio_net_hdr, got {len(data)}")
    f, g, h, s, cs, co = struct.unpack_from(VNET_HDR_FMT, data)
    return f, g, h, s, cs, co
