"""The platform's optional DATA/config.toml (see examples/platform.config.toml).

Precedence, as for the agent: command-line flag > environment variable > config.toml > default.
Each setting is read where it is used, from its environment variable (relay.py, hub.py,
discovery.py); `enclave platform serve` calls apply_config() first, which sets the variable of
every key in config.toml whose variable is not set already. Unknown keys and values of the wrong
type are refused with the file and key named, and the closest known key for an unknown one
(enclave/configfile.py reads the file, as for the agent). The listen address stays a flag
(--listen).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from enclave.configfile import read_config_table
from enclave.platform.discovery import ALT_ADDRESS_ENV, PORTS_ENV
from enclave.platform.hub import EPHEMERAL_GRACE, EPHEMERAL_GRACE_ENV
from enclave.platform.metrics import METRICS_ENV
from enclave.platform.relay import DATA_RATE_ENV, DATA_RATE_PACKETS, DEFAULT_PORT, TICKET_LIFETIME
from enclave.platform.relay_ws import RELAY_TLS_ENV

CONFIG_FILE = "config.toml"


class ConfigError(ValueError):
    """config.toml cannot be read, or names a key or value the platform does not know."""


@dataclass(frozen=True)
class Option:
    env: str
    default: str | int
    kind: type  # str or int: the TOML type the key takes


OPTIONS: dict[str, Option] = {
    "relay": Option("ENCLAVE_PLATFORM_RELAY", f":{DEFAULT_PORT}", str),
    "relay_public": Option("ENCLAVE_PLATFORM_RELAY_PUBLIC", "", str),
    "relay_tls": Option(RELAY_TLS_ENV, "", str),
    "relay_ticket_lifetime": Option("ENCLAVE_PLATFORM_RELAY_TICKET_LIFETIME", TICKET_LIFETIME,
                                    int),
    "relay_data_rate": Option(DATA_RATE_ENV, DATA_RATE_PACKETS, int),
    "discovery_ports": Option(PORTS_ENV, "", str),
    "discovery_alt_address": Option(ALT_ADDRESS_ENV, "", str),
    "ephemeral_grace": Option(EPHEMERAL_GRACE_ENV, EPHEMERAL_GRACE, int),
    "metrics": Option(METRICS_ENV, "", str),
}


def load_config(root: Path) -> dict[str, str]:
    """ROOT/config.toml as {environment variable: value}; {} when there is no file."""
    table = read_config_table(root / CONFIG_FILE, {k: o.kind for k, o in OPTIONS.items()},
                              ConfigError)
    return {OPTIONS[key].env: str(value) for key, value in table.items()}


def apply_config(root: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set the variable of each config.toml key that the environment does not set; returns
    the variables set."""
    env = os.environ if environ is None else environ
    applied = []
    for name, value in load_config(root).items():
        if not env.get(name):
            env[name] = value
            applied.append(name)
    return applied
