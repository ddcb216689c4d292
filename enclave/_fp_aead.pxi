# AEAD seal/open in place over batches of frames (included by _fastpath.pyx).
#
# Frame layout inside the caller's buffer, at buf[off]:
#
#   off                off+headroom                 off+headroom+len   +tag
#   |<--- headroom --->|<-------- payload ---------->|<--- tag -------->|
#   | wire header = AD |  plaintext -> ciphertext    |  written by seal |
#
#   tag: 16 bytes (AES256-GCM, ChaCha20-Poly1305), 32 bytes (AEGIS-256): AeadKey.tag_bytes.
#   seal: `len` = plaintext length; the payload is encrypted in place and the tag is written
#         right after it, so the buffer must have tag_bytes of tailroom per frame.
#   open: `len` = ciphertext length INCLUDING the tag (what came off the wire after the header);
#         on success the payload holds the plaintext (len - tag_bytes bytes); on failure the
#         payload bytes are unspecified (libsodium zeroes them) and must be dropped.
#
# Associated data = the `headroom` bytes in front of the payload, i.e. the whole wire header
# (including the counter it carries), so a header cannot be altered or swapped between frames.
#
# Nonce: 12 bytes for AES256-GCM and ChaCha20-Poly1305 (the ONE place this layout is defined):
#
#   byte  0    1    2    3    4 ............................ 11
#         +----+----+----+----+--------------------------------+
#         | 00 | 00 | 00 | 00 |  counter, 64-bit little-endian |
#         +----+----+----+----+--------------------------------+
#
# AEGIS-256 takes a 32-byte nonce: the same 12 bytes, then 20 zero bytes. Its nonce space is
# large enough for random nonces, but enclave never draws one: the counter is the nonce, as for
# the other ciphers (wire.aead_nonce builds the same bytes for CONTROL, with domain 01 00 00 00).
#
#   byte  0 ... 3   4 ......................... 11   12 ........................... 31
#         | 00 x 4 | counter, 64-bit little-endian |  00 x 20                        |
#
# The counter must never repeat under one key (for AEGIS-256 a repeat reveals the XOR of two
# plaintexts and lets a forger in); the session layer owns it (and rekeys long before 2^64 and
# before libsodium's ~350 GB AES-GCM per-key guidance).

from libc.string cimport memcpy
cimport cython

cdef enum:
    _KEY_BYTES = 32
    _NONCE_BYTES = 12
    _TAG_BYTES = 16             # AES256-GCM, ChaCha20-Poly1305
    _AEGIS_NONCE_BYTES = 32
    _AEGIS_TAG_BYTES = 32
    _MAX_TAG_BYTES = 32         # the largest tag of any kind (buffer tailroom)

KEY_BYTES: int = _KEY_BYTES
NONCE_BYTES: int = _NONCE_BYTES
TAG_BYTES: int = _TAG_BYTES
AEGIS_NONCE_BYTES: int = _AEGIS_NONCE_BYTES
AEGIS_TAG_BYTES: int = _AEGIS_TAG_BYTES
MAX_TAG_BYTES: int = _MAX_TAG_BYTES
CIPHERS: tuple = ("aes256gcm", "chacha20poly1305", "aegis256")

cdef enum:
    # the values of enclave.proto.wire.Cipher (checked at import in _fp_dataplane.pxi): a
    # session's cipher reaches C as the handshake chose it and is its kind here
    FP_CHACHA20POLY1305 = 1
    FP_AES256GCM = 2
    FP_AEGIS256 = 3


cdef int fp_kind(object cipher):
    """The C kind of a cipher name ("aes256gcm", ...) or wire.Cipher; 0 if unknown."""
    if isinstance(cipher, str):
        if cipher == "aes256gcm":
            return FP_AES256GCM
        if cipher == "chacha20poly1305":
            return FP_CHACHA20POLY1305
        if cipher == "aegis256":
            return FP_AEGIS256
        return 0
    try:
        kind = int(cipher)
    except (TypeError, ValueError):
        return 0
    return kind if kind in (FP_AES256GCM, FP_CHACHA20POLY1305, FP_AEGIS256) else 0


