"""Type stub for the compiled fast path (enclave/_fastpath.pyx)."""

import socket
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any, Final

from typing_extensions import Buffer

from enclave.proto.keys import SessionKeys
from enclave.proto.wire import Cipher

SODIUM_PATH: Final[str]
KEY_BYTES: Final[int]
NONCE_BYTES: Final[int]
TAG_BYTES: Final[int]
AEGIS_NONCE_BYTES: Final[int]
AEGIS_TAG_BYTES: Final[int]
MAX_TAG_BYTES: Final[int]
CIPHERS: Final[tuple[str, ...]]

def check_symbol(name: str) -> None: ...
def sodium_version_string() -> str | None: ...
def sodium_runtime_flags() -> dict[str, bool]: ...
def aes256gcm_available() -> bool: ...
def aegis256_available() -> bool: ...
def tag_bytes(cipher: str | Cipher) -> int: ...
def nonce_for(counter: int, cipher: str | Cipher = ...) -> bytes: ...

class AeadKey:
    """AEAD key for one direction; `cipher` is "aes256gcm" / "chacha20poly1305" or a
    wire.Cipher (its value is the C kind); the `cipher` property is the name."""

    @property
    def cipher(self) -> str: ...
    @property
    def tag_bytes(self) -> int: ...
    def __init__(self, cipher: str | Cipher, key: Buffer) -> None: ...
    def seal_batch(
        self,
        buf: Buffer,
        offsets: Buffer,
        lengths: Buffer,
        counters: Buffer,
        headroom: int,
    ) -> bytearray:
        """offsets/lengths: uint32 buffers (array('I')); counters: uint64 (array('Q'))."""

    def open_batch(
        self,
        buf: Buffer,
        offsets: Buffer,
        lengths: Buffer,
        counters: Buffer,
        headroom: int,
    ) -> bytearray: ...

# --- _fp_replay.pxi ---
REPLAY_WINDOW: Final[int]

class ReplayWindow:
    """RFC 6479 anti-replay window: check() before decryption, update() after authentication."""

    def __init__(self, limit: int = ...) -> None: ...
    def check(self, counter: int) -> bool: ...
    def update(self, counter: int) -> bool: ...
    def reset(self) -> None: ...
    @property
    def last(self) -> int: ...

# --- _fp_switch.pxi ---
MAC_FLOOD: Final[int]
MAC_DROP: Final[int]

class MacTable:
    """MAC learning table: src MAC -> peer slot; lookup() gives a slot, MAC_FLOOD or MAC_DROP."""

    def __init__(
        self, capacity: int = 4096, max_age: int = 300_000, seed: int | None = None
    ) -> None: ...
    @property
    def capacity(self) -> int: ...
    def learn(self, frame: Buffer, slot: int, now: int) -> bool: ...
    def lookup(self, frame: Buffer, now: int) -> int: ...
    def forget_slot(self, slot: int) -> int: ...
    def count(self, now: int) -> int: ...

# --- _fp_udp.pxi ---
UDP_BATCH_MAX: Final[int]

class UdpBatchIO:
    """recvmmsg/sendmmsg (+ UDP GSO/GRO), GIL released; offsets/sizes/lengths are uint32."""

    def __init__(self) -> None: ...
    def recv(
        self,
        fd: int,
        buf: Buffer,
        offsets: Buffer,
        sizes: Buffer,
        lengths: Buffer,
        timeout: float = 0.0,
    ) -> int: ...
    def source(self, i: int) -> tuple[str, int]: ...
    def gro_size(self, i: int) -> int: ...
    def truncated(self, i: int) -> bool: ...
    def send(
        self,
        fd: int,
        buf: Buffer,
        offsets: Buffer,
        lengths: Buffer,
        dest: tuple[str, int] | list[tuple[str, int]],
        gso_size: int = 0,
    ) -> int: ...

# --- _fp_offload.pxi: TSO split / GRO coalesce for a vnet_hdr TAP ---------------------------
OFFLOAD_ERRORS: Final[dict[int, str]]
VNET_HDR_LEN: Final[int]
TSO_MAX_SEGS: Final[int]
GRO_MAX_FRAMES: Final[int]

class OffloadError(ValueError):
    code: int
    def __init__(self, code: int) -> None: ...

