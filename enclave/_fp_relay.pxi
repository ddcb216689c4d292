# TapRelay: the TAP relay reference of `enclave bench` (stage "relay reference")
# (included by _fastpath.pyx after _fp_aead.pxi, _fp_udp.pxi and the data-plane includes).
# Not used by the agent.
#
# The overlay's per-byte work and thread structure, minus the network leg. Per direction, two
# native threads (as dp-tx of one agent and dp-rx of the other) joined by a ring in memory
# where the overlay has sendmmsg -> lab -> recvmmsg. A reference, not a bound: its four threads
# share one process (one scheduling group), where the overlay's are split over two agents.
#
#   TAP a --read--> [seal thread]                          [open thread] --write--> TAP b
#                   read into slot.plain                   open every piece
#                   seal every piece out of place  ==ring==>  slot.cipher -> slot.plain
#                   slot.plain -> slot.cipher     (RL_SLOTS)  write slot.plain
#   TAP a <--write-- [open thread]  <==ring==  [seal thread] <--read-- TAP b  (the ACKs)
#
# passes: 0 = no AEAD (the ring only), 1 = seal only, 2 = seal and open. With vnet_hdr a read
# is a TSO super-frame of up to 64 KB and is written on whole; the bytes after its virtio
# header are cut into `segment`-byte pieces, one overlay datagram's payload each, each with its
# own nonce. So the relay does all that two agents do to a byte on two threads per direction,
# except UDP: no sendmmsg/recvmmsg, no per-datagram headers, no forwarding across the lab.
#
# Ring: single producer (seal thread), single consumer (open thread), head/tail counters with
# seq_cst atomics. A side that finds the ring empty (consumer) or full (producer) sets its
# `waiting` flag, checks again, then sleeps in poll() on its eventfd; the other side writes
# that eventfd after moving its counter if the flag is set, so no wakeup is lost.
# Stop: a flag every loop checks each round, and a pipe every poll() includes (so a sleeping
# thread wakes); Python sets the flag, writes one byte and joins the four threads.

from posix.unistd cimport pipe as _c_pipe, close as _c_close

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

cdef enum:
    RL_BUF = 65536 + 64
    RL_SLOTS = 32


cdef struct rl_dir:
    int fd_in
    int fd_out
    int stop_fd
    int ev_data          # consumer sleeps here while the ring is empty
    int ev_space         # producer sleeps here while the ring is full
    uint64_t head        # frames published (producer)
    uint64_t tail        # frames consumed (consumer)
    uint64_t cons_waiting
    uint64_t prod_waiting
    uint64_t stopping    # set before the stop byte: loops that never sleep still see it
    size_t skip          # virtio header bytes in front of every frame (not encrypted)
    size_t segment       # AEAD piece size
    int passes
    int kind             # FP_AES256GCM / FP_CHACHA20POLY1305 / FP_AEGIS256
    size_t tag           # its tag length (fp_tag_bytes)
    void *state          # the AeadKey's state (kept alive by the TapRelay)
    unsigned char *plain[RL_SLOTS]
    unsigned char *cipher[RL_SLOTS]
    size_t length[RL_SLOTS]
    uint64_t frames
    uint64_t nbytes
    uint64_t failures    # open() rejected a piece (never expected: counted, frame still sent)
    uint64_t write_errors


cdef inline void rl_signal(int fd) noexcept nogil:
    cdef uint64_t one = 1
    _c_write(fd, &one, 8)


cdef int rl_sleep(rl_dir *d, int fd) noexcept nogil:
    """Sleep until `fd` (an eventfd) is signalled or the stop pipe is readable; 1 = stop."""
    cdef pollfd p[2]
    cdef uint64_t v
    p[0].fd = fd
    p[0].events = POLLIN
    p[1].fd = d.stop_fd
    p[1].events = POLLIN
    p[0].revents = 0
    p[1].revents = 0
    poll(p, 2, 1000)
    if p[1].revents:
        return 1
    if p[0].revents:
        _c_read(fd, &v, 8)
    return 0


