"""A config.toml of flat keys, read the one way the agent and the platform both read theirs.

read_config_table() takes the file's path, the TOML type each key may hold, and the error class
of its caller; it returns {key: value} ({} when there is no file) and raises that error, naming
the file and the key, for a file too large or not TOML, a key it does not know (with the closest
known key, if one is close) and a value of the wrong type.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path

MAX_CONFIG_BYTES = 65536
TYPE_WORDS: dict[type, str] = {int: "an integer", str: "a string", bool: "true or false"}


def unknown_key_message(where: str, key: str, known: list[str]) -> str:
    """"<where>: unknown key 'prot' (did you mean 'port'?; known keys: ...)"."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{where}: unknown key {key!r} ({hint}known keys: {', '.join(known)})"


def read_config_table(path: Path, kinds: Mapping[str, type],
                      error: type[Exception]) -> dict[str, bool | int | str]:
    """PATH's keys and values, each a key of KINDS with a value of its TOML type ({} when there
    is no file); `error(message)` for anything else."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise error(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise error(f"config file {path} is invalid: {exc}") from None
    out: dict[str, bool | int | str] = {}
    for key, value in data.items():
        kind = kinds.get(key)
        if kind is None:
            raise error(unknown_key_message(f"config file {path}", key, list(kinds)))
        # bool is an int to Python: `port = true` is not a port
        if not isinstance(value, bool | int | str) or not isinstance(value, kind) or (
                kind is int and isinstance(value, bool)):
            raise error(f"config file {path}: {key} must be {TYPE_WORDS[kind]}, got {value!r}")
        out[key] = value
    return out
