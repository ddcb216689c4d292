"""Fuzz target of a whole Node: every datagram a peer port can receive, with live sessions.

Host B (the victim) holds a session with A on the in-memory router (tests.support), which keeps
running on the simulated clock (1 ms per case: rekeys, keepalives, retries all happen during a
long run).  Each case hands B one datagram through ``Node.receive_datagram`` from a source the
case picks, built in one of these ways (the first byte chooses):

    0  raw bytes from a stranger                 B must send nothing at all to that source
    1  an INIT body of the case's bytes with a   gets past MAC1: admission, cookies under load,
       valid MAC1 for B (only an introduced        rate limits, certificate parse and checks
       party could make it)
    2  a real datagram of the A-B exchange       INIT (MAC1 made again), RESPONSE, CONFIRM,
       with bytes changed and cut                  DATA, CONTROL with live receiver indices
    3  a real datagram, unchanged, from another  replays and roaming attempts
       source
    4  to host C, which keeps a handshake to Z   C's initiator side: COOKIE_REPLY (real, sealed by
       in flight (Z's answers are never           Z's cookie key for C's latest INIT, then changed)
       delivered, only these cases)               and RESPONSE (Z's real one, changed) with C's
                                                  live index, from Z or another source; C never
                                                  sends an INIT anywhere but to Z, nor more bytes
                                                  than it got to another address

B's, A's and C's tables stay within their bounds (Node.state_size: peers, indices, closing, INIT
timestamps; drop reasons are a fixed set), the session with A survives (re-established if
a case made B drop it is fine, the count of peers is what is bounded).
"""

from __future__ import annotations

import random

from bench.fuzz.harness import Factory, Reader
from bench.fuzz.samples import exchange
from enclave.discovery.candidates import Candidate, CandidateKind, PathAddr, Transport
from enclave.proto.admission import source_bytes
from enclave.proto.cookie import CookieChecker, KeyedMac, mac1_key, stamp_init
from enclave.proto.wire import (
    INIT_BODY_FIXED_SIZE,
    INIT_MACS_SIZE,
    MSG_HANDSHAKE_INIT,
    MSG_HANDSHAKE_RESPONSE,
)
from tests.support.peers import ADDR_A
from tests.support.router import make_host, udp

ADDR_C, ADDR_Z = udp("198.18.5.5"), udp("198.18.6.6")

STEP_CASES = 16  # the router runs STEP_CASES ms every STEP_CASES cases
MAX_NODE_STATE = 16  # one intended peer: its entry, a few indices, closing keys, one timestamp
MAX_DROP_REASONS = 64


