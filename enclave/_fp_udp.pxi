# Batched UDP I/O: recvmmsg / sendmmsg with UDP GSO (UDP_SEGMENT) and GRO (UDP_GRO)
# (included by _fastpath.pyx). Python 3.11's socket module has neither; the data-plane loops
# call ub_recv / ub_send with the GIL released, the UdpBatchIO class wraps them for Python.
#
# One udp_batch holds everything a syscall needs for up to UB_MAX datagrams, so the hot loop
# allocates nothing:
#
#   msgs[i] --> msg_hdr { name -> addrs[i] | dst[i],  iov -> iov[i],  control -> ctrl[i] }
#   iov[i]  --> base + offsets[i], sizes[i] (recv) / lengths[i] (send)
#
#   recv: addrs[i] = source address; gso[i] = UDP_GRO segment size when the kernel handed us a
#         coalesced run of equal-sized datagrams (0 = one datagram); trunc[i] = did not fit;
#         tstamp[i] = kernel arrival time (CLOCK_REALTIME ns) when SO_TIMESTAMPNS is on, else 0
#         (the rx loop's CoDel sojourn, _fp_aqm.pxi).
#   send: dst[i]/dstlen[i] = destination sockaddr (the caller keeps it alive); with gso[i] > 0
#         message i is a GSO super-datagram: the kernel cuts it into gso[i]-byte datagrams
#         (the last may be shorter) -- the AEAD batch layout packs equal frames back to back
#         exactly for this.
#
# Return values: count of datagrams (>= 0) or -errno; EAGAIN on a non-blocking socket is 0.

from libc.errno cimport EAGAIN, EINTR, errno  # EWOULDBLOCK == EAGAIN on Linux
from libc.stdint cimport uint16_t
from posix.uio cimport iovec
import os as _os
import socket as _socket
import struct as _struct

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    cdef struct sockaddr_storage:
        sa_family_t ss_family
    cdef struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    cdef struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *)
    cmsghdr *CMSG_NXTHDR(msghdr *, cmsghdr *)
    unsigned char *CMSG_DATA(cmsghdr *)
    size_t CMSG_SPACE(size_t)
    size_t CMSG_LEN(size_t)
    int recvmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags)
    enum:
        MSG_DONTWAIT
        MSG_TRUNC

cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN

cdef extern from *:
    """
    #include <netinet/in.h>
    #ifndef SOL_UDP
    #define SOL_UDP 17
    #endif
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    #ifndef UDP_GRO
    #define UDP_GRO 104
    #endif
    #include <sys/socket.h>
    #include <time.h>
    #ifndef SO_TIMESTAMPNS
    #define SO_TIMESTAMPNS 35
    #endif
    static inline uint64_t ub_cmsg_ns(const unsigned char *d) {
        struct timespec ts; memcpy(&ts, d, sizeof ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    /* A dual-stack AF_INET6 socket reports an IPv4 sender as ::ffff:a.b.c.d; rewrite it to the
       sockaddr_in an AF_INET socket would report, so every layer above sees one form per peer
       (sendmsg on a dual-stack socket takes a sockaddr_in as well). */
    static inline void ub_unmap_v4(struct sockaddr_storage *ss) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        struct sockaddr_in s4;
        if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) return;
        memset(&s4, 0, sizeof s4);
        s4.sin_family = AF_INET;
        s4.sin_port = s6->sin6_port;
        memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
        memset(ss, 0, sizeof(struct sockaddr_in6));
        memcpy(ss, &s4, sizeof s4);
    }
    """
    enum:
        SOL_UDP
        UDP_SEGMENT
        UDP_GRO
        SOL_SOCKET
        SO_TIMESTAMPNS
    uint64_t ub_cmsg_ns(const unsigned char *d) noexcept nogil
    void ub_unmap_v4(sockaddr_storage *ss) noexcept nogil

cdef enum:
    UB_MAX = 64
    UB_CTRL_WORDS = 10        # 80 bytes of control space per message (UDP_GRO int: 24,
                              # SO_TIMESTAMPNS timespec: 32)

ctypedef struct udp_batch:
    mmsghdr msgs[UB_MAX]
    iovec iov[UB_MAX]
    sockaddr_storage addrs[UB_MAX]
    const void *dst[UB_MAX]
    socklen_t dstlen[UB_MAX]
    uint64_t ctrl[UB_MAX * UB_CTRL_WORDS]
    uint64_t tstamp[UB_MAX]
    uint16_t gso[UB_MAX]
    uint8_t trunc[UB_MAX]


cdef inline int ub_wait(int fd, int timeout_ms) noexcept nogil:
    """poll() for readability: 1 readable, 0 timed out, -errno on error."""
    cdef pollfd p
    cdef int r
    p.fd = fd
    p.events = POLLIN
    p.revents = 0
    r = poll(&p, 1, timeout_ms)
    if r < 0:
        return -errno
    return 1 if r > 0 else 0


