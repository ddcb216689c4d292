"""Data-plane cipher selection at start-up.

Rule (the default, `auto`): AES256-GCM when the CPU has AES-NI, PCLMULQDQ and SSSE3, else
ChaCha20-Poly1305-IETF.
Two witnesses are consulted: the CPU's flags (py-cpuinfo spelling; by default py-cpuinfo itself,
while the agent passes the kernel's /proc/cpuinfo flags, sysinfo.crypto_flags_fast, because
py-cpuinfo spawns a process) and libsodium's own runtime detection (sodium_runtime_has_*). If they
disagree, both are logged and libsodium wins, since libsodium is what will run the cipher.
An explicit choice overrides the rule, in this order:

    ENCLAVE_CIPHER environment variable  >  configuration  >  automatic

Forcing aes256gcm on a CPU where libsodium cannot run it is an error, not a silent downgrade.

AEGIS-256 is opt-in and a preference, not a force: `aegis256` means "use AEGIS-256 with a peer
that allows it too, else the rule above" (the `fallback`). This side offers it in the handshake
(wire.CAP_AEGIS256, offer_caps) only when libsodium runs it on AES-NI (with AVX, which
libsodium's AES-NI code for it needs); without them `aegis256` logs a warning and behaves as
`auto`. The pair's cipher is then negotiated in the handshake (enclave.proto.aead): AEGIS-256
only when both sides offer it. Its tag is 32 bytes, so the TAP MTU of a side that offers it is
16 bytes smaller (max_tag_size, enclave.dataplane.mtu).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from enclave.proto.wire import (
    AEAD_TAG_SIZE,
    AEGIS256_TAG_SIZE,
    CAP_AEGIS256,
    CAP_AES256GCM_HW,
)
from enclave.sysinfo import cpu_info

AES256GCM = "aes256gcm"
CHACHA20POLY1305 = "chacha20poly1305"
AEGIS256 = "aegis256"
CIPHER_NAMES: tuple[str, ...] = (AES256GCM, CHACHA20POLY1305, AEGIS256)
ENV_VAR = "ENCLAVE_CIPHER"

# What AES256-GCM needs, as (py-cpuinfo flag, libsodium runtime flag).
_AES_REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("aes", "aesni"),
    ("pclmulqdq", "pclmul"),
    ("ssse3", "ssse3"),
)
# What AEGIS-256 needs in libsodium's runtime flags to run on AES-NI.
AEGIS_SODIUM_FLAGS: tuple[str, ...] = ("aesni", "avx")

log = logging.getLogger(__name__)


class CipherError(ValueError):
    """An unknown or unusable cipher was requested."""


@dataclass(frozen=True)
class CipherChoice:
    """cipher: what this side prefers (aegis256 only when it may offer it); fallback: what the
    default rule gives, used with a peer that does not allow aegis256 (= cipher otherwise)."""

    cipher: str
    reason: str
    cpu_flags: dict[str, bool]
    sodium_flags: dict[str, bool]
    fallback: str = ""

    def __post_init__(self) -> None:
        if not self.fallback:
            object.__setattr__(self, "fallback", self.cipher)

    @property
    def aegis_allowed(self) -> bool:
        """This side offers AEGIS-256 in the handshake."""
        return self.cipher == AEGIS256

    @property
    def max_tag_size(self) -> int:
        """The largest AEAD tag a session of this side may use (the TAP MTU accounts for it)."""
        return AEGIS256_TAG_SIZE if self.aegis_allowed else AEAD_TAG_SIZE


def offer_caps(choice: CipherChoice) -> int:
    """The handshake's caps byte (this side's cipher offer) for a choice: AES256-GCM when it
    is the default rule's cipher here, AEGIS-256 when preferred (ChaCha20 is always offered)."""
    caps = CAP_AES256GCM_HW if choice.fallback == AES256GCM else 0
    if choice.aegis_allowed:
        caps |= CAP_AEGIS256
    return caps


def aegis_runs_here(sodium_flags: Mapping[str, bool]) -> bool:
    """libsodium runs AEGIS-256 on AES-NI here (its aesni and avx runtime flags)."""
    return all(bool(sodium_flags.get(f, False)) for f in AEGIS_SODIUM_FLAGS)


def _normalise(value: str, source: str) -> str:
    name = value.strip().lower().replace("-", "").replace("_", "")
    aliases = {"aes256gcm": AES256GCM, "aesgcm": AES256GCM, "aes": AES256GCM,
               "chacha20poly1305": CHACHA20POLY1305, "chacha20poly1305ietf": CHACHA20POLY1305,
               "chacha": CHACHA20POLY1305, "chacha20": CHACHA20POLY1305,
               "aegis256": AEGIS256, "aegis": AEGIS256}
    if name not in aliases:
        raise CipherError(
            f"{source}: unknown cipher {value!r}; expected one of {', '.join(CIPHER_NAMES)}"
        )
    return aliases[name]


def cipher_name(value: str, source: str) -> str:
    """The canonical name of `value` (a name or alias: "aes", "chacha20-poly1305", ...);
    CipherError naming `source` when it is none.  "auto" is not a cipher name."""
    return _normalise(value, source)


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
    sodium_flags keys libsodium's (aesni, pclmul, ssse3; avx for aegis256).
    aegis256 gives CipherChoice("aegis256", fallback=the automatic rule's cipher) when
    libsodium runs it on AES-NI here, else the automatic rule (with a warning).
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
    if forced is not None and forced != AEGIS256:
        return CipherChoice(forced, f"forced by {source}", dict(cpu), dict(sod))

    auto = _automatic(cpu, sod, cpu_ok=cpu_ok, sodium_ok=sodium_ok)
    if forced == AEGIS256:
        if aegis_runs_here(sodium_flags):
            return CipherChoice(
                AEGIS256,
                f"preferred by {source}: used with peers that allow it too, else "
                f"{auto.cipher} ({auto.reason})",
                dict(cpu), dict(sod), fallback=auto.cipher,
            )
        missing = [f for f in AEGIS_SODIUM_FLAGS if not sodium_flags.get(f, False)]
        log.warning("%s: this CPU lacks %s (per libsodium), so aegis256 is not offered; "
                    "using the automatic rule", source, ", ".join(missing))
        return CipherChoice(
            auto.cipher,
            f"{source} asked for aegis256, but this CPU lacks {', '.join(missing)}: "
            f"{auto.reason}",
            dict(cpu), dict(sod),
        )
    return auto


def _automatic(
    cpu: dict[str, bool], sod: dict[str, bool], *, cpu_ok: bool, sodium_ok: bool
) -> CipherChoice:
    """The default rule: AES256-GCM when libsodium has its hardware, else ChaCha20."""
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
