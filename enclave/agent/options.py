"""`enclave up`'s options: command-line flag > ENCLAVE_<KEY> environment variable >
<state>/config.toml > default (examples/agent.config.toml shows every key of the file).

    config.toml --read_config_file()--> {key: TOML value}   unknown key, wrong TOML type, a
    ENCLAVE_PORT, ... (ENV_KEYS)        {key: text}         value out of range: ConfigError
    flags (non-None)                    {key: value}        naming the file or variable, the key,
                  \\______ merged, later wins ______/        what it takes (and, for a key it
                                   |                         does not know, the closest known one)
                       AgentOptions.resolve() -> AgentOptions

Every value is checked for its kind and range here, wherever it came from, so `enclave up`
(and `enclave up --check-config`) stops at start with one line, never a traceback later.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.agent.errors import AgentError
from enclave.agent.state import StateDir
from enclave.cipher import CipherError, cipher_name
from enclave.configfile import read_config_table, unknown_key_message
from enclave.dataplane.mtu import MAX_TAP_MTU, MIN_IPV4_MTU
from enclave.promhttp import parse_listen
from enclave.sysinfo import MAX_THREADS, default_threads

DEFAULT_PORT = 51820
DEFAULT_INTERFACE = "enclave0"
CONFIG_FILE = "config.toml"
IFNAMSIZ = 16  # linux/if.h: an interface name is at most 15 bytes
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

# every key config.toml may hold and the TOML type it takes
KEYS: dict[str, type] = {
    "port": int, "interface": str, "mtu": int, "cipher": str, "offload": bool, "aqm": bool,
    "threads": int, "tap": bool, "dns": bool, "portmap": bool, "metrics": str,
}
# the keys an ENCLAVE_<KEY> environment variable sets too (`tap` only by file and flag)
ENV_KEYS: tuple[str, ...] = ("port", "interface", "mtu", "cipher", "offload", "aqm", "threads",
                             "dns", "metrics", "portmap")


class ConfigError(AgentError):
    """An option the agent cannot take: the message names where it came from and what fits."""


def read_config_file(path: Path) -> dict[str, bool | int | str]:
    """config.toml's keys and values, each a key of KEYS with a value of its TOML type ({}
    when there is no file); ConfigError for anything else."""
    return read_config_table(path, KEYS, ConfigError)


def _bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS or text in FALSE_WORDS:
        return text in TRUE_WORDS
    raise ConfigError(f"{where} must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, "
                      f"got {value!r}")


def _int(value: object, where: str, low: int, high: int) -> int:
    try:
        got = value if isinstance(value, int) and not isinstance(value, bool) else int(
            str(value).strip())
    except ValueError:
        raise ConfigError(f"{where} must be an integer {low}..{high}, got {value!r}") from None
    if not low <= got <= high:
        raise ConfigError(f"{where} must be {low}..{high}, got {got}")
    return got


def _interface(value: object, where: str) -> str:
    name = str(value)
    if not 0 < len(name.encode()) < IFNAMSIZ or any(c in name for c in "/: \t\n") or name in (
            ".", ".."):
        raise ConfigError(f"{where} must be an interface name of 1..{IFNAMSIZ - 1} bytes "
                          f"without '/', ':' or spaces, got {value!r}")
    return name


@dataclass
class AgentOptions:
    port: int = DEFAULT_PORT
    interface: str = DEFAULT_INTERFACE
    mtu: int | None = None
    cipher: str | None = None
    offload: bool = True
    aqm: bool = True  # CoDel + ECN on the data plane's queues (enclave/_fp_aqm.pxi)
    threads: int = dataclasses.field(default_factory=default_threads)  # data-plane workers
    tap: bool = True
    dns: bool = True  # NAME.enclave on the overlay IP, port 53 (enclave.agent.dns_server)
    portmap: bool = True  # ask the site's router to map the data port (enclave.agent.portmap)
    metrics: str | None = None  # HOST:PORT for Prometheus /metrics (enclave.agent.metrics)

    @classmethod
    def resolve(cls, state: StateDir, cli: Mapping[str, Any],
                environ: Mapping[str, str] | None = None) -> AgentOptions:
        """CLI flags (non-None values) > ENCLAVE_* environment > config.toml > defaults;
        ConfigError names the file or variable and the key of the first value that does not
        fit."""
        env = os.environ if environ is None else environ
        path = state.root / CONFIG_FILE
        merged: dict[str, object] = {}
        where: dict[str, str] = {}
        for key, value in read_config_file(path).items():
            merged[key], where[key] = value, f"config file {path}: {key}"
        for key in ENV_KEYS:
            name = f"ENCLAVE_{key.upper()}"
            if env.get(name):
                merged[key], where[key] = env[name], f"environment variable {name} ({key})"
        for key, value in cli.items():
            if value is not None:
                merged[key], where[key] = value, f"option --{key}"
        return cls._checked(merged, where)

    @classmethod
    def _checked(cls, merged: Mapping[str, object], where: Mapping[str, str]) -> AgentOptions:
        opts = cls()
        for key, value in merged.items():
            w = where.get(key, key)
            if key == "port":
                opts.port = _int(value, w, 1, 65535)
            elif key == "interface":
                opts.interface = _interface(value, w)
            elif key == "mtu":
                opts.mtu = _int(value, w, MIN_IPV4_MTU, MAX_TAP_MTU)
            elif key == "cipher":
                text = str(value).strip()
                if text and text.lower() != "auto":
                    try:
                        cipher_name(text, w)  # enclave.cipher picks it at start
                    except CipherError as exc:
                        raise ConfigError(f"{exc} (or auto)") from None
                opts.cipher = text or None
            elif key == "threads":
                opts.threads = _int(value, w, 1, MAX_THREADS)
            elif key == "metrics":
                opts.metrics = str(value) or None
                if opts.metrics is not None:
                    try:
                        parse_listen(opts.metrics)
                    except ValueError as exc:
                        raise ConfigError(f"{w}: {exc}") from None
            elif key in ("offload", "aqm", "tap", "dns", "portmap"):
                setattr(opts, key, _bool(value, w))
            else:  # a flag the caller added without a check here
                raise ConfigError(unknown_key_message("agent option", key, list(KEYS)))
        return opts

    def describe(self) -> dict[str, object]:
        """The options in effect (`enclave up --check-config` prints them)."""
        return dataclasses.asdict(self)