def tso_split_into(
    packet: Buffer,
    buf: Buffer,
    offsets: Buffer,
    lengths: Buffer,
    start: int = 0,
    headroom: int = 0,
    tailroom: int = 0,
    max_frame: int = 0,
) -> int:
    """offsets/lengths: uint32 buffers (array('I')); frame i at buf[offsets[i] + headroom:]."""

def tso_split(packet: Buffer, max_frame: int = 0) -> list[bytes]: ...
def gro_coalesce_into(
    buf: Buffer,
    offsets: Buffer,
    lengths: Buffer,
    headroom: int,
    arena: Buffer,
    verify: bool = True,
) -> list[tuple[int, int, int]]:
    """(where, offset, length) per TAP write; where 0 = buf (in place), 1 = arena."""

def gro_coalesce(
    frames: list[bytes], verify: bool = True, arena_size: int | None = None
) -> list[bytes]: ...

# --- _fp_ident.pxi: identity binding of a peer's decrypted frames (rx loop) -------------------
IDENT_PASS: Final[int]
IDENT_MAC_SPOOFED: Final[int]
IDENT_IP_SPOOFED: Final[int]
IDENT_ARP_SPOOFED: Final[int]
IDENT_VERDICTS: Final[dict[int, str]]

def ident_check(
    frame: Buffer,
    *,
    peer_mac: bytes,
    bridging: bool = False,
    overlay_ip4: str | IPv4Address | None = None,
    overlay_ip6: Iterable[str | IPv6Address] = (),
    routes: Iterable[str | IPv4Network] = (),
) -> int:
    """Verdict (IDENT_*) on one decrypted Ethernet frame from a peer certified with these."""

# --- _fp_epoch.pxi .. _fp_dataplane.pxi: the native data-plane loops and their Python class ---
AQM_TARGET_NS: Final[int]
AQM_INTERVAL_NS: Final[int]
AQM_RING_BYTES: Final[int]

class CoDel:
    """RFC 8289 CoDel state machine of the data plane, with the caller's clock (tests)."""

    def __init__(self, target_ns: int = ..., interval_ns: int = ...) -> None: ...
    def step(self, sojourn_ns: int, now_ns: int, empty: bool = False) -> bool: ...
    @property
    def dropping(self) -> bool: ...
    @property
    def count(self) -> int: ...
    @property
    def drop_next(self) -> int: ...

def ecn_mark(frame: bytearray | memoryview) -> bool: ...

AQM_SPARSE_FRAME: Final[int]
AQM_SPARSE_SLOTS: Final[int]

class AqmQueue:
    """The tx loop's queue (byte ring + sparse lane) without a TAP (tests)."""

    def push(self, frame: bytes | bytearray | memoryview, t_ns: int) -> bool: ...
    def pop(self) -> tuple[bytes, int, bool] | None: ...
    def __len__(self) -> int: ...

def flow_bucket(frame: bytes | bytearray | memoryview) -> int: ...

PEER_DROP_COUNTERS: Final[tuple[str, ...]]
GLOBAL_DROP_COUNTERS: Final[tuple[str, ...]]
PUNT_HEADER_LEN: Final[int]
PUNT_DATAGRAM: Final[int]
PUNT_FIRST_RX: Final[int]
PUNT_ROAMED: Final[int]
PUNT_TX: Final[int]
PUNT_INJECT: Final[int]
PUNT_RELAYED: Final[int]
INJECT_RELAYED: Final[int]
PUNT_BATCH_MAX: Final[int]

# --- _fp_relaypath.pxi ---
def frame_runs(
    data: Buffer, offset: int = 0, max_run: int = ...
) -> tuple[int, int, list[tuple[int, int, bool]]]:
    """(end of the last complete frame, complete frames, [(start, stop, is_data)]): runs of
    DATA frames still framed, other frames without their prefix; ValueError on a zero
    length."""
DATAPLANE_MAX_RX_KEYS: Final[int]
DATAPLANE_MAX_WORKERS: Final[int]

