# cython: language_level=3
"""enclave's compiled fast path: per-frame work with the GIL released.

Import-time: libsodium is resolved from PyNaCl's bundled shared object (see _sodium.pxd); a
missing symbol is an ImportError naming it. There is no Python fallback for the data path:
callers that cannot import this module must report it and stop (``enclave info`` does).

What lives here (each part in its own include file):

    _fp_aead.pxi    AeadKey: AES256-GCM / ChaCha20-Poly1305-IETF / AEGIS-256 seal/open in
                    place, batched
    _fp_replay.pxi  rw_window: RFC 6479 anti-replay window (8128 counters), ReplayWindow
    _fp_switch.pxi  mt_table: MAC learning switch table (src MAC -> peer slot), MacTable
    _fp_udp.pxi     udp_batch: recvmmsg/sendmmsg with UDP GSO/GRO, UdpBatchIO
    _fp_epoch.pxi   the loops' shared state: peer table snapshots, keys, epoch reclamation
    _fp_punt.pxi    the punt socket between the loops and Python (header drawn there)
    _fp_icmp.pxi    ICMP "too big" written back to the TAP for oversized frames
    _fp_ident.pxi   fp_ident_check: a peer's frame may claim only its certified MAC / IPs
    _fp_aqm.pxi     CoDel (RFC 8289) on the tx ring and the UDP receive queue, ECN marking
    _fp_tx.pxi      the tx loop ("inside": TAP -> UDP), thread enclave-dp-tx[N] per worker
    _fp_rx.pxi      the rx loop ("outside": UDP -> TAP), thread enclave-dp-rx[N] per worker
    _fp_relaypath.pxi the UDP relay's header on the fast path, and TX / INJECT batches for
                    the TCP and relay-over-TLS paths
    _fp_dataplane.pxi DataPlane: the Python-facing class (install/remove, start/stop, counters)
    _fp_offload.pxi vnet_hdr TAP offloads: TSO split (in place) and GRO coalesce (writev)
    _fp_relay.pxi   TapRelay: TAP <-> TAP with the overlay's AEAD work and no UDP, the
                    machine's ceiling that `enclave bench` measures (not used by the agent)
    _fp_relayfwd.pxi RelayForwarder: the platform relay's DATA forwarding (recvmmsg, table
                    look-up, header rewrite, sendmmsg) in thread enclave-relay

Workers (DataPlane(queues=...)): each a tx and an rx thread on its own TAP queue and UDP
socket, sharing the peer table, keys and MAC table (_fp_epoch.pxi says how that stays safe).

Outbound (TAP -> peers; thread enclave-dp-tx of each worker), one batch per syscall round:

    1. drain the TAP (poll + read until EAGAIN); with vnet_hdr a read is a TSO super-frame
    2. MAC table lookup: unicast to the learned peer, else flood to every peer with a tx key
    3. TSO: each segment's headers are written in front of its payload in the read buffer
       (fo_tso_inplace / fo_tso_next), so there is no payload copy
    4. AeadKey seal, out of place: header (type, receiver index, counter) = AD, segment
       encrypted straight into the datagram buffer, tag appended (16 bytes; AEGIS-256: 32)
    5. sendmmsg, with UDP_SEGMENT (GSO) for runs of equal-sized datagrams to one peer

Inbound (peers -> TAP; thread enclave-dp-rx of each worker):

    1. recvmmsg with UDP_GRO (a GRO'd datagram is split by its gso_size)
    2. anything that is not DATA for a known receiver index is punted to Python
    3. replay check, AeadKey open, replay window update only after authentication
    4. identity binding (Ethernet, ARP, IPv4, IPv6 and ND sources as certified; _fp_ident.pxi),
       MAC learning, roaming notice
    5. GRO: same-flow TCP segments coalesced and written with one writev (fo_gro_iov)
"""

from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memset

from enclave._sodium cimport (
    RTLD_NOLOAD,
    RTLD_NOW,
    aes_beforenm_fn,
    aes_dec_afternm_fn,
    aes_enc_afternm_fn,
    aegis_dec_fn,
    aegis_enc_fn,
    chacha_dec_fn,
    chacha_enc_fn,
    dlerror,
    dlopen,
    dlsym,
    free,
    posix_memalign,
    sodium_api,
    sodium_flag_fn,
    sodium_init_fn,
    sodium_memzero_fn,
    sodium_size_fn,
)

# PyNaCl's import runs sodium_init() and maps nacl/_sodium.abi3.so into the process.
import nacl.bindings  # noqa: F401
import nacl._sodium as _nacl_sodium

SODIUM_PATH: str = _nacl_sodium.__file__

cdef void *_sodium_handle = NULL
cdef sodium_api _na