cdef int ub_recv(udp_batch *b, int fd, uint8_t *base, const uint32_t *offsets,
                 const uint32_t *sizes, uint32_t *lengths, int n) noexcept nogil:
    """Receive up to n datagrams (non-blocking) into base + offsets[i] (room sizes[i])."""
    cdef int i, r
    cdef msghdr *h
    cdef cmsghdr *c
    cdef int gro
    if n > UB_MAX:
        n = UB_MAX
    for i in range(n):
        b.iov[i].iov_base = base + offsets[i]
        b.iov[i].iov_len = sizes[i]
        h = &b.msgs[i].msg_hdr
        h.msg_name = &b.addrs[i]
        h.msg_namelen = sizeof(sockaddr_storage)
        h.msg_iov = &b.iov[i]
        h.msg_iovlen = 1
        h.msg_control = &b.ctrl[i * UB_CTRL_WORDS]
        h.msg_controllen = UB_CTRL_WORDS * 8
        h.msg_flags = 0
        b.msgs[i].msg_len = 0
    while True:
        r = recvmmsg(fd, b.msgs, n, MSG_DONTWAIT, NULL)
        if r >= 0 or errno != EINTR:
            break
    if r < 0:
        return 0 if errno == EAGAIN else -errno
    for i in range(r):
        h = &b.msgs[i].msg_hdr
        ub_unmap_v4(&b.addrs[i])
        lengths[i] = b.msgs[i].msg_len
        b.trunc[i] = (h.msg_flags & MSG_TRUNC) != 0
        b.gso[i] = 0
        b.tstamp[i] = 0
        c = CMSG_FIRSTHDR(h)
        while c != NULL:
            if c.cmsg_level == SOL_UDP and c.cmsg_type == UDP_GRO:
                memcpy(&gro, CMSG_DATA(c), sizeof(int))
                b.gso[i] = <uint16_t>gro
            elif c.cmsg_level == SOL_SOCKET and c.cmsg_type == SO_TIMESTAMPNS:
                b.tstamp[i] = ub_cmsg_ns(CMSG_DATA(c))
            c = CMSG_NXTHDR(h, c)
    return r


cdef int ub_send(udp_batch *b, int fd, const uint8_t *base, const uint32_t *offsets,
                 const uint32_t *lengths, int n) noexcept nogil:
    """Send n datagrams to b.dst[i]; message i is a GSO run when b.gso[i] > 0.

    Returns how many messages were sent (fewer on EAGAIN), or -errno if none was.
    """
    cdef int i, r
    cdef int sent = 0
    cdef msghdr *h
    cdef cmsghdr *c
    cdef uint16_t seg
    if n > UB_MAX:
        n = UB_MAX
    for i in range(n):
        b.iov[i].iov_base = <void *>(base + offsets[i])
        b.iov[i].iov_len = lengths[i]
        h = &b.msgs[i].msg_hdr
        h.msg_name = <void *>b.dst[i]
        h.msg_namelen = b.dstlen[i]
        h.msg_iov = &b.iov[i]
        h.msg_iovlen = 1
        h.msg_flags = 0
        if b.gso[i]:
            h.msg_control = &b.ctrl[i * UB_CTRL_WORDS]
            h.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
            c = CMSG_FIRSTHDR(h)
            c.cmsg_level = SOL_UDP
            c.cmsg_type = UDP_SEGMENT
            c.cmsg_len = CMSG_LEN(sizeof(uint16_t))
            seg = b.gso[i]
            memcpy(CMSG_DATA(c), &seg, sizeof(uint16_t))
        else:
            h.msg_control = NULL
            h.msg_controllen = 0
    while sent < n:
        r = sendmmsg(fd, &b.msgs[sent], n - sent, MSG_DONTWAIT)
        if r < 0:
            if errno == EINTR:
                continue
            if sent > 0 or errno == EAGAIN:
                return sent
            return -errno
        sent += r
    return sent


UDP_BATCH_MAX: int = UB_MAX


cdef bytes _sockaddr_to_bytes(const sockaddr_storage *sa):
    return (<const char *>sa)[:sizeof(sockaddr_storage)]


def _pack_sockaddr(host: str, port: int) -> bytes:
    """sockaddr_in / sockaddr_in6 bytes for a numeric address (no DNS on the data path)."""
    if ":" in host:
        addr6 = _socket.inet_pton(_socket.AF_INET6, host)
        return _struct.pack("=H", _socket.AF_INET6) + _struct.pack("!HI", port, 0) + addr6 + (
            _struct.pack("=I", 0))
    addr4 = _socket.inet_pton(_socket.AF_INET, host)
    return _struct.pack("=H", _socket.AF_INET) + _struct.pack("!H", port) + addr4 + bytes(8)


def _unpack_sockaddr(raw: bytes) -> tuple:
    family = _struct.unpack_from("=H", raw)[0]
    if family == _socket.AF_INET:
        port = _struct.unpack_from("!H", raw, 2)[0]
        return (_socket.inet_ntop(_socket.AF_INET, raw[4:8]), port)
    if family == _socket.AF_INET6:
        port = _struct.unpack_from("!H", raw, 2)[0]
        return (_socket.inet_ntop(_socket.AF_INET6, raw[8:24]), port)
    raise ValueError(f"unsupported address family {family}")


