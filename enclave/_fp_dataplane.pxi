# DataPlane: the Python-facing class of the compiled data plane (included by _fastpath.pyx
# after _fp_rx.pxi). Python calls it; the native threads never do.
#
#   install/remove(slot, ...) --> _slots (Python dicts of _TxKey/_RxKey) --> _publish:
#       a new dp_snap (see _fp_epoch.pxi), old one retired, freed by _reclaim
#   set_addr/get_addr --> dp_addr[slot] (mutex; the tx loop reads, the rx loop roams)
#   start/stop --> two threading.Threads per worker that run dp_tx_loop / dp_rx_loop with
#       nogil (worker 0: tap_fd / udp_fd; worker k: queues[k - 1], its own dp_state)
#   counters/global_counters/activity <-- the loops' per-peer and global counters, summed
#       over the workers
#   inject(packet) --> punt socket (INJECT) --> rx loop

# --- Python side ----------------------------------------------------------------------------------

@cython.final
cdef class _TxKey:
    cdef AeadKey key
    cdef dp_txkey *c
    cdef bytes digest

    def __dealloc__(self):
        free(self.c)
        self.c = NULL


@cython.final
cdef class _RxKey:
    cdef AeadKey key
    cdef dp_rxkey *c
    cdef bytes digest

    def __dealloc__(self):
        if self.c != NULL:
            pthread_mutex_destroy(&self.c.lock)
        free(self.c)
        self.c = NULL


@cython.final
cdef class _Ident:
    """A peer's certified overlay addresses in one C allocation (dp_ident), kept alive like
    the keys: by the slot, then by the retired list until no snapshot can point at it."""
    cdef dp_ident *c
    cdef tuple value             # (ip4 int, ip6 packed bytes tuple, (net, mask) tuple)

    def __dealloc__(self):
        free(self.c)
        self.c = NULL


cdef _Ident dp_ident_new(tuple value):
    cdef _Ident ident = _Ident.__new__(_Ident)
    cdef uint32_t ip4 = <uint32_t>value[0]
    cdef tuple ip6 = value[1]
    cdef tuple routes = value[2]
    cdef size_t size = sizeof(dp_ident) + 16 * len(ip6) + sizeof(dp_route) * len(routes)
    cdef int i
    cdef bytes raw
    ident.c = <dp_ident *>calloc(1, size)
    if ident.c == NULL:
        raise MemoryError()
    ident.value = value
    ident.c.ip4 = ip4
    ident.c.nip6 = len(ip6)
    ident.c.nroutes = len(routes)
    ident.c.routes = <dp_route *>(<uint8_t *>ident.c + sizeof(dp_ident))
    ident.c.ip6 = <uint8_t *>(ident.c.routes + len(routes))
    for i in range(len(routes)):
        ident.c.routes[i].net = <uint32_t>routes[i][0]
        ident.c.routes[i].mask = <uint32_t>routes[i][1]
    for i in range(len(ip6)):
        raw = ip6[i]
        memcpy(ident.c.ip6 + 16 * i, <const char *>raw, 16)
    return ident


def _ident_value(overlay_ip4, overlay_ip6, routes) -> tuple:
    """(ip4, ip6s, routes) as integers / packed bytes; ValueError for anything malformed."""
    ip4 = 0 if overlay_ip4 is None else int(_dp_ipaddress.IPv4Address(overlay_ip4))
    ip6 = tuple(_dp_ipaddress.IPv6Address(a).packed for a in overlay_ip6)
    nets = []
    for r in routes:
        net = _dp_ipaddress.IPv4Network(r)
        nets.append((int(net.network_address), int(net.netmask)))
    return (ip4, ip6, tuple(nets))


cdef inline uint64_t dp_used(const dp_txkey *k) noexcept nogil:
    """Counters a tx key has handed out (its `next` may pass `limit`: reserved, not used)."""
    cdef uint64_t n = dp_load_u64(<uint64_t *>&k.next)
    return n if n < k.limit else k.limit


cdef void dp_snap_free(dp_snap *s) noexcept nogil:
    if s != NULL:
        free(s.peers)
        free(s.flood)
        free(s.idx)
        free(s)


# the counters() / global_counters() keys that count a dropped packet (metrics, peers' drops)
PEER_DROP_COUNTERS: tuple = ("rx_replay", "rx_decrypt_fail", "rx_spoofed", "rx_ip_spoofed",
                             "rx_arp_spoofed", "rx_runt", "rx_relay_forged", "tx_key_limit",
                             "tx_no_key",
                             "tx_no_addr", "tx_send_errors")
GLOBAL_DROP_COUNTERS: tuple = ("rx_punt_dropped", "rx_unknown_index", "rx_malformed",
                               "rx_truncated", "tap_write_errors", "tx_oversize", "tx_no_peer",
                               "tx_runt", "tx_offload_errors", "tx_punt_dropped",
                               "tx_aqm_drops", "rx_aqm_drops")