cdef inline size_t fp_tag_bytes(int kind) noexcept nogil:
    """The tag length of a kind: 32 for AEGIS-256, 16 for the others."""
    return _AEGIS_TAG_BYTES if kind == FP_AEGIS256 else _TAG_BYTES


cdef inline bint fp_aegis_hw() noexcept nogil:
    """libsodium runs AEGIS-256 on AES-NI (its AES-NI code also needs AVX); without them it
    falls back to software AES, which enclave does not use."""
    return _na.has_aesni() != 0 and _na.has_avx() != 0


def tag_bytes(object cipher) -> int:
    """The tag length of a cipher name or wire.Cipher (ValueError if unknown)."""
    cdef int kind = fp_kind(cipher)
    if kind == 0:
        raise ValueError(f"unknown cipher {cipher!r}; expected one of {CIPHERS}")
    return fp_tag_bytes(kind)


def aegis256_available() -> bool:
    """True when libsodium runs AEGIS-256 in hardware here (AES-NI and AVX)."""
    return bool(fp_aegis_hw())


cdef inline void fp_nonce(unsigned char *n, uint64_t counter) noexcept nogil:
    """Write the 12-byte nonce for `counter` (layout above) into n."""
    cdef int i
    n[0] = 0
    n[1] = 0
    n[2] = 0
    n[3] = 0
    for i in range(8):
        n[4 + i] = <unsigned char>((counter >> (8 * i)) & 0xFF)


cdef inline void fp_nonce32(unsigned char *n, uint64_t counter) noexcept nogil:
    """Write AEGIS-256's 32-byte nonce for `counter` (the 12-byte nonce, 20 zeros) into n."""
    fp_nonce(n, counter)
    memset(n + _NONCE_BYTES, 0, _AEGIS_NONCE_BYTES - _NONCE_BYTES)


cdef inline int fp_seal(int kind, void *state, unsigned char *c, const unsigned char *m,
                        size_t mlen, const unsigned char *ad, size_t adlen,
                        uint64_t counter) noexcept nogil:
    """Encrypt m[0:mlen] into c (may be m), tag at c + mlen, nonce from `counter`; 0 = ok.
    The one dispatch on the kind for sealing (AeadKey and the data-plane loops use it)."""
    cdef unsigned char nonce[_AEGIS_NONCE_BYTES]
    if kind == FP_AEGIS256:
        fp_nonce32(nonce, counter)
        return _na.aegis_encrypt(c, c + mlen, NULL, m, mlen, ad, adlen, NULL, nonce,
                                 <const unsigned char *>state)
    fp_nonce(nonce, counter)
    if kind == FP_AES256GCM:
        return _na.aes_encrypt_afternm(c, c + mlen, NULL, m, mlen, ad, adlen, NULL, nonce,
                                       state)
    return _na.chacha_encrypt(c, c + mlen, NULL, m, mlen, ad, adlen, NULL, nonce,
                              <const unsigned char *>state)


cdef inline int fp_open(int kind, void *state, unsigned char *p, size_t clen,
                        const unsigned char *ad, size_t adlen, uint64_t counter) noexcept nogil:
    """Authenticate and decrypt p[0:clen] in place (clen includes the kind's tag); 0 when
    authentic (plaintext = the first clen - tag bytes), -1 otherwise (also when too short)."""
    cdef unsigned char nonce[_AEGIS_NONCE_BYTES]
    cdef size_t tag = fp_tag_bytes(kind)
    cdef size_t mlen
    if clen < tag:
        return -1
    mlen = clen - tag
    if kind == FP_AEGIS256:
        fp_nonce32(nonce, counter)
        return _na.aegis_decrypt(p, NULL, p, mlen, p + mlen, ad, adlen, nonce,
                                 <const unsigned char *>state)
    fp_nonce(nonce, counter)
    if kind == FP_AES256GCM:
        return _na.aes_decrypt_afternm(p, NULL, p, mlen, p + mlen, ad, adlen, nonce, state)
    return _na.chacha_decrypt(p, NULL, p, mlen, p + mlen, ad, adlen, nonce,
                              <const unsigned char *>state)