class DataPlane:
    """TAP -> peers and peers -> TAP loops (one native thread each); sessions in slots."""

    @property
    def punt_socket(self) -> socket.socket: ...
    @property
    def max_peers(self) -> int: ...
    @property
    def mtu(self) -> int: ...
    @property
    def workers(self) -> int: ...
    def worker_counters(self) -> list[dict[str, int]]: ...
    @property
    def running(self) -> bool: ...
    def __init__(
        self,
        tap_fd: int,
        udp_fd: int,
        *,
        vnet_hdr: bool = False,
        tap_gro: bool = False,
        udp_gso: bool = False,
        udp_gro: bool = False,
        mtu: int = 1406,
        max_peers: int = 256,
        mac_capacity: int = 4096,
        mac_max_age_ms: int = 300_000,
        aqm: bool = True,
        queues: Sequence[tuple[int, int]] = (),
    ) -> None: ...
    def tune(
        self,
        *,
        tx_flush_bytes: int | None = None,
        tx_flush_frames: int | None = None,
        rx_batch: int | None = None,
        aqm_target_us: int | None = None,
        aqm_interval_us: int | None = None,
    ) -> dict[str, int]:
        """Batching and CoDel knobs, only while stopped; returns the settings in force."""
    def install(
        self,
        slot: int,
        tx: SessionKeys | None,
        rx: Iterable[SessionKeys],
        *,
        peer_mac: bytes,
        allow_bridging: bool = False,
        addr: tuple[str, int] | None = None,
        overlay_ip4: IPv4Address | str | None = None,
        overlay_ip6: Iterable[IPv6Address | str] = (),
        routes: Iterable[IPv4Network | str] = (),
        tx_limit: int | None = None,
        via_python: bool = False,
        relay_channel: int = 0,
    ) -> None:
        """Keys as the handshake made them (their cipher, a wire.Cipher, is the C kind);
        the peer's certified MAC, overlay addresses and gateway routes stored with it."""
    def identity(self, slot: int) -> dict[str, Any] | None:
        """The certified addresses stored for `slot` (ip4, ip6, routes), read back from C."""

    def remove(self, slot: int) -> None: ...
    def set_addr(self, slot: int, addr: tuple[str, int] | None) -> None: ...
    def get_addr(self, slot: int) -> tuple[str, int] | None: ...
    def slots(self) -> list[int]: ...
    def counters(self, slot: int) -> dict[str, int]: ...
    def global_counters(self) -> dict[str, int | bool]: ...
    def activity(self) -> list[tuple[int, int, int, int | None]]: ...
    def inject(self, packet: Buffer) -> None: ...
    def inject_frames(self, frames: Buffer) -> None:
        """u16 big-endian length | packet, repeated, <= PUNT_BATCH_MAX bytes: one INJECT."""
    def reclaim(self) -> int: ...
    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    def close(self) -> None: ...

# --- _fp_relay.pxi ---
class TapRelay:
    """TAP <-> TAP relay with the overlay's AEAD work and no UDP (the bench's relay
    reference)."""

    def __init__(
        self,
        fd_a: int,
        fd_b: int,
        *,
        vnet_hdr: bool,
        passes: int,
        key: AeadKey | None = None,
        segment: int = 1420,
    ) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def counters(self) -> dict[str, Any]: ...
    def __enter__(self) -> TapRelay: ...
    def __exit__(self, *exc: object) -> None: ...

# --- _fp_relayfwd.pxi ---
RELAY_DROP_COUNTERS: Final[tuple[str, ...]]
RELAY_AQM_TARGET_NS: Final[int]
RELAY_AQM_INTERVAL_NS: Final[int]

class RelayForwarder:
    """The platform relay's DATA forwarding (table look-up, header rewrite, recvmmsg /
    sendmmsg) in thread enclave-relay; the rest arrives on punt_socket."""

    @property
    def punt_socket(self) -> socket.socket: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def running(self) -> bool: ...
    def __init__(
        self, udp_fd: int, *, max_entries: int = 65536, rate: float = 200000.0,
        burst: float = 20000.0, punt_rate: float = 20000.0, punt_burst: float = 2000.0,
        aqm_target_ns: int = ..., aqm_interval_ns: int = ...,
    ) -> None: ...
    def install(
        self, src: tuple[str, int], channel: int, dst: tuple[str, int], dst_channel: int,
        lifetime: float,
    ) -> None: ...
    def remove(self, src: tuple[str, int], channel: int) -> bool: ...
    def lookup(
        self, src: tuple[str, int], channel: int
    ) -> tuple[tuple[str, int], int, float, int, int] | None: ...
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
    def classify(
        self, data: Buffer, src: tuple[str, int]
    ) -> tuple[str | bytes | tuple[str, int], ...]:
        """("forward", datagram, dst) / ("punt",) / ("drop", reason)."""
    def counters(self) -> dict[str, int]: ...
    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    def close(self) -> None: ...