class NodeTarget:
    max_len = 1600

    def __init__(self, seed: int) -> None:
        ex = exchange()
        self.r, self.a, self.b = ex.router, ex.a, ex.b
        self.samples = ex.all()
        self.mac1 = KeyedMac(mac1_key(self.b.public_key))
        self.cases = 0
        self.to_strangers = 0
        # C keeps connecting to Z; Z answers C's INITs, but only the cases deliver (changed)
        # answers to C
        self.c = make_host(ex.pki, "CCCCC", [ADDR_C], intents={"ZZZZZ"}, seed=3)
        self.z = make_host(ex.pki, "ZZZZZ", [ADDR_Z], intents={"CCCCC"}, seed=4)
        self.z_cookies = CookieChecker(self.z.public_key, random.Random(seed).randbytes)
        self.c_init = b""
        self.z_response = b""
        self._drive_c()

    def seeds(self) -> list[bytes]:
        return ([bytes([2, i]) for i in range(len(self.samples))]
                + [bytes([0]) + s for s in self.samples]
                + [bytes([1]) + self.samples[0][:-INIT_MACS_SIZE]])

    def one(self, data: bytes) -> None:
        r = Reader(data)
        mode = r.u8() % 5
        src = PathAddr(Transport.UDP, f"198.18.{200 + r.u8() % 8}.{1 + r.u8() % 4}",
                       1024 + r.u8())
        if mode == 0:
            msg = r.rest()
        elif mode == 4:
            self._to_c(r)
            return
        elif mode == 1:
            raw = bytearray(r.rest())
            if len(raw) > INIT_BODY_FIXED_SIZE:  # a shape that init_size_ok accepts
                raw[0:4] = bytes([MSG_HANDSHAKE_INIT, 0, 0, 0])
                raw[82:84] = (len(raw) - INIT_BODY_FIXED_SIZE).to_bytes(2, "little")
            msg = stamp_init(bytes(raw), self.mac1.digest(bytes(raw)), None)
        else:
            base = self.samples[r.u8() % len(self.samples)]
            from_a = r.u8() % 2 == 0
            src = ADDR_A if from_a else src
            msg = r.edits(base) if mode == 2 else base
            if mode == 2 and msg[:1] == bytes([MSG_HANDSHAKE_INIT]) and len(msg) > INIT_MACS_SIZE:
                body = msg[:-INIT_MACS_SIZE]
                msg = stamp_init(body, self.mac1.digest(body), None)
        b = self.b.node
        b.receive_datagram(msg, src, self.r.now)
        for out, dst in b.datagrams_to_send(self.r.now):
            assert isinstance(dst, PathAddr)
            if dst == src and src != ADDR_A:
                assert mode != 0, f"B answered a stranger's raw datagram: {out[:8].hex()}"
                self.to_strangers += 1
            else:
                self.r.inject(out, self.r.source_for(self.b, dst), dst, self.r.latency)
        self._step()

    def _step(self) -> None:
        self.cases += 1
        if self.cases % STEP_CASES == 0:
            self.r.run(STEP_CASES / 1000)
            self.r.log.clear()
            self.a.events.clear()
            self.b.events.clear()
            self._drive_c()

    def _drive_c(self) -> None:
        """C's timers; C connects to Z again when it has no handshake and no session (closing
        one a case completed); Z answers C's INITs (kept, never delivered)."""
        c, z, now = self.c.node, self.z.node, self.r.now
        if c.session(self.z.name) is not None:
            c.close(self.z.name, now)
        if self.cases % 1024 == 0:
            c.connect(self.z.name, [Candidate(ADDR_Z, CandidateKind.PUBLIC)], now,
                      peer_key=self.z.public_key)
        t = c.get_timer()
        if t is not None and t <= now:
            c.handle_timer(now)
        for out, _dst in c.datagrams_to_send(now):
            if out[0] == MSG_HANDSHAKE_INIT:
                self.c_init = out
                z.receive_datagram(out, ADDR_C, now)
        for out, _dst in z.datagrams_to_send(now):
            if out[0] == MSG_HANDSHAKE_RESPONSE:
                self.z_response = out
        zt = z.get_timer()
        if zt is not None and zt <= now:
            z.handle_timer(now)
        z.datagrams_to_send(now)
        while c.next_event() is not None or z.next_event() is not None:
            pass

    def _to_c(self, r: Reader) -> None:
        now = self.r.now
        if r.u8() % 2 == 0 and self.c_init:
            base = self.z_cookies.reply(self.c_init, source_bytes(ADDR_C), now)
        else:
            base = self.z_response or self.c_init
        msg = r.edits(base)
        src = ADDR_Z if r.u8() % 4 else PathAddr(Transport.UDP, "198.18.6.7", 51820)
        self.c.node.receive_datagram(msg, src, now)
        for out, dst in self.c.node.datagrams_to_send(now):
            # to anyone but Z: only a CONFIRM to an authentic RESPONSE (replayed from a spoofed
            # source: smaller than what came in), never an INIT (no reflection, no amplifier)
            assert dst == ADDR_Z or (out[0] != MSG_HANDSHAKE_INIT and len(out) <= len(msg)), (
                f"C sent {len(out)} bytes of type {out[0]} to {dst} for {len(msg)} bytes")
        self._step()

    def state(self) -> dict[str, tuple[int, int]]:
        return {
            "B node tables": (self.b.node.state_size(), MAX_NODE_STATE),
            "A node tables": (self.a.node.state_size(), MAX_NODE_STATE),
            "B drop reasons": (len(self.b.node.counters()), MAX_DROP_REASONS),
            "C node tables": (self.c.node.state_size(), MAX_NODE_STATE),
            "Z node tables": (self.z.node.state_size(), MAX_NODE_STATE),
        }


FACTORIES: dict[str, Factory] = {"node": NodeTarget}
