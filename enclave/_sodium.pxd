# C declarations for the compiled fast path (enclave/_fastpath.pyx): libsodium prototypes as
# function-pointer types, plus the few libc/POSIX pieces Cython's bundled .pxd files lack.
#
# libsodium is NOT linked at build time and no system package is needed: at import, the
# extension dlopen()s the copy bundled in PyNaCl's wheel (nacl/_sodium.abi3.so, already mapped
# by `import nacl.bindings`) with RTLD_NOW | RTLD_NOLOAD and fills a `sodium_api` table with
# dlsym(). Every prototype is `noexcept nogil` so the data-plane loops can call through the table
# without the GIL.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    char *dlerror()
    void *dlsym(void *handle, const char *symbol)
    int dlclose(void *handle)
    enum:
        RTLD_NOW
        RTLD_NOLOAD

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)
    void free(void *ptr)

# --- libsodium prototypes (signatures from sodium/crypto_aead_*.h, libsodium 1.0.20) -----------

ctypedef int (*sodium_init_fn)() noexcept nogil
ctypedef int (*sodium_flag_fn)() noexcept nogil
ctypedef size_t (*sodium_size_fn)() noexcept nogil
ctypedef void (*sodium_memzero_fn)(void *pnt, size_t len) noexcept nogil

# crypto_aead_aes256gcm_beforenm(state *ctx, const unsigned char *k)
ctypedef int (*aes_beforenm_fn)(void *ctx, const unsigned char *k) noexcept nogil

# crypto_aead_aes256gcm_encrypt_detached_afternm(c, mac, maclen_p, m, mlen, ad, adlen, nsec,
#                                               npub, ctx)
ctypedef int (*aes_enc_afternm_fn)(
    unsigned char *c, unsigned char *mac, unsigned long long *maclen_p,
    const unsigned char *m, unsigned long long mlen,
    const unsigned char *ad, unsigned long long adlen,
    const unsigned char *nsec, const unsigned char *npub, const void *ctx) noexcept nogil

# crypto_aead_aes256gcm_decrypt_detached_afternm(m, nsec, c, clen, mac, ad, adlen, npub, ctx)
ctypedef int (*aes_dec_afternm_fn)(
    unsigned char *m, unsigned char *nsec,
    const unsigned char *c, unsigned long long clen, const unsigned char *mac,
    const unsigned char *ad, unsigned long long adlen,
    const unsigned char *npub, const void *ctx) noexcept nogil

# crypto_aead_chacha20poly1305_ietf_encrypt_detached(c, mac, maclen_p, m, mlen, ad, adlen, nsec,
#                                                   npub, k)
ctypedef int (*chacha_enc_fn)(
    unsigned char *c, unsigned char *mac, unsigned long long *maclen_p,
    const unsigned char *m, unsigned long long mlen,
    const unsigned char *ad, unsigned long long adlen,
    const unsigned char *nsec, const unsigned char *npub, const unsigned char *k) noexcept nogil

# crypto_aead_chacha20poly1305_ietf_decrypt_detached(m, nsec, c, clen, mac, ad, adlen, npub, k)
ctypedef int (*chacha_dec_fn)(
    unsigned char *m, unsigned char *nsec,
    const unsigned char *c, unsigned long long clen, const unsigned char *mac,
    const unsigned char *ad, unsigned long long adlen,
    const unsigned char *npub, const unsigned char *k) noexcept nogil

# crypto_aead_aegis256_encrypt_detached(c, mac, maclen_p, m, mlen, ad, adlen, nsec, npub, k)
# (the same shape as ChaCha20's; 32-byte key, 32-byte nonce, 32-byte tag)
ctypedef int (*aegis_enc_fn)(
    unsigned char *c, unsigned char *mac, unsigned long long *maclen_p,
    const unsigned char *m, unsigned long long mlen,
    const unsigned char *ad, unsigned long long adlen,
    const unsigned char *nsec, const unsigned char *npub, const unsigned char *k) noexcept nogil

# crypto_aead_aegis256_decrypt_detached(m, nsec, c, clen, mac, ad, adlen, npub, k)
ctypedef int (*aegis_dec_fn)(
    unsigned char *m, unsigned char *nsec,
    const unsigned char *c, unsigned long long clen, const unsigned char *mac,
    const unsigned char *ad, unsigned long long adlen,
    const unsigned char *npub, const unsigned char *k) noexcept nogil

ctypedef struct sodium_api:
    sodium_init_fn sodium_init
    sodium_memzero_fn sodium_memzero
    sodium_flag_fn has_aesni
    sodium_flag_fn has_pclmul
    sodium_flag_fn has_ssse3
    sodium_flag_fn has_avx
    sodium_flag_fn has_avx2
    sodium_flag_fn aes_is_available
    sodium_size_fn aes_statebytes
    aes_beforenm_fn aes_beforenm
    aes_enc_afternm_fn aes_encrypt_afternm
    aes_dec_afternm_fn aes_decrypt_afternm
    chacha_enc_fn chacha_encrypt
    chacha_dec_fn chacha_decrypt
    aegis_enc_fn aegis_encrypt
    aegis_dec_fn aegis_decrypt
