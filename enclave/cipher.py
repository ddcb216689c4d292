"""Data-plane cipher selection at start-up.

Rule: AES256-GCM when the CPU has AES-NI, PCLMULQDQ and SSSE3, else ChaCha20-Poly1305-IETF.
Two witnesses are consulted: the CPU's flags (py-cpuinfo spelling; by default py-cpuinfo itself,
while the agent passes the kernel's /proc/cpuinfo flags, sysinfo.crypto_flags_fast, because
py-cpuinfo spawns a process) and libsodium's own runtime detection (sodium_runtime_has_*). If they
disagree, both are logged and libsodium wins, since libsodium is what will run the cipher.
An explicit choice overrides the rule, in this order:

    ENCLAVE_CIPHER environment variable  >  configuration  >  automatic

Forcing aes256gcm on a CPU where libsodium cannot run it is an error, not a silent downgrade.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from enclave.sysinfo import cpu_info

AES256GCM = "aes256gcm"
CHACHA20POLY1305 = "chacha20poly1305"
CIPHER_NAMES: tuple[str, ...] = (AES256GCM, CHACHA20POLY1305)
ENV_VAR = "ENCLAVE_CIPHER"

# What AES256-GCM needs, as (py-cpuinfo flag, libsodium runtime flag).
_AES_REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("aes", "aesni"),
    ("pclmulqdq", "pclmul"),
    ("ssse3", "ssse3"),
)

log = logging.getLogger(__name__)


class CipherError(ValueError):
    """An unknown or unusable cipher was requested."""


@dataclass(frozen=True)
class CipherChoice:
    cipher: str
    reason: str
    cpu_flags: dict[str, bool]
    sodium_flags: dict[str, bool]


def _normalise(value: str, source: str) -> str:
    name = value.strip().lower().replace("-", "").replace("_", "")
    aliases = {"aes256gcm": AES256GCM, "aesgcm": AES256GCM, "aes": AES256GCM,
               "chacha20poly1305": CHACHA20POLY1305, "chacha20poly1305ietf": CHACHA20POLY1305,
               "chacha": CHACHA20POLY1305, "chacha20": CHACHA20POLY1305}
    if name not in aliases:
        raise CipherError(
            f"{source}: unknown cipher {value!r}; expected one of {', '.join(CIPHER_NAMES)}"
        )
    return aliases[name]


def select_cipher(
    configured: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cpu_flags: Mapping[str, bool] | None = None,
    sodium_flags: Mapping[str, bool] | None = None,
) -> CipherChoice:
    """Pick the data-plane cipher.

    configured: the config file's value (None or "auto" = automatic).
    env: environment to read ENCLAVE_CIPHER from (default os.environ).
    cpu_flags / sodium_flags: injected witnesses (default: py-cpuinfo, cached, and the compiled
    fast path's libsodium). cpu_flags keys use py-cpuinfo names (aes, pclmulqdq, ssse3),
    sodium_flags keys libsodium's (aesni, pclmul, ssse3).
    """
    environ = os.environ if env is None else env
    if cpu_flags is None:
        cpu_flags = cpu_info().crypto_flags()
    if sodium_flags is None:
        # imported here: keeps `enclave` start-up fast (a build without _fastpath fails here)
        from enclave import _fastpath

        sodium_flags = _fastpath.sodium_runtime_flags()
    cpu = {c: bool(cpu_flags.get(c, False)) for c, _ in _AES_REQUIREMENTS}
    sod = {s: bool(sodium_flags.get(s, False)) for _, s in _AES_REQUIREMENTS}
    cpu_ok = all(cpu.values())
    sodium_ok = all(sod.values())

    if cpu_ok != sodium_ok:
        log.warning(
            "CPU feature witnesses disagree; trusting libsodium: py-cpuinfo %s, libsodium %s",
            cpu, sod,
        )

    forced: str | None = None
    source = ""
    env_value = environ.get(ENV_VAR, "").strip()
    if env_value and env_value.lower() != "auto":
        forced, source = _normalise(env_value, ENV_VAR), f"{ENV_VAR}={env_value}"
    elif configured and configured.strip().lower() != "auto":
        forced, source = _normalise(configured, "config"), f"config cipher={configured}"

    if forced == AES256GCM and not sodium_ok:
        missing = [s for s, ok in sod.items() if not ok]
        raise CipherError(
            f"{source} requests aes256gcm, but libsodium reports this CPU lacks "
            f"{', '.join(missing)}; use {CHACHA20POLY1305}"
        )
    if forced is not None:
        return CipherChoice(forced, f"forced by {source}", dict(cpu), dict(sod))

    if sodium_ok:
        reason = "CPU has AES-NI, PCLMULQDQ and SSSE3"
        if not cpu_ok:
            reason += " (per libsodium; py-cpuinfo disagrees)"
        return CipherChoice(AES256GCM, reason, dict(cpu), dict(sod))
    missing = [s for s, ok in sod.items() if not ok]
    reason = f"CPU lacks {', '.join(missing)} (per libsodium)"
    if cpu_ok:
        reason += "; py-cpuinfo disagrees"
    return CipherChoice(CHACHA20POLY1305, reason, dict(cpu), dict(sod))
