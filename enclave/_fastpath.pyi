"""Type stub for the compiled fast path (enclave/_fastpath.pyx)."""

from typing import Final

from typing_extensions import Buffer

SODIUM_PATH: Final[str]
KEY_BYTES: Final[int]
NONCE_BYTES: Final[int]
TAG_BYTES: Final[int]
CIPHERS: Final[tuple[str, ...]]

def check_symbol(name: str) -> None: ...
def sodium_version_string() -> str | None: ...
def sodium_runtime_flags() -> dict[str, bool]: ...
def aes256gcm_available() -> bool: ...
def nonce_for(counter: int) -> bytes: ...

class AeadKey:
    """AEAD key for one direction; `cipher` is "aes256gcm" or "chacha20poly1305"."""

    @property
    def cipher(self) -> str: ...
    def __init__(self, cipher: str, key: Buffer) -> None: ...
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