if (int(_dp_wire.Cipher.AES256_GCM) != FP_AES256GCM
        or int(_dp_wire.Cipher.CHACHA20_POLY1305) != FP_CHACHA20POLY1305
        or int(_dp_wire.Cipher.AEGIS256) != FP_AEGIS256
        or {int(c) for c in _dp_wire.Cipher} != {FP_AES256GCM, FP_CHACHA20POLY1305, FP_AEGIS256}):
    raise ImportError("enclave.proto.wire.Cipher values differ from the fast path's AEAD kinds")


def _digest(int kind, key) -> bytes:
    return _dp_hashlib.blake2b(bytes(key), digest_size=16, person=b"enclave-kind-%d" % kind).digest()


def _timestamps_on(int udp_fd) -> None:
    """SO_TIMESTAMPNS on a UDP socket: the rx CoDel's sojourn is each datagram's kernel
    arrival time (_fp_aqm.pxi); a socket that refuses runs its rx side without CoDel."""
    dup = _dp_os.dup(udp_fd)
    try:
        ts = _dp_socket.socket(fileno=dup)
    except OSError:
        _dp_os.close(dup)       # not a socket
        return
    try:
        ts.setsockopt(_dp_socket.SOL_SOCKET, <int>SO_TIMESTAMPNS, 1)
    except OSError:
        pass
    finally:
        ts.close()