@cython.final
cdef class UdpBatchIO:
    """recvmmsg/sendmmsg for up to UDP_BATCH_MAX datagrams per call, GIL released.

    recv(): frame i lands at buf[offsets[i]:offsets[i] + lengths[i]] (room sizes[i]); then
    source(i), gro_size(i), truncated(i) describe it. send(): datagram (or GSO run) i is
    buf[offsets[i]:offsets[i] + lengths[i]]. Sockets may be blocking or not: I/O never blocks
    beyond `timeout`.
    """

    cdef udp_batch *b
    cdef int received
    cdef list _dest_keep

    def __cinit__(self):
        if posix_memalign(<void **>&self.b, 64, sizeof(udp_batch)) != 0:
            self.b = NULL
            raise MemoryError()
        memset(self.b, 0, sizeof(udp_batch))
        self.received = 0
        self._dest_keep = []

    def __dealloc__(self):
        free(self.b)
        self.b = NULL

    def recv(self, int fd, unsigned char[::1] buf not None, const uint32_t[::1] offsets not None,
             const uint32_t[::1] sizes not None, uint32_t[::1] lengths not None,
             double timeout=0.0) -> int:
        """Wait up to `timeout` seconds for data, then take what is queued (<= len(offsets))."""
        cdef Py_ssize_t n = offsets.shape[0]
        cdef Py_ssize_t i
        cdef int r = 0
        cdef int ms = <int>(timeout * 1000.0 + 0.999)
        if n > UB_MAX or sizes.shape[0] != n or lengths.shape[0] < n:
            raise ValueError(f"need <= {UB_MAX} offsets, as many sizes and lengths")
        if not (0.0 <= timeout <= 3600.0):
            raise ValueError("timeout must be between 0 and 3600 seconds")
        for i in range(n):
            if <size_t>offsets[i] + sizes[i] > <size_t>buf.shape[0]:
                raise ValueError(f"slot {i} (offset {offsets[i]}, size {sizes[i]}) exceeds "
                                 f"the {buf.shape[0]}-byte buffer")
        self.received = 0
        if n == 0:
            return 0
        with nogil:
            r = ub_wait(fd, ms)
            if r > 0:
                r = ub_recv(self.b, fd, &buf[0], &offsets[0], &sizes[0], &lengths[0], <int>n)
        if r < 0:
            raise OSError(-r, _os.strerror(-r))
        self.received = r
        return r

    cdef int _check(self, int i) except -1:
        if not 0 <= i < self.received:
            raise IndexError(f"datagram {i} not received (have {self.received})")
        return 0

    def source(self, int i) -> tuple:
        self._check(i)
        return _unpack_sockaddr(_sockaddr_to_bytes(&self.b.addrs[i]))

    def gro_size(self, int i) -> int:
        self._check(i)
        return self.b.gso[i]

    def truncated(self, int i) -> bool:
        self._check(i)
        return bool(self.b.trunc[i])

    def send(self, int fd, const unsigned char[::1] buf not None,
             const uint32_t[::1] offsets not None, const uint32_t[::1] lengths not None,
             dest, int gso_size=0) -> int:
        """Send datagram i to dest (one (host, port) for all, or a list with one per datagram).

        gso_size > 0 makes every message a UDP GSO run of gso_size-byte datagrams.
        Returns how many messages were sent (fewer when the socket buffer is full).
        """
        cdef Py_ssize_t n = offsets.shape[0]
        cdef Py_ssize_t i
        cdef int r
        cdef const unsigned char *base
        if n > UB_MAX or lengths.shape[0] != n:
            raise ValueError(f"need <= {UB_MAX} offsets and as many lengths")
        if not 0 <= gso_size <= 65535:
            raise ValueError("gso_size must be 0..65535")
        for i in range(n):
            if <size_t>offsets[i] + lengths[i] > <size_t>buf.shape[0]:
                raise ValueError(f"datagram {i} (offset {offsets[i]}, length {lengths[i]}) "
                                 f"exceeds the {buf.shape[0]}-byte buffer")
        if isinstance(dest, tuple):
            packed = [_pack_sockaddr(dest[0], dest[1])] * n
        else:
            if len(dest) != n:
                raise ValueError("need one destination per datagram")
            packed = [_pack_sockaddr(d[0], d[1]) for d in dest]
        if n == 0:
            return 0
        self._dest_keep = packed     # keeps the sockaddr bytes alive during the syscall
        for i in range(n):
            self.b.dst[i] = <const char *>packed[i]
            self.b.dstlen[i] = len(packed[i])
            self.b.gso[i] = gso_size
        base = &buf[0]
        with nogil:
            r = ub_send(self.b, fd, base, &offsets[0], &lengths[0], <int>n)
        self._dest_keep = []
        if r < 0:
            raise OSError(-r, _os.strerror(-r))
        return r
