"""Cipher negotiation in the handshake (enclave.proto.aead + proto/handshake.py): the table of
offers and choices through a real three-message handshake (real CA, real Ed25519 signatures),
and a third party flipping the offer / choice bits: the handshake then fails authentication.

    offer  = the caps byte of INIT (initiator) and RESPONSE (responder), signed
    choice = the RESPONSE's cipher byte (the responder picks), signed; the initiator accepts it
             only if both offers allow it
"""

from __future__ import annotations

import os

import pytest

from enclave.cert.keys import public_key_raw, sign
from enclave.cipher import offer_caps, select_cipher
from enclave.proto import wire as W
from enclave.proto.aead import acceptable, negotiate, offer
from enclave.proto.handshake import (
    LABEL_RESPONSE,
    HandshakeResult,
    InitiatorHandshake,
    LocalCredentials,
    ResponderHandshake,
    transcript_hash,
    validate_init,
)
from enclave.proto.wire import CAP_AEGIS256, CAP_AES256GCM_HW, Cipher
from tests.support.pki import Pki

AES, AEGIS = CAP_AES256GCM_HW, CAP_AEGIS256
CPU = {"aes": True, "pclmulqdq": True, "ssse3": True}
SOD = {"aesni": True, "pclmul": True, "ssse3": True, "avx": True}
SOD_NO_AESNI = {"aesni": False, "pclmul": True, "ssse3": True, "avx": True}
SOD_NO_AVX = {**SOD, "avx": False}
CAPS_OFFSET = 76  # caps byte of the RESPONSE (wire.py diagram); the cipher byte follows it
CHOICE_OFFSET = 77
INIT_CAPS_OFFSET = 80


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def creds(pki: Pki, name: str, caps: int) -> LocalCredentials:
    key, der, _serial = pki.issue(name)
    return LocalCredentials(name, der, lambda m: sign(key, m), caps,
                            public_key_raw(key.public_key()))


def start(pki: Pki, caps_i: int, caps_r: int) -> tuple[InitiatorHandshake, LocalCredentials]:
    ci, cr = creds(pki, "AAAAA", caps_i), creds(pki, "BBBBB", caps_r)
    hs = InitiatorHandshake(ci, responder_key=cr.public_key, local_index=11, timestamp=1,
                            random_bytes=os.urandom)
    return hs, cr


def respond(pki: Pki, init: bytes, cr: LocalCredentials) -> ResponderHandshake | None:
    v = validate_init(init, pki.validate, lambda _n: True)
    return None if v is None else ResponderHandshake(cr, v, local_index=22,
                                                     random_bytes=os.urandom)


def run(pki: Pki, caps_i: int, caps_r: int) -> tuple[HandshakeResult, HandshakeResult]:
    hs, cr = start(pki, caps_i, caps_r)
    resp = respond(pki, hs.init_bytes, cr)
    assert resp is not None
    got = hs.receive_response(resp.response_bytes, pki.validate, lambda _n: True)
    assert got is not None
    confirm, ri = got
    rr = resp.receive_confirm(confirm)
    assert rr is not None
    return ri, rr


def flip(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1:]


# (case, initiator offer, responder offer, negotiated cipher)
TABLE = [
    (1, AES | AEGIS, AES | AEGIS, Cipher.AEGIS256),           # both allow aegis256
    (2, AES | AEGIS, AES, Cipher.AES256_GCM),                  # only the initiator allows it
    (3, AES, AES | AEGIS, Cipher.AES256_GCM),                  # only the responder allows it
    (4, AES, AES, Cipher.AES256_GCM),                          # the default (auto) both sides
    (5, AES | AEGIS, 0, Cipher.CHACHA20_POLY1305),             # responder: no AES-NI
    (6, 0, AES | AEGIS, Cipher.CHACHA20_POLY1305),             # initiator: no AES-NI
    (7, AEGIS, AES | AEGIS, Cipher.AEGIS256),                  # AES-NI without PCLMUL: aegis
    (8, AEGIS, AES, Cipher.CHACHA20_POLY1305),                 # ... and without it: ChaCha
    (9, 0, 0, Cipher.CHACHA20_POLY1305),
]


@pytest.mark.parametrize(("case", "caps_i", "caps_r", "want"), TABLE,
                         ids=[f"case{c[0]}" for c in TABLE])
def test_negotiation_table_through_a_real_handshake(
    pki: Pki, case: int, caps_i: int, caps_r: int, want: Cipher
) -> None:
    assert negotiate(caps_r, caps_i) is want
    ri, rr = run(pki, caps_i, caps_r)
    assert ri.keys.cipher is want and rr.keys.cipher is want
    assert ri.keys.tx_key == rr.keys.rx_key


# (case, agent option on A, A's libsodium flags, option on B, B's flags, negotiated cipher):
# the chain the agent runs (select_cipher -> offer_caps -> handshake)
AGENTS = [
    (1, "aegis256", SOD, "aegis256", SOD, Cipher.AEGIS256),
    (2, "aegis256", SOD, "auto", SOD, Cipher.AES256_GCM),
    (3, "auto", SOD, "aegis256", SOD, Cipher.AES256_GCM),
    (4, "aegis256", SOD, "aegis256", SOD_NO_AESNI, Cipher.CHACHA20_POLY1305),
    (5, "aegis256", SOD_NO_AVX, "aegis256", SOD, Cipher.AES256_GCM),
    (6, "aegis256", SOD, "chacha20poly1305", SOD, Cipher.CHACHA20_POLY1305),
    (7, "aegis256", SOD, "aes256gcm", SOD, Cipher.AES256_GCM),
    (8, None, SOD, None, SOD, Cipher.AES256_GCM),
]


