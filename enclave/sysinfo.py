"""Facts about this host that the data plane depends on: libsodium, CPU, kernel features.

Everything here is a read-only probe. The kernel probes leave nothing behind: the TAP offload
probe runs in a thread that first moves itself into a fresh, private network namespace
(unshare(CLONE_NEWNET) affects only the calling thread), so the throwaway TAP device is never
visible in the host's namespace and disappears with the fd and the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import importlib.metadata
import os
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

# --- libsodium ---------------------------------------------------------------------------------

# PyNaCl release -> bundled libsodium, for when the changelog in the metadata is unreadable.
_PYNACL_BUNDLED_SODIUM: dict[tuple[int, int], str] = {(1, 6): "1.0.20", (1, 5): "1.0.18"}
_SECTION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)\b[^\n]*\n-{3,}\s*$", re.MULTILINE)
_SODIUM_UPDATE_RE = re.compile(r"libsodium`*\s+to\s+(\d+\.\d+\.\d+)")


def _vtuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def bundled_sodium_from_changelog(description: str, pynacl_version: str) -> str | None:
    """The libsodium version PyNaCl `pynacl_version` bundles, read from its changelog text:
    the newest "Update(d) libsodium to X" entry at or below that release."""
    installed = _vtuple(pynacl_version)
    matches = list(_SECTION_RE.finditer(description))
    for i, m in enumerate(matches):
        section_version = tuple(int(g) for g in m.groups())
        if section_version > installed:
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(description)
        found = _SODIUM_UPDATE_RE.search(description, m.end(), end)
        if found:
            return found.group(1)
    return None


@functools.cache
def libsodium_version() -> str:
    """Version of the libsodium the fast path uses (PyNaCl's copy), e.g. "1.0.20"."""
    try:
        # imported here: keeps `enclave` start-up fast; a build without it falls back below
        from enclave import _fastpath

        own = _fastpath.sodium_version_string()
        if own:
            return own
    except ImportError:
        pass
    try:
        dist = importlib.metadata.distribution("pynacl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (PyNaCl not installed)"
    description = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
    found = bundled_sodium_from_changelog(str(description), dist.version)
    if found:
        return found
    major, minor = (*_vtuple(dist.version), 0, 0)[:2]
    return _PYNACL_BUNDLED_SODIUM.get((major, minor), "unknown")


def pynacl_version() -> str:
    try:
        return importlib.metadata.version("pynacl")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- CPU ---------------------------------------------------------------------------------------

# Flags (py-cpuinfo spelling) that matter for the AEAD choice and speed.
CRYPTO_CPU_FLAGS: tuple[str, ...] = (
    "aes", "pclmulqdq", "ssse3", "avx", "avx2", "vaes", "vpclmulqdq", "avx512f",
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    flags: frozenset[str] = field(default_factory=frozenset)

    def crypto_flags(self) -> dict[str, bool]:
        return {f: f in self.flags for f in CRYPTO_CPU_FLAGS}


@functools.cache
def cpu_info() -> CpuInfo:
    """py-cpuinfo's view of the CPU. Slow (~1 s, it spawns a process), so computed once."""
    # imported here: keeps `enclave` start-up fast (py-cpuinfo is only needed for this)
    import cpuinfo

    info: dict[str, Any] = cpuinfo.get_cpu_info()
    return CpuInfo(
        model=str(info.get("brand_raw") or "unknown"),
        arch=str(info.get("arch") or "unknown"),
        flags=frozenset(str(f) for f in info.get("flags", [])),
    )


def kernel_cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU flags the kernel reports (the first ``flags`` line of /proc/cpuinfo, x86), or
    None where there is none. Same spelling as py-cpuinfo, whose first source on Linux this is."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def crypto_flags_fast() -> dict[str, bool]:
    """CRYPTO_CPU_FLAGS from the kernel's view, without py-cpuinfo's process spawn (~1.2 s
    here, on the agent's start-up path); py-cpuinfo where the kernel shows no flags line."""
    flags = kernel_cpu_flags()
    if flags is None:
        return cpu_info().crypto_flags()
    return {f: f in flags for f in CRYPTO_CPU_FLAGS}


# --- kernel: TUN/TAP ---------------------------------------------------------------------------
# Constants from <linux/if_tun.h>; ioctl numbers are _IOR/_IOW('T', nr, int/unsigned int).

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNGETFEATURES = 0x800454CF
IFF_TAP = 0x0002
IFF_NAPI = 0x0010
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
CLONE_NEWNET = 0x40000000

# --- kernel: UDP (from <linux/udp.h>) ---
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104


def tun_features(path: str = TUN_PATH) -> dict[str, bool] | str:
    """TUNGETFEATURES on an unattached /dev/net/tun fd (creates no device)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open {path}: {e.strerror}"
    try:
        raw = fcntl.ioctl(fd, TUNGETFEATURES, b"\0\0\0\0")
    except OSError as e:
        return f"TUNGETFEATURES failed: {e.strerror}"
    finally:
        os.close(fd)
    feats = struct.unpack("I", raw)[0]
    return {
        "tap": bool(feats & IFF_TAP),
        "no_pi": bool(feats & IFF_NO_PI),
        "vnet_hdr": bool(feats & IFF_VNET_HDR),
        "multi_queue": bool(feats & IFF_MULTI_QUEUE),
        "napi": bool(feats & IFF_NAPI),
    }


def _probe_tap_offload_here() -> dict[str, bool]:
    """Create an unnamed vnet_hdr TAP on a fresh fd, try the offloads, close it."""
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", b"", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
        result: dict[str, bool] = {}
        for name, flags in (
            ("tso", TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6),
            ("uso", TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6),
        ):
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
                result[name] = True
            except OSError:
                result[name] = False
        return result
    finally:
        os.close(fd)


def tap_offload() -> dict[str, bool] | str:
    """TUNSETOFFLOAD CSUM|TSO4|TSO6 (and USO) on a throwaway TAP in a private netns.

    Returns the flags, or a string saying why it could not be probed (e.g. not root).
    """
    out: list[dict[str, bool] | str] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            out.append(f"not probed: unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
            return
        try:
            out.append(_probe_tap_offload_here())
        except OSError as e:
            out.append(f"not probed: {e.strerror or e}")

    # The thread (and with it the private namespace) ends when run() returns.
    t = threading.Thread(target=run, name="enclave-tap-probe", daemon=True)
    t.start()
    t.join(timeout=10)
    return out[0] if out else "not probed: probe thread did not finish"


def udp_offload(timeout: float = 1.0) -> dict[str, bool]:
    """UDP_SEGMENT (GSO) and UDP_GRO on loopback sockets.

    udp_segment is True only if a 3-segment GSO send really arrives as 3 datagrams.
    """
    result = {"udp_segment": False, "udp_gro": False}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM
    ) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(timeout)
        try:
            tx.setsockopt(SOL_UDP, UDP_SEGMENT, 500)
            tx.sendto(b"a" * 500 + b"b" * 500 + b"c" * 200, rx.getsockname())
            sizes = [len(rx.recv(2048)) for _ in range(3)]
            result["udp_segment"] = sizes == [500, 500, 200]
        except OSError as e:
            if e.errno not in (errno.ENOPROTOOPT, errno.EINVAL, errno.EIO) and not isinstance(
                e, TimeoutError
            ):
                raise
        try:
            rx.setsockopt(SOL_UDP, UDP_GRO, 1)
            result["udp_gro"] = rx.getsockopt(SOL_UDP, UDP_GRO) == 1
        except OSError as e:
            if e.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
                raise
    return result


MAX_DEFAULT_THREADS = 4  # data-plane workers by default: one per core, at most this many
MAX_THREADS = 64  # data-plane workers at most (= _fastpath.DATAPLANE_MAX_WORKERS, TAP queues)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; cgroup quotas are not counted)."""
    return len(os.sched_getaffinity(0)) or 1


def default_threads(cores: int | None = None) -> int:
    """Data-plane workers `enclave up` runs without --threads: one per core, at most
    MAX_DEFAULT_THREADS (a tx and an rx thread each; beyond 4 the gain depends on the peers:
    see docs/PERFORMANCE.md)."""
    n = usable_cores() if cores is None else cores
    return max(1, min(n, MAX_DEFAULT_THREADS))


def kernel_features() -> dict[str, Any]:
    """Everything the data plane wants from the kernel, probed without side effects."""
    return {
        "kernel": os.uname().release,
        "tun": tun_features(),
        "tap_offload": tap_offload(),
        "udp": udp_offload(),
    }