def nonce_for(uint64_t counter, object cipher="aes256gcm") -> bytes:
    """The nonce used for `counter` under `cipher` (12 bytes; AEGIS-256: 32), for tests and
    interop with other AEAD callers."""
    cdef unsigned char n[_AEGIS_NONCE_BYTES]
    if fp_kind(cipher) == FP_AEGIS256:
        fp_nonce32(n, counter)
        return <bytes>n[:_AEGIS_NONCE_BYTES]
    fp_nonce(n, counter)
    return <bytes>n[:_NONCE_BYTES]


@cython.final
cdef class AeadKey:
    """One direction's AEAD key, expanded once; usable from nogil loops via seal()/open().

    AES256-GCM keeps libsodium's precomputed (beforenm) state in 16-byte aligned memory;
    ChaCha20-Poly1305-IETF and AEGIS-256 keep the raw key. All are wiped on deallocation. The
    state is read-only after construction, so one AeadKey may be used from several threads at
    once. ``tag_bytes`` is the tag the cipher appends (16; AEGIS-256: 32).
    """

    cdef readonly str cipher
    cdef readonly int tag_bytes
    cdef int kind
    cdef void *state          # AES: crypto_aead_aes256gcm_state; ChaCha / AEGIS: 32-byte key
    cdef size_t state_len

    def __cinit__(self, object cipher, const unsigned char[::1] key not None):
        self.state = NULL
        self.state_len = 0
        self.kind = fp_kind(cipher)
        if self.kind == FP_AES256GCM:
            if not _na.aes_is_available():
                raise RuntimeError("aes256gcm is not available on this CPU (libsodium needs "
                                   "AES-NI and PCLMULQDQ); use chacha20poly1305")
            self.state_len = _na.aes_statebytes()
            self.cipher = "aes256gcm"
        elif self.kind == FP_CHACHA20POLY1305:
            self.state_len = _KEY_BYTES
            self.cipher = "chacha20poly1305"
        elif self.kind == FP_AEGIS256:
            if not fp_aegis_hw():
                raise RuntimeError("aegis256 is not available on this CPU (enclave runs it only "
                                   "on AES-NI with AVX); use aes256gcm or chacha20poly1305")
            self.state_len = _KEY_BYTES
            self.cipher = "aegis256"
        else:
            raise ValueError(f"unknown cipher {cipher!r}; expected one of {CIPHERS} "
                             "or an enclave.proto.wire.Cipher")
        self.tag_bytes = <int>fp_tag_bytes(self.kind)
        if key.shape[0] != _KEY_BYTES:
            raise ValueError(f"key must be {_KEY_BYTES} bytes, got {key.shape[0]}")
        if posix_memalign(&self.state, 64, self.state_len) != 0:
            self.state = NULL
            raise MemoryError()
        if self.kind == FP_AES256GCM:
            _na.aes_beforenm(self.state, &key[0])
        else:
            memcpy(self.state, &key[0], _KEY_BYTES)

    def __dealloc__(self):
        if self.state != NULL:
            _na.sodium_memzero(self.state, self.state_len)
            free(self.state)
            self.state = NULL

    def __repr__(self) -> str:
        return f"AeadKey({self.cipher!r}, <key hidden>)"

    def __reduce__(self):
        raise TypeError("AeadKey holds key material and cannot be pickled")

    cdef int seal(self, unsigned char *frame, size_t headroom, size_t plen,
                  uint64_t counter) noexcept nogil:
        """Encrypt frame[headroom:headroom+plen] in place, tag after it, AD = frame[:headroom].

        Returns 0. The caller guarantees headroom + plen + tag_bytes bytes are writable.
        """
        cdef unsigned char *p = frame + headroom
        return fp_seal(self.kind, self.state, p, p, plen, frame, headroom, counter)

    cdef int open(self, unsigned char *frame, size_t headroom, size_t clen,
                  uint64_t counter) noexcept nogil:
        """Authenticate and decrypt frame[headroom:headroom+clen] (clen includes the tag).

        Returns 0 when authentic (plaintext in place, clen - tag_bytes bytes), -1 otherwise.
        """
        return fp_open(self.kind, self.state, frame + headroom, clen, frame, headroom, counter)

    def seal_batch(self, unsigned char[::1] buf not None,
                   const uint32_t[::1] offsets not None,
                   const uint32_t[::1] lengths not None,
                   const uint64_t[::1] counters not None,
                   size_t headroom) -> bytearray:
        """Seal frame i at buf[offsets[i]] (headroom bytes of AD, lengths[i] bytes of payload,
        then tag_bytes of room for the tag) with counters[i]. All frames are bounds-checked before any is touched (ValueError);
        the GIL is released for the whole batch. Returns one ok flag (1/0) per frame.
        """
        return self._batch(buf, offsets, lengths, counters, headroom, 1)

    def open_batch(self, unsigned char[::1] buf not None,
                   const uint32_t[::1] offsets not None,
                   const uint32_t[::1] lengths not None,
                   const uint64_t[::1] counters not None,
                   size_t headroom) -> bytearray:
        """Open frame i at buf[offsets[i]] (lengths[i] = ciphertext + tag) with counters[i].
        Returns one flag per frame: 1 = authentic (plaintext in place), 0 = reject (drop).
        """
        return self._batch(buf, offsets, lengths, counters, headroom, 0)

    cdef object _batch(self, unsigned char[::1] buf, const uint32_t[::1] offsets,
                       const uint32_t[::1] lengths, const uint64_t[::1] counters,
                       size_t headroom, bint sealing):
        cdef Py_ssize_t n = offsets.shape[0]
        cdef Py_ssize_t i
        cdef Py_ssize_t bad = -1
        cdef size_t cap = <size_t>buf.shape[0]
        cdef size_t extra = <size_t>self.tag_bytes if sealing else 0
        cdef unsigned char *base
        cdef unsigned char[::1] ok
        if lengths.shape[0] != n or counters.shape[0] != n:
            raise ValueError(f"offsets, lengths and counters differ in length "
                             f"({n}, {lengths.shape[0]}, {counters.shape[0]})")
        if headroom > cap:
            raise ValueError(f"headroom {headroom} exceeds buffer size {cap}")
        flags = bytearray(n)
        if n == 0:
            return flags
        ok = flags
        base = &buf[0] if cap > 0 else NULL
        with nogil:
            # Validate every frame first, so a bad batch leaves the buffer untouched.
            for i in range(n):
                if (offsets[i] > cap - headroom
                        or <size_t>lengths[i] + extra > cap - headroom - offsets[i]):
                    bad = i
                    break
            if bad < 0:
                if sealing:
                    for i in range(n):
                        ok[i] = self.seal(base + offsets[i], headroom, lengths[i],
                                          counters[i]) == 0
                else:
                    for i in range(n):
                        ok[i] = self.open(base + offsets[i], headroom, lengths[i],
                                          counters[i]) == 0
        if bad >= 0:
            raise ValueError(f"frame {bad} (offset {offsets[bad]}, length {lengths[bad]}, "
                             f"headroom {headroom}"
                             f"{f', +{self.tag_bytes} tag' if sealing else ''}) "
                             f"exceeds the {cap}-byte buffer")
        return flags
