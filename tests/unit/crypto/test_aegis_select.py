"""`--cipher aegis256` at start-up: what this side prefers, offers (caps) and falls back to, and
the TAP MTU that accounts for the largest tag it may use (numbered table)."""

from __future__ import annotations

import logging

import pytest

from enclave.cipher import (
    AEGIS256,
    AES256GCM,
    CHACHA20POLY1305,
    offer_caps,
    select_cipher,
)
from enclave.dataplane.mtu import (
    DEFAULT_OVERLAY_MTU,
    RELAY_HEADER,
    default_overlay_mtu,
    max_datagram_len,
)
from enclave.proto.wire import CAP_AEGIS256, CAP_AES256GCM_HW, IPV6_UDP_OVERHEAD, MAX_DATA_OVERHEAD

CPU = {"aes": True, "pclmulqdq": True, "ssse3": True}
SOD = {"aesni": True, "pclmul": True, "ssse3": True, "avx": True}
AES, AEGIS = CAP_AES256GCM_HW, CAP_AEGIS256

# (case, configured, env, libsodium flags, cipher, fallback, caps, TAP MTU)
CASES = [
    (1, None, {}, SOD, AES256GCM, AES256GCM, AES, 1398),
    (2, "auto", {}, SOD, AES256GCM, AES256GCM, AES, 1398),
    (3, "aegis256", {}, SOD, AEGIS256, AES256GCM, AES | AEGIS, 1382),
    (4, None, {"ENCLAVE_CIPHER": "aegis256"}, SOD, AEGIS256, AES256GCM, AES | AEGIS, 1382),
    (5, "chacha20poly1305", {"ENCLAVE_CIPHER": "AEGIS-256"}, SOD, AEGIS256, AES256GCM,
     AES | AEGIS, 1382),
    (6, "aegis256", {"ENCLAVE_CIPHER": "auto"}, SOD, AEGIS256, AES256GCM, AES | AEGIS, 1382),
    (7, "aegis256", {"ENCLAVE_CIPHER": "aes256gcm"}, SOD, AES256GCM, AES256GCM, AES, 1398),
    # no AES-NI: aegis256 is not offered, the automatic rule stands (ChaCha20 here)
    (8, "aegis256", {}, {**SOD, "aesni": False}, CHACHA20POLY1305, CHACHA20POLY1305, 0, 1398),
    # AES-NI without AVX (libsodium's AES-NI AEGIS code needs it): not offered, AES-GCM stays
    (9, "aegis256", {}, {**SOD, "avx": False}, AES256GCM, AES256GCM, AES, 1398),
    # AES-NI and AVX without PCLMUL: AEGIS-256 offered, the fallback is ChaCha20
    (10, "aegis256", {}, {**SOD, "pclmul": False}, AEGIS256, CHACHA20POLY1305, AEGIS, 1382),
]


@pytest.mark.parametrize(("case", "configured", "env", "sod", "cipher", "fallback", "caps", "mtu"),
                         CASES, ids=[f"case{c[0]}" for c in CASES])
def test_aegis_selection_table(case: int, configured: str | None, env: dict[str, str],
                               sod: dict[str, bool], cipher: str, fallback: str, caps: int,
                               mtu: int) -> None:
    choice = select_cipher(configured, env=env, cpu_flags=CPU, sodium_flags=sod)
    assert (choice.cipher, choice.fallback) == (cipher, fallback)
    assert choice.aegis_allowed is (cipher == AEGIS256)
    assert offer_caps(choice) == caps
    assert default_overlay_mtu(choice.max_tag_size) == mtu


def test_reasons_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    choice = select_cipher("aegis256", env={}, cpu_flags=CPU, sodium_flags=SOD)
    assert "preferred by config cipher=aegis256" in choice.reason
    assert "else aes256gcm" in choice.reason
    with caplog.at_level(logging.WARNING, logger="enclave.cipher"):
        choice = select_cipher("aegis256", env={}, cpu_flags=CPU,
                               sodium_flags={**SOD, "aesni": False})
    assert "lacks aesni" in caplog.text and "not offered" in caplog.text
    assert "asked for aegis256" in choice.reason


def test_default_mtu_unchanged_and_aegis_mtu_fits_1500() -> None:
    assert DEFAULT_OVERLAY_MTU == default_overlay_mtu() == 1398
    aegis = default_overlay_mtu(32)
    assert aegis == 1382
    # the largest AEGIS-256 datagram of a full-MTU frame fits a 1500-byte IPv6 path
    # (with the UDP relay's 8-byte header in front)
    assert max_datagram_len(aegis, tag=32) + RELAY_HEADER + IPV6_UDP_OVERHEAD == 1500
    assert aegis + 14 + MAX_DATA_OVERHEAD + RELAY_HEADER + IPV6_UDP_OVERHEAD == 1500
    # ... while the default MTU with a 32-byte tag would not
    assert max_datagram_len(DEFAULT_OVERLAY_MTU, tag=32) + IPV6_UDP_OVERHEAD > 1500
    with pytest.raises(ValueError):
        default_overlay_mtu(24)