cdef void dp_sum_words(uint64_t *into, const uint64_t *add, size_t nbytes) noexcept nogil:
    """Add a counter struct (uint64_t fields only) into another: the workers' sum."""
    cdef size_t i
    for i in range(nbytes // sizeof(uint64_t)):
        into[i] += add[i]


cdef int _kind_of(object cipher) except -1:
    """A session's cipher (wire.Cipher) as the C AEAD kind; ValueError if it is none."""
    cdef int kind = fp_kind(cipher) if not isinstance(cipher, str) else 0
    if kind == 0:
        raise ValueError(f"unknown cipher {cipher!r}: an enclave.proto.wire.Cipher is needed")
    return kind


@cython.final
cdef class DataPlane:
    """The compiled data plane over an open TAP fd and UDP socket fd (both non-blocking).

    Peers live in slots 0..max_peers-1; Python installs/removes sessions, the native threads
    (start/stop; a tx and an rx thread per worker) do everything per frame.
    queues: the further workers' (tap_fd, udp_fd) pairs, one per worker after the first: the
    same multi-queue TAP's other queues, and sockets bound with SO_REUSEPORT to udp_fd's
    address (enclave/dataplane/engine.py makes both); workers share the peer table, keys
    and MAC table, and own their counters (summed here) and CoDel state.
    Datagrams that are not DATA for a known receiver index, and notices, arrive on
    ``punt_socket`` (format at the top of _fp_punt.pxi); DATA received over other paths goes
    back in with ``inject``.
    aqm: CoDel on the tx ring and the UDP receive queue, ECN marks before drops (_fp_aqm.pxi).
    """

    cdef dp_state *st            # worker 0 (the shared snapshot, MAC table, addresses)
    cdef dp_state **ws           # every worker's state; ws[0] is st
    cdef readonly int workers
    cdef readonly object punt_socket
    cdef object _c_sock
    cdef int _wake
    cdef list _threads
    cdef dict _slots             # slot -> {"tx": _TxKey | None, "rx": {index: _RxKey}, ...}
    cdef list _retired           # [(generation, snapshot address, [keys])]
    cdef readonly int max_peers
    cdef readonly int mtu

    def __cinit__(self, int tap_fd, int udp_fd, *, bint vnet_hdr=False, bint tap_gro=False,
                  bint udp_gso=False, bint udp_gro=False, int mtu=1406, int max_peers=256,
                  int mac_capacity=4096, uint64_t mac_max_age_ms=300_000, bint aqm=True,
                  queues=()):
        cdef int i
        cdef uint64_t nb = 16
        cdef dp_state *w
        self.st = NULL
        self.ws = NULL
        self.workers = 0
        self._wake = -1
        if tap_fd < 0 or udp_fd < 0:
            raise ValueError("tap_fd and udp_fd must be open file descriptors")
        queues = [(int(q[0]), int(q[1])) for q in queues]
        if len(queues) > DP_MAX_WORKERS - 1:
            raise ValueError(f"at most {DP_MAX_WORKERS} workers")
        for q in queues:
            if q[0] < 0 or q[1] < 0:
                raise ValueError("every queue needs an open TAP fd and UDP socket fd")
        if not 68 <= mtu <= 65535 - 14 - DP_MAX_OVERHEAD - 48:
            raise ValueError(f"mtu {mtu} out of range")
        if not 1 <= max_peers <= 65536:
            raise ValueError("max_peers must be 1..65536")
        if tap_gro and not vnet_hdr:
            raise ValueError("tap_gro needs a vnet_hdr TAP")
        if mac_capacity < 16 or mac_capacity > (1 << 24):
            raise ValueError("mac_capacity must be 16..2**24")
        self.st = <dp_state *>calloc(1, sizeof(dp_state))
        if self.st == NULL:
            raise MemoryError()
        self.st.main = self.st
        self.st.worker = 0
        self.st.nworkers = 1 + len(queues)
        self.st.tap_fd = tap_fd
        self.st.udp_fd = udp_fd
        self.st.vnet_hdr = vnet_hdr
        self.st.tap_gro = tap_gro
        self.st.udp_gso = udp_gso
        self.st.udp_gro = udp_gro
        self.st.mtu = mtu
        self.st.max_frame = mtu + DP_ETH
        self.st.max_peers = max_peers
        self.st.tx_flush_bytes = DP_TX_BUF
        self.st.tx_flush_frames = DP_TX_ENTRIES
        self.st.rx_batch = 0
        self.st.aqm = aqm
        self.st.aqm_target_ns = DP_AQM_TARGET_NS
        self.st.aqm_interval_ns = DP_AQM_INTERVAL_NS
        if aqm:      # the rx CoDel's sojourn: kernel arrival time per datagram (_fp_aqm.pxi)
            _timestamps_on(udp_fd)
            for q in queues:
                _timestamps_on(q[1])
        self.st.seen[0] = <uint64_t>DP_QUIESCENT
        self.st.seen[1] = <uint64_t>DP_QUIESCENT
        pthread_mutex_init(&self.st.mt_lock, NULL)
        while nb < <uint64_t>mac_capacity:
            nb <<= 1
        self.st.mt.entries = <mt_entry *>calloc(nb, sizeof(mt_entry))
        self.st.mt.mask = nb - 1
        self.st.mt.max_age = mac_max_age_ms
        self.st.mt.seed = int.from_bytes(_dp_os.urandom(8), "little")
        self.st.addrs = <dp_addr *>calloc(max_peers, sizeof(dp_addr))
        self.st.rxc = <dp_rxc *>calloc(max_peers, sizeof(dp_rxc))
        self.st.txc = <dp_txc *>calloc(max_peers, sizeof(dp_txc))
        if (self.st.mt.entries == NULL or self.st.addrs == NULL or self.st.rxc == NULL
                or self.st.txc == NULL):
            raise MemoryError()
        for i in range(max_peers):
            pthread_mutex_init(&self.st.addrs[i].lock, NULL)
        self.ws = <dp_state **>calloc(self.st.nworkers, sizeof(dp_state *))
        if self.ws == NULL:
            raise MemoryError()
        self.ws[0] = self.st
        self.workers = 1
        for i in range(1, self.st.nworkers):
            # a worker: worker 0's settings, its own fds and counters; the shared parts are
            # reached through `main` (its own snap / mt / mt_lock fields stay unused, zero)
            w = <dp_state *>calloc(1, sizeof(dp_state))
            if w == NULL:
                raise MemoryError()
            self.ws[i] = w
            self.workers = i + 1
            w.main = self.st
            w.worker = i
            w.nworkers = self.st.nworkers
            w.tap_fd = queues[i - 1][0]
            w.udp_fd = queues[i - 1][1]
            w.addrs = self.st.addrs
            w.rxc = <dp_rxc *>calloc(max_peers, sizeof(dp_rxc))
            w.txc = <dp_txc *>calloc(max_peers, sizeof(dp_txc))
            if w.rxc == NULL or w.txc == NULL:
                raise MemoryError()
            w.seen[0] = <uint64_t>DP_QUIESCENT
            w.seen[1] = <uint64_t>DP_QUIESCENT
        self.max_peers = max_peers
        self.mtu = mtu
        self._slots = {}
        self._retired = []
        self._threads = []
        a, b = _dp_socket.socketpair(_dp_socket.AF_UNIX, _dp_socket.SOCK_DGRAM)
        for sock in (a, b):
            sock.setblocking(False)
            # room for several TX / INJECT batches (PUNT_BATCH_MAX each): past the sysctl
            # caps when root (SO_SNDBUFFORCE 32 / SO_RCVBUFFORCE 33), else up to them
            for force, plain in ((32, _dp_socket.SO_SNDBUF), (33, _dp_socket.SO_RCVBUF)):
                try:
                    sock.setsockopt(_dp_socket.SOL_SOCKET, force, 4 << 20)
                except OSError:
                    try:
                        sock.setsockopt(_dp_socket.SOL_SOCKET, plain, 4 << 20)
                    except OSError:
                        pass
        self.punt_socket = a
        self._c_sock = b
        self.st.punt_fd = b.fileno()
        self._wake = _dp_os.eventfd(0, _dp_os.EFD_NONBLOCK | _dp_os.EFD_CLOEXEC)
        self.st.wake_fd = self._wake
        self._sync_workers()
        self._publish([])

    cdef void _sync_workers(self) noexcept:
        """Copy worker 0's settings (fds of the punt socket and wake eventfd, knobs, offload
        flags, stop) to the other workers; before start, after tune()."""
        cdef dp_state *w
        cdef int i
        for i in range(1, self.workers):
            w = self.ws[i]
            w.wake_fd = self.st.wake_fd
            w.punt_fd = self.st.punt_fd
            w.vnet_hdr = self.st.vnet_hdr
            w.tap_gro = self.st.tap_gro
            w.udp_gso = self.st.udp_gso
            w.udp_gro = self.st.udp_gro
            w.mtu = self.st.mtu
            w.max_frame = self.st.max_frame
            w.max_peers = self.st.max_peers
            w.tx_flush_bytes = self.st.tx_flush_bytes
            w.tx_flush_frames = self.st.tx_flush_frames
            w.rx_batch = self.st.rx_batch
            w.aqm = self.st.aqm
            w.aqm_target_ns = self.st.aqm_target_ns
            w.aqm_interval_ns = self.st.aqm_interval_ns
            w.stop = self.st.stop

    def __dealloc__(self):
        cdef int i
        if self.ws != NULL:
            for i in range(1, self.workers):
                free(self.ws[i].rxc)
                free(self.ws[i].txc)
                free(self.ws[i])
            free(self.ws)
            self.ws = NULL
        if self.st == NULL:
            return
        # threads hold a reference to self while running, so none is running here
        dp_snap_free(<dp_snap *>self.st.snap)
        for _gen, addr, _keys in (self._retired or []):
            dp_snap_free(<dp_snap *><size_t>addr)
        free(self.st.mt.entries)
        if self.st.addrs != NULL:
            for i in range(self.st.max_peers):
                pthread_mutex_destroy(&self.st.addrs[i].lock)
        free(self.st.addrs)
        free(self.st.rxc)
        free(self.st.txc)
        pthread_mutex_destroy(&self.st.mt_lock)
        free(self.st)
        self.st = NULL
        if self._wake >= 0:
            _dp_os.close(self._wake)
            self._wake = -1

    def tune(self, *, tx_flush_bytes: int | None = None, tx_flush_frames: int | None = None,
             rx_batch: int | None = None, aqm_target_us: int | None = None,
             aqm_interval_us: int | None = None) -> dict:
        """Batching knobs (latency vs syscalls per frame); only while stopped. Returns them.

        tx_flush_bytes / tx_flush_frames: the tx loop sends its batch once this much is
        queued, else when the TAP has nothing more to read (default: the whole batch buffer).
        rx_batch: datagrams (UDP_GRO buffers) per recvmmsg, 0 = all receive slots.
        aqm_target_us / aqm_interval_us: CoDel's target and interval (_fp_aqm.pxi; defaults
        AQM_TARGET_NS / AQM_INTERVAL_NS): for experiments and tests, not an agent option.
        """
        if self._threads:
            raise RuntimeError("tune() while the loops run")
        if tx_flush_bytes is not None:
            if not 1 <= tx_flush_bytes <= DP_TX_BUF:
                raise ValueError(f"tx_flush_bytes must be 1..{DP_TX_BUF}")
            self.st.tx_flush_bytes = <uint32_t>tx_flush_bytes
        if tx_flush_frames is not None:
            if not 1 <= tx_flush_frames <= DP_TX_ENTRIES:
                raise ValueError(f"tx_flush_frames must be 1..{DP_TX_ENTRIES}")
            self.st.tx_flush_frames = tx_flush_frames
        if rx_batch is not None:
            if not 0 <= rx_batch <= UB_MAX:
                raise ValueError(f"rx_batch must be 0..{UB_MAX}")
            self.st.rx_batch = rx_batch
        if aqm_target_us is not None:
            if not 1 <= aqm_target_us <= 1_000_000:
                raise ValueError("aqm_target_us must be 1..1000000")
            self.st.aqm_target_ns = <uint64_t>aqm_target_us * 1000
        if aqm_interval_us is not None:
            if not 1 <= aqm_interval_us <= 10_000_000:
                raise ValueError("aqm_interval_us must be 1..10000000")
            self.st.aqm_interval_ns = <uint64_t>aqm_interval_us * 1000
        self._sync_workers()
        return {"tx_flush_bytes": self.st.tx_flush_bytes,
                "tx_flush_frames": self.st.tx_flush_frames, "rx_batch": self.st.rx_batch,
                "aqm_target_us": self.st.aqm_target_ns // 1000,
                "aqm_interval_us": self.st.aqm_interval_ns // 1000}

    # -- snapshots ------------------------------------------------------------------------------

    cdef void _publish(self, list dropped) except *:
        """Build a snapshot of self._slots, publish it, retire the old one with `dropped`."""
        cdef dp_snap *s = <dp_snap *>calloc(1, sizeof(dp_snap))
        cdef uint32_t cap = 16
        cdef uint32_t h
        cdef int nrx = 0
        cdef int nflood = 0
        cdef _TxKey tk
        cdef _RxKey rk
        cdef dp_peer *p
        cdef uint64_t gen
        cdef void *old
        if s == NULL:
            raise MemoryError()
        for info in self._slots.values():
            nrx += len(info["rx"])
        while cap < <uint32_t>(2 * nrx + 2):
            cap <<= 1
        s.peers = <dp_peer *>calloc(self.st.max_peers, sizeof(dp_peer))
        s.flood = <int32_t *>calloc(self.st.max_peers, sizeof(int32_t))
        s.idx = <dp_idx *>calloc(cap, sizeof(dp_idx))
        if s.peers == NULL or s.flood == NULL or s.idx == NULL:
            dp_snap_free(s)
            raise MemoryError()
        s.idx_mask = cap - 1
        for slot in sorted(self._slots):
            info = self._slots[slot]
            p = &s.peers[<int>slot]
            p.active = 1
            p.bridging = info["bridging"]
            p.via_python = info["via_python"]
            p.relay_ch = info["relay_ch"]
            p.mac = int.from_bytes(info["mac"], "big")
            p.ident = (<_Ident>info["ident"]).c
            if info["tx"] is not None:
                tk = info["tx"]
                p.tx = tk.c
                s.flood[nflood] = <int32_t>slot
                nflood += 1
            for index, rko in info["rx"].items():
                rk = rko
                h = (<uint32_t>index * <uint32_t>0x9E3779B1) & s.idx_mask
                while s.idx[h].index != 0:
                    h = (h + 1) & s.idx_mask
                s.idx[h].index = <uint32_t>index
                s.idx[h].rx = rk.c
        s.nflood = nflood
        old = self.st.snap
        gen = self.st.gen
        dp_store_ptr(&self.st.snap, <void *>s)
        dp_store_u64(&self.st.gen, gen + 1)
        if old != NULL or dropped:
            self._retired.append((gen, <size_t>old, dropped))
        self._reclaim()

    cdef void _reclaim(self) except *:
        cdef uint64_t oldest = <uint64_t>DP_QUIESCENT    # the lowest generation in use
        cdef uint64_t g
        cdef int i, t
        for i in range(self.workers):
            for t in range(2):
                g = dp_load_u64(&self.ws[i].seen[t])
                if g < oldest:
                    oldest = g
        keep = []
        for gen, addr, keys in self._retired:
            if oldest == <uint64_t>DP_QUIESCENT or oldest > <uint64_t>gen:
                dp_snap_free(<dp_snap *><size_t>addr)
            else:
                keep.append((gen, addr, keys))
        self._retired = keep

    def reclaim(self) -> int:
        """Free retired snapshots no thread can still use; returns how many remain."""
        self._reclaim()
        return len(self._retired)

    # -- sessions -------------------------------------------------------------------------------

    cdef int _check_slot(self, int slot) except -1:
        if not 0 <= slot < self.st.max_peers:
            raise ValueError(f"slot {slot} out of range 0..{self.st.max_peers - 1}")
        return 0

    cdef void _set_addr(self, int slot, object addr) except *:
        cdef bytes raw = b""
        cdef dp_addr *a = &self.st.addrs[slot]
        if addr is not None:
            host, port = addr
            if not 0 < int(port) < 65536:
                raise ValueError(f"bad port {port!r}")
            raw = _pack_sockaddr(str(host), int(port))
        pthread_mutex_lock(&a.lock)
        memset(&a.sa, 0, sizeof(sockaddr_storage))
        if raw:
            memcpy(&a.sa, <const char *>raw, len(raw))
        a.len = <socklen_t>len(raw)
        pthread_mutex_unlock(&a.lock)

    def install(self, int slot, tx, rx, *, peer_mac, bint allow_bridging=False, addr=None,
                overlay_ip4=None, overlay_ip6=(), routes=(), tx_limit=None,
                bint via_python=False, int relay_channel=0) -> None:
        """Install or replace peer `slot`'s session atomically.

        tx: the SessionKeys (enclave.proto.keys) to send with, or None; its local_index names
        the session whose receive key may move the peer's address when a newer packet arrives
        from elsewhere. rx: the SessionKeys that may receive (at most DATAPLANE_MAX_RX_KEYS).
        The keys are read as they are (local_index, remote_index, rx_key, tx_key, cipher: a
        wire.Cipher, whose value is the C AEAD kind).
        peer_mac: the peer's certified MAC (6 bytes); allow_bridging: it may send from other
        MACs (a gateway). overlay_ip4 / overlay_ip6 / routes: its certified overlay addresses
        and gateway routes: the sources its frames may claim (fp_ident_check, _fp_ident.pxi).
        addr: (host, port) or None (keep the current address; a new slot starts without one).
        via_python: the path is TCP or the relay over TLS: encrypted packets are punted in
        batches (PUNT_TX) for Python to send. relay_channel: the path is the UDP relay at
        `addr` (or the address the slot has), this agent's channel for the peer: packets go
        there with the relay header, and relayed DATA is taken only from there with that
        channel (_fp_relaypath.pxi). Keys whose index and key bytes are unchanged keep their
        counter / replay window.
        """
        cdef _TxKey tk
        cdef _RxKey rk
        cdef _Ident ident
        cdef bytes mac
        cdef int kind, i
        cdef uint64_t limit = DP_DEFAULT_LIMIT if tx_limit is None else tx_limit
        self._check_slot(slot)
        mac = bytes(peer_mac)
        if len(mac) != 6 or mac[0] & 1:
            raise ValueError("peer_mac must be 6 bytes, unicast")
        if not 0 <= relay_channel <= RP_MAX_CHANNEL or (relay_channel and via_python):
            raise ValueError(f"relay_channel must be 0..{RP_MAX_CHANNEL}, not with via_python")
        ivalue = _ident_value(overlay_ip4, overlay_ip6, routes)
        rx = list(rx)
        if len(rx) > DP_MAX_RX:
            raise ValueError(f"at most {DP_MAX_RX} receive keys per peer")
        seen = set()
        for keys in rx:
            index = int(keys.local_index)
            if not 0 < index < 2**32 or index in seen:
                raise ValueError(f"bad or duplicate receive index {index!r}")
            seen.add(index)
            for other, oinfo in self._slots.items():
                if other != slot and index in oinfo["rx"]:
                    raise ValueError(f"receive index {index:#x} already used by slot {other}")
        old = self._slots.get(slot)
        dropped = []
        new_tx = None
        tx_local_index = None
        if tx is not None:
            rindex = int(tx.remote_index)
            tx_local_index = int(tx.local_index)
            kind = _kind_of(tx.cipher)
            if not 0 <= rindex < 2**32:
                raise ValueError("bad remote index")
            dg = _digest(kind, tx.tx_key)
            if (old is not None and old["tx"] is not None
                    and (<_TxKey>old["tx"]).c.remote_index == rindex
                    and (<_TxKey>old["tx"]).digest == dg):
                new_tx = old["tx"]
                (<_TxKey>new_tx).c.limit = limit
            else:
                tk = _TxKey.__new__(_TxKey)
                tk.key = AeadKey(tx.cipher, tx.tx_key)
                tk.digest = dg
                tk.c = <dp_txkey *>calloc(1, sizeof(dp_txkey))
                if tk.c == NULL:
                    raise MemoryError()
                tk.c.kind = tk.key.kind
                tk.c.state = tk.key.state
                tk.c.remote_index = <uint32_t>rindex
                tk.c.limit = limit
                new_tx = tk
        new_rx = {}
        for keys in rx:
            index = int(keys.local_index)
            kind = _kind_of(keys.cipher)
            dg = _digest(kind, keys.rx_key)
            prev = old["rx"].get(index) if old is not None else None
            if prev is not None and (<_RxKey>prev).digest == dg:
                rk = prev
            else:
                rk = _RxKey.__new__(_RxKey)
                rk.key = AeadKey(keys.cipher, keys.rx_key)
                rk.digest = dg
                rk.c = <dp_rxkey *>calloc(1, sizeof(dp_rxkey))
                if rk.c == NULL:
                    raise MemoryError()
                rk.c.kind = rk.key.kind
                rk.c.state = rk.key.state
                rk.c.local_index = <uint32_t>index
                rk.c.slot = slot
                pthread_mutex_init(&rk.c.lock, NULL)
                rw_init(&rk.c.win, DP_DEFAULT_LIMIT)
            new_rx[index] = rk
        if old is not None and old["ident"] is not None and (<_Ident>old["ident"]).value == ivalue:
            ident = old["ident"]
        else:
            ident = dp_ident_new(ivalue)
        # The `current` flag is set only on keys not yet visible to the rx thread or left as
        # they were: a key that changes role gets the new flag before the snapshot is swapped
        # (an int store; the rx thread reads either value safely).
        for index, rko in new_rx.items():
            rk = rko
            rk.c.current = tx_local_index is not None and index == tx_local_index
        if old is not None:
            if old["tx"] is not None and old["tx"] is not new_tx:
                dropped.append(old["tx"])
            for index, rko in old["rx"].items():
                if new_rx.get(index) is not rko:
                    dropped.append(rko)
            if old["ident"] is not ident:
                dropped.append(old["ident"])
        else:
            for i in range(self.workers):
                memset(&self.ws[i].rxc[slot], 0, sizeof(dp_rxc))
                memset(&self.ws[i].txc[slot], 0, sizeof(dp_txc))
            self._set_addr(slot, None)
        if addr is not None:
            self._set_addr(slot, addr)
        self._slots[slot] = {"mac": mac, "bridging": allow_bridging, "via_python": via_python,
                             "relay_ch": relay_channel, "tx": new_tx, "rx": new_rx,
                             "ident": ident}
        self._publish(dropped)

    def remove(self, int slot) -> None:
        """Remove peer `slot` (its keys, address and learned MACs)."""
        self._check_slot(slot)
        old = self._slots.pop(slot, None)
        if old is None:
            return
        dropped = list(old["rx"].values())
        dropped.append(old["ident"])
        if old["tx"] is not None:
            dropped.append(old["tx"])
        self._publish(dropped)
        with nogil:
            pthread_mutex_lock(&self.st.mt_lock)
            mt_forget_slot(&self.st.mt, slot)
            pthread_mutex_unlock(&self.st.mt_lock)
        self._set_addr(slot, None)

    def set_addr(self, int slot, addr) -> None:
        """Point peer `slot`'s DATA packets at (host, port), or nowhere (None)."""
        self._check_slot(slot)
        self._set_addr(slot, addr)

    def get_addr(self, int slot):
        """The address DATA packets for `slot` go to, as (host, port), or None."""
        cdef dp_addr *a
        self._check_slot(slot)
        a = &self.st.addrs[slot]
        pthread_mutex_lock(&a.lock)
        raw = (<const char *>&a.sa)[:a.len] if a.len else b""
        pthread_mutex_unlock(&a.lock)
        return _unpack_sockaddr(raw) if raw else None

    def slots(self) -> list:
        return sorted(self._slots)

    def identity(self, int slot):
        """Peer `slot`'s certified addresses as stored for the loops (read back from C):
        {"ip4": str | None, "ip6": [str], "routes": [str]}, or None for an empty slot."""
        cdef dp_ident *c
        cdef int i
        self._check_slot(slot)
        info = self._slots.get(slot)
        if info is None:
            return None
        c = (<_Ident>info["ident"]).c
        routes = []
        for i in range(c.nroutes):
            net = _dp_ipaddress.IPv4Address(c.routes[i].net)
            mask = _dp_ipaddress.IPv4Address(c.routes[i].mask)
            routes.append(str(_dp_ipaddress.IPv4Network(f"{net}/{mask}")))
        return {
            "ip4": str(_dp_ipaddress.IPv4Address(c.ip4)) if c.ip4 else None,
            "ip6": [str(_dp_ipaddress.IPv6Address((<const char *>c.ip6)[16 * i:16 * i + 16]))
                    for i in range(c.nip6)],
            "routes": routes,
        }

    # -- counters -------------------------------------------------------------------------------

    def counters(self, int slot) -> dict:
        """Per-peer counters (frames/bytes in and out, drops by reason: PEER_DROP_COUNTERS,
        key usage)."""
        cdef dp_rxc r
        cdef dp_txc t
        cdef _TxKey tk
        cdef int i
        self._check_slot(slot)
        memset(&r, 0, sizeof(dp_rxc))
        memset(&t, 0, sizeof(dp_txc))
        for i in range(self.workers):
            dp_sum_words(<uint64_t *>&r, <const uint64_t *>&self.ws[i].rxc[slot], sizeof(dp_rxc))
            dp_sum_words(<uint64_t *>&t, <const uint64_t *>&self.ws[i].txc[slot], sizeof(dp_txc))
        info = self._slots.get(slot)
        out = {
            "rx_frames": r.frames, "rx_bytes": r.bytes, "rx_replay": r.replay,
            "rx_decrypt_fail": r.decrypt_fail, "rx_spoofed": r.spoofed, "rx_runt": r.runt,
            "rx_ip_spoofed": r.ip_spoofed, "rx_arp_spoofed": r.arp_spoofed,
            "roamed": r.roamed,
            "tx_frames": t.frames, "tx_bytes": t.bytes, "tx_key_limit": t.key_limit,
            "tx_no_key": t.no_key, "tx_no_addr": t.no_addr, "tx_send_errors": t.send_errors,
            "tx_via_python": t.via_python, "tx_relayed": t.relayed,
            "rx_relayed": r.relayed, "rx_relay_forged": r.relay_forged,
        }
        if info is not None and info["tx"] is not None:
            tk = info["tx"]
            out["tx_counter"] = dp_used(tk.c)
        return out

    def global_counters(self) -> dict:
        cdef dp_grx r
        cdef dp_gtx t
        cdef int i
        memset(&r, 0, sizeof(dp_grx))
        memset(&t, 0, sizeof(dp_gtx))
        for i in range(self.workers):
            dp_sum_words(<uint64_t *>&r, <const uint64_t *>&self.ws[i].grx, sizeof(dp_grx))
            dp_sum_words(<uint64_t *>&t, <const uint64_t *>&self.ws[i].gtx, sizeof(dp_gtx))
        return {
            "workers": self.workers,
            "rx_datagrams": r.datagrams, "rx_punted": r.punted,
            "rx_punt_dropped": r.punt_dropped, "rx_unknown_index": r.unknown_index,
            "rx_malformed": r.malformed, "rx_truncated": r.truncated,
            "tap_writes": r.tap_writes, "tap_write_errors": r.tap_write_errors,
            "rx_gro_datagrams": r.gro_datagrams, "rx_injected": r.injected,
            "rx_inject_msgs": r.inject_msgs, "tx_punt_batches": t.punt_batches,
            "rx_rounds": r.rounds,
            "tap_reads": t.tap_reads, "tx_oversize": t.oversize, "icmp_sent": t.icmp_sent,
            "tx_flooded": t.flooded, "tx_no_peer": t.no_peer, "tx_runt": t.runt,
            "tx_offload_errors": t.offload_errors, "sendmmsg_calls": t.sendmmsg_calls,
            "gso_messages": t.gso_messages, "gso_fallbacks": t.gso_fallbacks,
            "tx_punt_dropped": t.punt_dropped, "tx_eagain_waits": t.eagain_waits,
            "tx_rounds": t.rounds,
            "tx_aqm_marks": t.aqm_marks, "tx_aqm_drops": t.aqm_drops,
            "rx_aqm_marks": r.aqm_marks, "rx_aqm_drops": r.aqm_drops,
            "aqm_marks": t.aqm_marks + r.aqm_marks, "aqm_drops": t.aqm_drops + r.aqm_drops,
            "tx_aqm_wait_us": t.aqm_wait_us, "rx_aqm_wait_us": r.aqm_wait_us,
            "rx_aqm_timed": r.aqm_timed,
            "aqm": bool(self.st.aqm),
            "udp_gso": bool(self.st.udp_gso), "udp_gro": bool(self.st.udp_gro),
            "vnet_hdr": bool(self.st.vnet_hdr), "tap_gro": bool(self.st.tap_gro),
        }

    def worker_counters(self) -> list:
        """Per worker (index = its TAP queue and socket): what its two threads did, {"tap_reads",
        "rx_datagrams", "tap_writes", "sendmmsg_calls"}: how the kernel spread the work."""
        cdef int i
        return [{"tap_reads": self.ws[i].gtx.tap_reads,
                 "sendmmsg_calls": self.ws[i].gtx.sendmmsg_calls,
                 "rx_datagrams": self.ws[i].grx.datagrams,
                 "tap_writes": self.ws[i].grx.tap_writes} for i in range(self.workers)]

    def activity(self) -> list:
        """[(slot, local_index, rx_packets, tx_messages or None)] for every installed key:
        what Node.report_activity needs (tx_messages: counters used by the tx key that the
        session with this local index sends with)."""
        cdef _RxKey rk
        cdef _TxKey tk
        out = []
        for slot, info in self._slots.items():
            for index, rko in info["rx"].items():
                rk = rko
                sent = None
                if rk.c.current and info["tx"] is not None:
                    tk = info["tx"]
                    sent = dp_used(tk.c)
                out.append((slot, index, rk.c.frames, sent))
        return out

    # -- Python-originated traffic ----------------------------------------------------------------

    def inject(self, packet) -> None:
        """Hand a DATA packet that arrived over TCP / the relay to the rx thread."""
        n = len(packet)
        if not 0 < n <= RP_MAX_FRAME:
            raise ValueError(f"an injected packet has 1..{RP_MAX_FRAME} bytes")
        self.inject_frames(n.to_bytes(RP_LEN, "big") + bytes(packet))

    def inject_frames(self, frames) -> None:
        """Hand packets that arrived over TCP / the relay to the rx thread in one message:
        `frames` is u16 big-endian length | packet, repeated (the TCP framing), at most
        PUNT_BATCH_MAX bytes. The rx thread checks the framing (a broken one: rx_malformed)."""
        if not RP_LEN < len(frames) <= RP_BATCH_MAX:
            raise ValueError(f"an inject batch has 3..{RP_BATCH_MAX} bytes")
        hdr = bytearray(DP_PUNT_HDR)
        hdr[0] = DP_PUNT_INJECT
        self.punt_socket.sendmsg([hdr, frames])

    # -- threads ----------------------------------------------------------------------------------

    def _run(self, int which, int worker) -> None:
        cdef dp_state *w = self.ws[worker]
        with nogil:
            if which == 0:
                dp_tx_loop(w)
            else:
                dp_rx_loop(w)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        cdef int i
        if self._threads:
            raise RuntimeError("data plane already started")
        self.st.stop = 0
        self._sync_workers()
        self._threads = []
        for i in range(self.workers):
            sfx = str(i) if i else ""
            self._threads += [
                _dp_threading.Thread(target=self._run, args=(0, i), name="enclave-dp-tx" + sfx,
                                     daemon=True),
                _dp_threading.Thread(target=self._run, args=(1, i), name="enclave-dp-rx" + sfx,
                                     daemon=True),
            ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Wake every loop and join them (they notice within one poll round)."""
        cdef int i
        if not self._threads:
            return
        for i in range(self.workers):
            self.ws[i].stop = 1
        _dp_os.eventfd_write(self._wake, 1)
        for t in self._threads:
            t.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"data-plane threads did not stop: {alive}")
        self._threads = []
        _dp_os.eventfd_read(self._wake)
        for i in range(self.workers):
            dp_store_u64(&self.ws[i].seen[0], <uint64_t>DP_QUIESCENT)
            dp_store_u64(&self.ws[i].seen[1], <uint64_t>DP_QUIESCENT)
        self._reclaim()

    def close(self) -> None:
        self.stop()
        self.punt_socket.close()
        self._c_sock.close()