cdef void rl_pieces(rl_dir *d, unsigned char *src, unsigned char *dst, size_t n,
                    uint64_t counter, bint sealing) noexcept nogil:
    """Seal src -> dst (tags go to a scratch spot past the frame in dst), or open dst -> src."""
    cdef size_t off = 0
    cdef size_t piece
    cdef int rc
    cdef unsigned char nonce[_AEGIS_NONCE_BYTES]
    cdef unsigned char tag[_MAX_TAG_BYTES]
    cdef unsigned char *spot
    while off < n:
        piece = d.segment if n - off > d.segment else n - off
        if d.kind == FP_AEGIS256:
            fp_nonce32(nonce, counter)
        else:
            fp_nonce(nonce, counter)
        counter += 1
        spot = dst + n + (off // d.segment) * d.tag
        if sealing:
            if d.kind == FP_AES256GCM:
                _na.aes_encrypt_afternm(dst + off, tag, NULL, src + off, piece, NULL, 0, NULL,
                                        nonce, d.state)
            elif d.kind == FP_AEGIS256:
                _na.aegis_encrypt(dst + off, tag, NULL, src + off, piece, NULL, 0, NULL, nonce,
                                  <const unsigned char *>d.state)
            else:
                _na.chacha_encrypt(dst + off, tag, NULL, src + off, piece, NULL, 0, NULL, nonce,
                                   <const unsigned char *>d.state)
            memcpy(spot, tag, d.tag)
        else:
            memcpy(tag, spot, d.tag)
            if d.kind == FP_AES256GCM:
                rc = _na.aes_decrypt_afternm(src + off, NULL, dst + off, piece, tag, NULL, 0,
                                             nonce, d.state)
            elif d.kind == FP_AEGIS256:
                rc = _na.aegis_decrypt(src + off, NULL, dst + off, piece, tag, NULL, 0, nonce,
                                       <const unsigned char *>d.state)
            else:
                rc = _na.chacha_decrypt(src + off, NULL, dst + off, piece, tag, NULL, 0, nonce,
                                        <const unsigned char *>d.state)
            if rc != 0:
                d.failures += 1
        off += piece


cdef void rl_produce(rl_dir *d) noexcept nogil:
    cdef pollfd p[2]
    cdef ssize_t n
    cdef size_t i
    cdef uint64_t head = 0
    p[0].fd = d.fd_in
    p[0].events = POLLIN
    p[1].fd = d.stop_fd
    p[1].events = POLLIN
    while True:
        p[0].revents = 0
        p[1].revents = 0
        poll(p, 2, 1000)
        if p[1].revents:
            return
        while not dp_load_u64(&d.stopping):
            if head - dp_load_u64(&d.tail) >= RL_SLOTS:       # full: wait for the consumer
                dp_store_u64(&d.prod_waiting, 1)
                if head - dp_load_u64(&d.tail) >= RL_SLOTS:
                    if rl_sleep(d, d.ev_space):
                        return
                dp_store_u64(&d.prod_waiting, 0)
                continue
            i = head % RL_SLOTS
            n = _c_read(d.fd_in, d.plain[i], RL_BUF)
            if n <= 0:
                break
            d.length[i] = <size_t>n
            if d.passes > 0 and <size_t>n > d.skip:   # nonces: 1024 per frame at most
                rl_pieces(d, d.plain[i] + d.skip, d.cipher[i] + d.skip, <size_t>n - d.skip,
                          head << 10, True)
            head += 1
            dp_store_u64(&d.head, head)
            if dp_load_u64(&d.cons_waiting):
                rl_signal(d.ev_data)


cdef void rl_consume(rl_dir *d) noexcept nogil:
    cdef uint64_t tail = 0
    cdef size_t i
    cdef size_t n
    while not dp_load_u64(&d.stopping):
        if tail == dp_load_u64(&d.head):                      # empty: wait for the producer
            dp_store_u64(&d.cons_waiting, 1)
            if tail == dp_load_u64(&d.head):
                if rl_sleep(d, d.ev_data):
                    return
            dp_store_u64(&d.cons_waiting, 0)
            continue
        i = tail % RL_SLOTS
        n = d.length[i]
        if d.passes == 2 and n > d.skip:
            rl_pieces(d, d.plain[i] + d.skip, d.cipher[i] + d.skip, n - d.skip, tail << 10,
                      False)
        if _c_write(d.fd_out, d.plain[i], n) != <ssize_t>n:
            d.write_errors += 1
        d.frames += 1
        d.nbytes += n
        tail += 1
        dp_store_u64(&d.tail, tail)
        if dp_load_u64(&d.prod_waiting):
            rl_signal(d.ev_space)


cdef class TapRelay:
    """Relay frames between two open TAP fds (non-blocking) with the overlay's per-byte AEAD
    work on the overlay's thread structure; see the comment block at the top of _fp_relay.pxi.

    ``vnet_hdr``: both TAPs carry the 10-byte virtio header (passed through unencrypted).
    ``passes``: 0 (no AEAD; ``key`` may be None), 1 (seal only) or 2 (seal and open).
    ``segment``: bytes per AEAD piece (one overlay datagram's payload).
    """

    cdef rl_dir dirs[2]
    cdef int stop_pipe[2]
    cdef int running      # threads started and not yet joined (dealloc must not free then)
    cdef object key
    cdef object threads

    def __cinit__(self):
        memset(self.dirs, 0, sizeof(self.dirs))
        self.stop_pipe[0] = -1
        self.stop_pipe[1] = -1
        for i in range(2):
            self.dirs[i].ev_data = -1
            self.dirs[i].ev_space = -1

    def __init__(self, int fd_a, int fd_b, *, bint vnet_hdr, int passes, AeadKey key=None,
                 size_t segment=1420):
        cdef int i, s
        if passes not in (0, 1, 2):
            raise ValueError(f"passes must be 0, 1 or 2, got {passes}")
        if passes and key is None:
            raise ValueError("an AeadKey is needed when passes > 0")
        if key is not None and key.kind not in (FP_AES256GCM, FP_CHACHA20POLY1305, FP_AEGIS256):
            raise ValueError(f"TapRelay cannot run {key.cipher}")
        if not 64 <= segment <= 65535:
            raise ValueError(f"segment must be 64..65535 bytes, got {segment}")
        for i in range(2):
            for s in range(RL_SLOTS):
                # cipher: room for one tag (up to 32 bytes) per piece after the frame
                if (posix_memalign(<void **>&self.dirs[i].plain[s], 64, RL_BUF) != 0 or
                        posix_memalign(<void **>&self.dirs[i].cipher[s], 64,
                                       RL_BUF + (RL_BUF // 64 + 1) * _MAX_TAG_BYTES) != 0):
                    raise MemoryError()
            self.dirs[i].ev_data = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
            self.dirs[i].ev_space = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
            if self.dirs[i].ev_data < 0 or self.dirs[i].ev_space < 0:
                raise OSError("eventfd() failed")
        if _c_pipe(self.stop_pipe) != 0:
            raise OSError("pipe() failed")
        self.key = key
        for i in range(2):
            self.dirs[i].fd_in = fd_a if i == 0 else fd_b
            self.dirs[i].fd_out = fd_b if i == 0 else fd_a
            self.dirs[i].stop_fd = self.stop_pipe[0]
            self.dirs[i].skip = 10 if vnet_hdr else 0
            self.dirs[i].segment = segment
            self.dirs[i].passes = passes
            if key is not None:
                self.dirs[i].kind = key.kind
                self.dirs[i].tag = fp_tag_bytes(key.kind)
                self.dirs[i].state = key.state
        self.threads = []

    def _run(self, int i, bint producer) -> None:
        with nogil:
            dp_name_thread(b"enclave-relay")
            if producer:
                rl_produce(&self.dirs[i])
            else:
                rl_consume(&self.dirs[i])

    def start(self) -> None:
        if self.threads:
            raise RuntimeError("TapRelay already started")
        for i in range(2):
            for producer in (True, False):
                t = _dp_threading.Thread(target=self._run, args=(i, producer), daemon=True,
                                         name=f"relay-{i}-{'seal' if producer else 'open'}")
                t.start()
                self.threads.append(t)
        self.running = 1

    def stop(self) -> None:
        if self.stop_pipe[1] >= 0 and self.threads:
            dp_store_u64(&self.dirs[0].stopping, 1)
            dp_store_u64(&self.dirs[1].stopping, 1)
            _dp_os.write(self.stop_pipe[1], b"x")
            for t in self.threads:
                t.join(5.0)
            self.running = any(t.is_alive() for t in self.threads)

    def counters(self) -> dict:
        """frames/bytes written per direction (a->b, b->a), AEAD open failures, write errors."""
        return {
            "frames": [self.dirs[0].frames, self.dirs[1].frames],
            "bytes": [self.dirs[0].nbytes, self.dirs[1].nbytes],
            "failures": self.dirs[0].failures + self.dirs[1].failures,
            "write_errors": self.dirs[0].write_errors + self.dirs[1].write_errors,
        }

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def __dealloc__(self):
        cdef int i, s
        if self.running:
            return  # a thread may still use the buffers: leak them rather than crash
        for i in range(2):
            for s in range(RL_SLOTS):
                free(self.dirs[i].plain[s])
                free(self.dirs[i].cipher[s])
            if self.dirs[i].ev_data >= 0:
                _c_close(self.dirs[i].ev_data)
            if self.dirs[i].ev_space >= 0:
                _c_close(self.dirs[i].ev_space)
        for i in range(2):
            if self.stop_pipe[i] >= 0:
                _c_close(self.stop_pipe[i])