@pytest.mark.parametrize(("case", "opt_a", "sod_a", "opt_b", "sod_b", "want"), AGENTS,
                         ids=[f"case{c[0]}" for c in AGENTS])
def test_agent_options_to_pair_cipher(
    pki: Pki, case: int, opt_a: str | None, sod_a: dict[str, bool], opt_b: str | None,
    sod_b: dict[str, bool], want: Cipher
) -> None:
    caps_a = offer_caps(select_cipher(opt_a, env={}, cpu_flags=CPU, sodium_flags=sod_a))
    caps_b = offer_caps(select_cipher(opt_b, env={}, cpu_flags=CPU, sodium_flags=sod_b))
    for caps_i, caps_r in ((caps_a, caps_b), (caps_b, caps_a)):  # either side may initiate
        ri, rr = run(pki, caps_i, caps_r)
        assert ri.keys.cipher is want and rr.keys.cipher is want


# --- a third party flips offer / choice bits ------------------------------------------------


@pytest.mark.parametrize(("case", "caps_i", "caps_r", "new_caps"), [
    (1, AES | AEGIS, AES | AEGIS, AES),          # downgrade: strip the initiator's aegis offer
    (2, AES, AES | AEGIS, AES | AEGIS),          # upgrade: add an aegis offer
    (3, AES, AES, 0),                            # downgrade to ChaCha20
])
def test_tampered_init_offer_fails_authentication(
    pki: Pki, case: int, caps_i: int, caps_r: int, new_caps: int
) -> None:
    hs, cr = start(pki, caps_i, caps_r)
    assert hs.init_bytes[INIT_CAPS_OFFSET] == caps_i
    assert respond(pki, hs.init_bytes, cr) is not None  # the untouched INIT passes
    assert respond(pki, flip(hs.init_bytes, INIT_CAPS_OFFSET, new_caps), cr) is None


@pytest.mark.parametrize(("case", "caps_i", "caps_r", "offset", "value"), [
    (1, AES | AEGIS, AES | AEGIS, CHOICE_OFFSET, Cipher.AES256_GCM),         # choice downgrade
    (2, AES | AEGIS, AES | AEGIS, CHOICE_OFFSET, Cipher.CHACHA20_POLY1305),  # choice downgrade
    (3, AES | AEGIS, AES, CHOICE_OFFSET, Cipher.AEGIS256),                   # choice upgrade
    (4, AES | AEGIS, AES | AEGIS, CAPS_OFFSET, AES),                         # offer downgrade
    (5, AES | AEGIS, AES, CAPS_OFFSET, AES | AEGIS),                         # offer upgrade
])
def test_tampered_response_fails_authentication(
    pki: Pki, case: int, caps_i: int, caps_r: int, offset: int, value: int
) -> None:
    hs, cr = start(pki, caps_i, caps_r)
    resp = respond(pki, hs.init_bytes, cr)
    assert resp is not None
    assert resp.response_bytes[offset] != value
    bad = flip(resp.response_bytes, offset, value)
    assert hs.receive_response(bad, pki.validate, lambda _n: True) is None
    # the genuine RESPONSE still completes afterwards
    assert hs.receive_response(resp.response_bytes, pki.validate, lambda _n: True) is not None


def test_signed_choice_outside_the_initiators_offer_is_refused(pki: Pki) -> None:
    """A responder (buggy or hostile, but holding a valid certificate) that signs a choice the
    initiator did not offer: refused by the initiator's own check, not only by signatures."""
    hs, _cr = start(pki, AES, AES | AEGIS)
    key, der, _serial = pki.issue("BBBBB")
    good = W.HandshakeResponse(22, 11, os.urandom(32), hs.init.ephemeral, AES | AEGIS,
                               Cipher.AES256_GCM, der, b"")

    def signed(choice: Cipher) -> bytes:
        unsigned = W.HandshakeResponse(good.sender_index, good.receiver_index, good.challenge,
                                       good.ephemeral, good.caps, choice, der, b"")
        sig = sign(key, LABEL_RESPONSE + transcript_hash(hs.init_body, unsigned.signed_part()))
        return unsigned.signed_part() + sig

    assert hs.receive_response(signed(Cipher.AEGIS256), pki.validate, lambda _n: True) is None
    got = hs.receive_response(signed(Cipher.AES256_GCM), pki.validate, lambda _n: True)
    assert got is not None and got[1].keys.cipher is Cipher.AES256_GCM


def test_offer_and_acceptable() -> None:
    assert offer(0) == {Cipher.CHACHA20_POLY1305}
    assert offer(AES | AEGIS) == set(Cipher)
    assert offer(0xFC) == {Cipher.CHACHA20_POLY1305}  # unknown bits offer nothing
    assert acceptable(Cipher.AEGIS256, AES | AEGIS, AEGIS) is Cipher.AEGIS256
    assert acceptable(Cipher.AEGIS256, AES, AES | AEGIS) is None
    assert acceptable(Cipher.CHACHA20_POLY1305, 0, 0) is Cipher.CHACHA20_POLY1305
    assert acceptable(0, AES, AES) is None and acceptable(9, AES, AES) is None


@pytest.mark.parametrize("value", [0, 4, 0xFF])
def test_response_with_an_unknown_cipher_byte_is_malformed(value: int) -> None:
    r = W.HandshakeResponse(8, 7, b"C" * 32, b"E" * 32, AES, Cipher.AEGIS256, b"CERT", b"S" * 64)
    raw = r.encode()
    assert raw[CAPS_OFFSET] == AES and raw[CHOICE_OFFSET] == Cipher.AEGIS256
    assert W.decode_response(raw) == r
    with pytest.raises(W.WireError):
        W.decode_response(flip(raw, CHOICE_OFFSET, value))
