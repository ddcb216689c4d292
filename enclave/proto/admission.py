"""Which INITs a responder spends work on (sans-I/O: `now` passed in, no sockets).

    INIT (type 6) from source S
      1. shape + MAC1 (enclave.proto.cookie)         no  -> drop "init_bad_mac1"
         -- only parties holding our certificate get past here: nothing was spent before --
      2. (enclave.proto.init_intake answers an INIT it already answered from its cache here,
         only to a source plausibly the initiator's)
      3. offered load: every valid-MAC1 INIT takes a token from the load meter; an empty meter
         puts us under load for UNDER_LOAD_AFTER seconds
      4. under load and no valid MAC2 for S          -> COOKIE_REPLY to S, drop "init_cookie_sent"
      5. per source IP (not IP:port: ports rotate for free), per claimed certificate, global
                                                     no  -> drop "init_rate_limited"
      6. admitted: the Node parses it and checks the certificate, intent and signature

Keys of the rate limits are what an attacker cannot rotate cheaply: the source IP (under load
proven by the cookie), and the certificate the INIT claims (a real one needs the CA).  The
global bucket caps the signature work whatever the keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

from enclave.discovery.candidates import RELAYED, PathAddr
from enclave.proto import timing as T
from enclave.proto.cookie import CookieChecker, RandomBytes
from enclave.proto.ratelimit import KeyedBuckets, TokenBucket
from enclave.proto.wire import INIT_MACS_SIZE, SIGNATURE_SIZE


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with an INIT whose MAC1 checked out."""

    admit: bool
    drop: str | None = None  # counter reason when not admitted
    reply: bytes | None = None  # a COOKIE_REPLY to send back to the source


ADMIT = Verdict(True)
RATE_LIMITED = Verdict(False, "init_rate_limited")


def source_bytes(addr: Hashable) -> bytes:
    """The source address a cookie is bound to, as bytes."""
    if isinstance(addr, PathAddr):
        return f"{addr.transport.value}|{addr.host}|{addr.port}".encode()
    return repr(addr).encode()


def source_ip(addr: Hashable) -> Hashable:
    """Rate-limit key of a source: its IP for UDP and TCP (every port of one host counts as
    one); a relay channel as a whole (the relay checked the sender's ticket)."""
    if isinstance(addr, PathAddr) and addr.transport not in RELAYED:
        return addr.host
    return addr


class InitGate:
    def __init__(self, public_key: bytes, random_bytes: RandomBytes) -> None:
        self._cookies = CookieChecker(public_key, random_bytes)
        self._load = TokenBucket(T.UNDER_LOAD_RATE, T.UNDER_LOAD_BURST)
        self._under_load_until = float("-inf")
        self._per_ip = KeyedBuckets(
            T.INIT_RATE_PER_SOURCE, T.INIT_BURST_PER_SOURCE, max_keys=T.RATE_LIMIT_TABLE
        )
        self._per_identity = KeyedBuckets(
            T.INIT_RATE_PER_IDENTITY, T.INIT_BURST_PER_IDENTITY, max_keys=T.RATE_LIMIT_TABLE
        )
        self._global = TokenBucket(T.INIT_RATE_GLOBAL, T.INIT_BURST_GLOBAL)

    def check_mac1(self, data: bytes) -> bool:
        return self._cookies.check_mac1(data)

    def under_load(self, now: float) -> bool:
        return now < self._under_load_until

    def admit(self, data: bytes, addr: Hashable, now: float) -> Verdict:
        """Steps 3-5 for an INIT that passed check_mac1."""
        if not self._load.allow(now):
            self._under_load_until = now + T.UNDER_LOAD_AFTER
        if self.under_load(now):
            source = source_bytes(addr)
            if not self._cookies.check_mac2(data, source, now):
                return Verdict(False, "init_cookie_sent", self._cookies.reply(data, source, now))
        if not self._per_ip.allow(source_ip(addr), now):
            return RATE_LIMITED
        if not self._per_identity.allow(_claimed_identity(data), now):
            return RATE_LIMITED
        if not self._global.allow(now):
            return RATE_LIMITED
        return ADMIT


def _claimed_identity(data: bytes) -> bytes:
    """A short key for the certificate an INIT claims (bytes 84 .. signature; not yet checked)."""
    end = len(data) - INIT_MACS_SIZE - SIGNATURE_SIZE
    return hashlib.blake2b(memoryview(data)[84:end], digest_size=16).digest()
