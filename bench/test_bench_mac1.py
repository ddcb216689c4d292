"""What a handshake-shaped packet costs a responder before any real work: the MAC1 check
(enclave.proto.cookie) on INITs of a typical and of the largest size, and the whole
Node.receive_datagram path for a junk INIT (type word, shape, MAC1, drop counter).
The goal (issue 12) is under 2 µs per packet for the MAC1 check; figures only, no assertion
on time.

    pytest bench/test_bench_mac1.py --benchmark-enable     # numbers
    pytest bench/test_bench_mac1.py                        # correctness smoke only
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from nacl.signing import SigningKey

from enclave.proto.cookie import CookieChecker
from enclave.proto.handshake import InitiatorHandshake, LocalCredentials
from enclave.proto.node import Node
from enclave.proto.wire import MAX_CERT_SIZE

TYPICAL_CERT = 600  # a system certificate without many tags or gateway routes


def _creds(cert_size: int) -> LocalCredentials:
    sk = SigningKey.generate()
    return LocalCredentials("BENCH", b"C" * cert_size, lambda m: sk.sign(m).signature, 0,
                            bytes(sk.verify_key))


def _init_to(responder: LocalCredentials, cert_size: int) -> bytes:
    return InitiatorHandshake(_creds(cert_size), responder_key=responder.public_key,
                              local_index=1, timestamp=1, random_bytes=os.urandom).init_bytes


@pytest.mark.parametrize("cert_size", [TYPICAL_CERT, MAX_CERT_SIZE], ids=["typical", "largest"])
def test_mac1_check_init(benchmark: Any, cert_size: int) -> None:
    r = _creds(TYPICAL_CERT)
    checker = CookieChecker(r.public_key, os.urandom)
    msg = _init_to(r, cert_size)
    benchmark.group = "mac1"
    assert benchmark(checker.check_mac1, msg) is True


def test_mac1_rejects_junk_of_the_largest_size(benchmark: Any) -> None:
    r = _creds(TYPICAL_CERT)
    checker = CookieChecker(r.public_key, os.urandom)
    good = _init_to(r, MAX_CERT_SIZE)
    junk = good[:84] + os.urandom(len(good) - 84)  # right shape, wrong MAC: hashed in full
    benchmark.group = "mac1"
    assert benchmark(checker.check_mac1, junk) is False


def test_node_drops_a_junk_init(benchmark: Any) -> None:
    r = _creds(TYPICAL_CERT)
    node = Node(r, lambda _der: None, lambda _name: False)
    good = _init_to(r, TYPICAL_CERT)
    junk = good[:84] + os.urandom(len(good) - 84)
    benchmark.group = "mac1"
    benchmark(node.receive_datagram, junk, ("198.18.0.1", 9), 1.0)
    assert node.counters().get("init_bad_mac1", 0) >= 1
    assert node.datagrams_to_send(1.0) == [] and node.state_size() == 0