cdef void *_sym(const char *name) except NULL:
    """dlsym one libsodium symbol; ImportError that names it if it is missing."""
    cdef void *p = dlsym(_sodium_handle, name)
    if p == NULL:
        raise ImportError(
            f"libsodium symbol {name.decode()!r} not found in {SODIUM_PATH} "
            "(PyNaCl >= 1.6 with its bundled libsodium 1.0.20 is required)"
        )
    return p


cdef int _load_sodium() except -1:
    global _sodium_handle
    path = SODIUM_PATH.encode()
    _sodium_handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if _sodium_handle == NULL:
        err = dlerror()
        raise ImportError(
            f"cannot dlopen PyNaCl's libsodium at {SODIUM_PATH}: "
            f"{err.decode() if err != NULL else 'unknown error'}"
        )
    _na.sodium_init = <sodium_init_fn>_sym(b"sodium_init")
    _na.sodium_memzero = <sodium_memzero_fn>_sym(b"sodium_memzero")
    _na.has_aesni = <sodium_flag_fn>_sym(b"sodium_runtime_has_aesni")
    _na.has_pclmul = <sodium_flag_fn>_sym(b"sodium_runtime_has_pclmul")
    _na.has_ssse3 = <sodium_flag_fn>_sym(b"sodium_runtime_has_ssse3")
    _na.has_avx = <sodium_flag_fn>_sym(b"sodium_runtime_has_avx")
    _na.has_avx2 = <sodium_flag_fn>_sym(b"sodium_runtime_has_avx2")
    _na.aes_is_available = <sodium_flag_fn>_sym(
        b"crypto_aead_aes256gcm_is_available")
    _na.aes_statebytes = <sodium_size_fn>_sym(b"crypto_aead_aes256gcm_statebytes")
    _na.aes_beforenm = <aes_beforenm_fn>_sym(b"crypto_aead_aes256gcm_beforenm")
    _na.aes_encrypt_afternm = <aes_enc_afternm_fn>_sym(
        b"crypto_aead_aes256gcm_encrypt_detached_afternm")
    _na.aes_decrypt_afternm = <aes_dec_afternm_fn>_sym(
        b"crypto_aead_aes256gcm_decrypt_detached_afternm")
    _na.chacha_encrypt = <chacha_enc_fn>_sym(
        b"crypto_aead_chacha20poly1305_ietf_encrypt_detached")
    _na.chacha_decrypt = <chacha_dec_fn>_sym(
        b"crypto_aead_chacha20poly1305_ietf_decrypt_detached")
    _na.aegis_encrypt = <aegis_enc_fn>_sym(b"crypto_aead_aegis256_encrypt_detached")
    _na.aegis_decrypt = <aegis_dec_fn>_sym(b"crypto_aead_aegis256_decrypt_detached")
    # Idempotent; PyNaCl already did it. Needed for the runtime CPU checks below.
    if _na.sodium_init() < 0:
        raise ImportError("libsodium sodium_init() failed")
    return 0


_load_sodium()


def check_symbol(name: str) -> None:
    """Resolve ``name`` in the loaded libsodium; ImportError naming it if absent."""
    _sym(name.encode())


def sodium_version_string() -> object:
    """libsodium's own version string if the loaded library exports it, else None.

    PyNaCl's wheel links libsodium statically and does not export it; a PyNaCl built against a
    system libsodium (SODIUM_INSTALL=system) resolves it through its dependency.
    """
    cdef const char *(*fn)() noexcept nogil
    fn = <const char *(*)() noexcept nogil>dlsym(_sodium_handle, b"sodium_version_string")
    if fn == NULL:
        return None
    return (<bytes>fn()).decode("ascii", "replace")


def sodium_runtime_flags() -> dict:
    """libsodium's own CPU feature detection (sodium_runtime_has_*)."""
    return {
        "aesni": bool(_na.has_aesni()),
        "pclmul": bool(_na.has_pclmul()),
        "ssse3": bool(_na.has_ssse3()),
        "avx": bool(_na.has_avx()),
        "avx2": bool(_na.has_avx2()),
    }


def aes256gcm_available() -> bool:
    """crypto_aead_aes256gcm_is_available(): AES-NI + PCLMUL usable by libsodium."""
    return bool(_na.aes_is_available())


include "_fp_aead.pxi"
include "_fp_replay.pxi"
include "_fp_switch.pxi"
include "_fp_udp.pxi"
include "_fp_offload.pxi"
include "_fp_epoch.pxi"
include "_fp_punt.pxi"
include "_fp_icmp.pxi"
include "_fp_ident.pxi"
include "_fp_aqm.pxi"
include "_fp_tx.pxi"
include "_fp_rx.pxi"
include "_fp_relaypath.pxi"
include "_fp_dataplane.pxi"
include "_fp_relay.pxi"
include "_fp_relayfwd.pxi"
