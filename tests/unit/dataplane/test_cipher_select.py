"""Cipher selection: the rule, the two witnesses, and the overrides (numbered table)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from enclave import _fastpath as fp
from enclave.cipher import AES256GCM, CHACHA20POLY1305, CipherError, select_cipher

CPU_ALL = {"aes": True, "pclmulqdq": True, "ssse3": True}
SOD_ALL = {"aesni": True, "pclmul": True, "ssse3": True}
CPU_NO_AES = {**CPU_ALL, "aes": False}
SOD_NO_PCLMUL = {**SOD_ALL, "pclmul": False}
SOD_NO_SSSE3 = {**SOD_ALL, "ssse3": False}

# (case, configured, env, cpu flags, libsodium flags, expected cipher, reason contains)
CASES = [
    (1, None, {}, CPU_ALL, SOD_ALL, AES256GCM, "AES-NI, PCLMULQDQ and SSSE3"),
    (2, None, {}, CPU_NO_AES, {**SOD_ALL, "aesni": False}, CHACHA20POLY1305, "lacks aesni"),
    (3, None, {}, CPU_ALL, SOD_NO_SSSE3, CHACHA20POLY1305, "py-cpuinfo disagrees"),
    (4, None, {}, CPU_NO_AES, SOD_ALL, AES256GCM, "py-cpuinfo disagrees"),
    (5, "chacha20poly1305", {}, CPU_ALL, SOD_ALL, CHACHA20POLY1305, "config"),
    (6, "auto", {}, CPU_ALL, SOD_ALL, AES256GCM, "AES-NI"),
    (7, "aes256gcm", {"ENCLAVE_CIPHER": "chacha20poly1305"}, CPU_ALL, SOD_ALL,
     CHACHA20POLY1305, "ENCLAVE_CIPHER"),
    (8, "chacha20poly1305", {"ENCLAVE_CIPHER": "aes256gcm"}, CPU_ALL, SOD_ALL, AES256GCM,
     "ENCLAVE_CIPHER"),
    (9, "chacha20poly1305", {"ENCLAVE_CIPHER": "auto"}, CPU_ALL, SOD_ALL, CHACHA20POLY1305,
     "config"),
    (10, None, {"ENCLAVE_CIPHER": "AES-256-GCM"}, CPU_ALL, SOD_ALL, AES256GCM, "ENCLAVE_CIPHER"),
    (11, None, {"ENCLAVE_CIPHER": "chacha20poly1305"}, CPU_NO_AES, SOD_NO_PCLMUL,
     CHACHA20POLY1305, "forced"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{c[0]}" for c in CASES])
def test_selection_table(case: tuple) -> None:  # type: ignore[type-arg]
    _, configured, env, cpu, sod, expected, reason = case
    choice = select_cipher(configured, env=env, cpu_flags=cpu, sodium_flags=sod)
    assert choice.cipher == expected
    assert reason in choice.reason
    assert choice.cpu_flags == {k: cpu[k] for k in ("aes", "pclmulqdq", "ssse3")}
    assert choice.sodium_flags == {k: sod[k] for k in ("aesni", "pclmul", "ssse3")}


def test_disagreement_logs_both_witnesses(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="enclave.cipher"):
        select_cipher(env={}, cpu_flags=CPU_NO_AES, sodium_flags=SOD_ALL)
    assert "disagree" in caplog.text and "'aes': False" in caplog.text
    assert "'aesni': True" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="enclave.cipher"):
        select_cipher(env={}, cpu_flags=CPU_ALL, sodium_flags=SOD_ALL)
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("configured", "env", "match"),
    [
        ("rot13", {}, "config: unknown cipher 'rot13'"),
        (None, {"ENCLAVE_CIPHER": "des"}, "ENCLAVE_CIPHER: unknown cipher 'des'"),
        ("aes256gcm", {}, "lacks pclmul"),
        (None, {"ENCLAVE_CIPHER": "aes256gcm"}, "ENCLAVE_CIPHER=aes256gcm requests aes256gcm"),
    ],
)
def test_bad_or_impossible_requests(configured: str | None, env: dict[str, str],
                                    match: str) -> None:
    with pytest.raises(CipherError, match=match):
        select_cipher(configured, env=env, cpu_flags=CPU_ALL, sodium_flags=SOD_NO_PCLMUL)


def test_this_machine_with_real_libsodium_witness() -> None:
    # libsodium's real runtime flags; CPU flags injected so the test stays fast (py-cpuinfo ~1 s).
    sod = fp.sodium_runtime_flags()
    choice = select_cipher(env={}, cpu_flags=CPU_ALL, sodium_flags=sod)
    want = AES256GCM if (sod["aesni"] and sod["pclmul"] and sod["ssse3"]) else CHACHA20POLY1305
    assert choice.cipher == want
    # the chosen cipher and the other one both really work here
    for name in {choice.cipher, CHACHA20POLY1305}:
        assert fp.AeadKey(name, os.urandom(32)).cipher == name


def test_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_CIPHER", "chacha20poly1305")
    choice = select_cipher(cpu_flags=CPU_ALL, sodium_flags=SOD_ALL)
    assert choice.cipher == CHACHA20POLY1305


def test_kernel_cpu_flags_parse_and_absence(tmp_path: Path) -> None:
    from enclave.sysinfo import kernel_cpu_flags

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu aes pclmulqdq ssse3 avx\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    assert kernel_cpu_flags(str(x86)) == frozenset({"fpu", "aes", "pclmulqdq", "ssse3", "avx"})
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd aes pmull\n")
    assert kernel_cpu_flags(str(arm)) is None
    assert kernel_cpu_flags(str(tmp_path / "missing")) is None


def test_fast_flags_agree_with_py_cpuinfo_here() -> None:
    """The agent's start-up witness (the kernel's flags) and py-cpuinfo's (enclave info) agree
    on this machine's crypto flags."""
    from enclave.sysinfo import cpu_info, crypto_flags_fast

    assert crypto_flags_fast() == cpu_info().crypto_flags()
