"""Relay findings of the 1eeaf5c audit: revoked systems refused, unguessable channels, the
ticket key encrypted at rest (and a clear key from an older version migrated)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from enclave.agent.relay_client import RelayClient
from enclave.cert.errors import KeyStoreError
from enclave.cert.keystore import PLATFORM_PASSPHRASE_ENV, KeyStore, SecretStore
from enclave.platform.relay import KEY_SIZE, load_or_create_key
from tests.support.relay import RELAY, X_ADDR, Y_ADDR, Pair, ticket


def test_revoked_system_is_cut_off_and_refused() -> None:
    p = Pair()
    p.register_both()
    p.send(p.x, "Y", b"before", X_ADDR)
    assert [m for _, m in p.got["Y"]] == [b"before"]
    # the hub says YYYYY is no longer allowed (revoked): both directions stop at once
    p.core.allow_only({"XXXXX"})
    assert len(p.core) == 0  # Y's registration, and X's (it names Y), are dropped
    p.send(p.x, "Y", b"after", X_ADDR)
    p.send(p.y, "X", b"after", Y_ADDR)
    assert [m for _, m in p.got["Y"]] == [b"before"] and p.got["X"] == []
    # Y cannot register again with its still unexpired ticket: silence, not even a challenge
    replies = p.core.receive(p.y.add("X", RELAY, ticket("YYYYY", "XXXXX"), p.now)[0][0],
                             Y_ADDR, p.now)
    assert replies == []


def test_allow_only_drops_registrations_naming_a_refused_peer() -> None:
    p = Pair()
    p.register_both()
    p.core.allow_only({"XXXXX"})
    assert len(p.core) == 0  # X's registration names Y as its destination: dropped too
    p.core.allow_only({"XXXXX", "YYYYY"})  # reinstated: registering works again
    p.register_both()
    p.send(p.x, "Y", b"again", X_ADDR)
    assert [m for _, m in p.got["Y"]] == [b"again"]


def test_channels_are_not_counted_from_one() -> None:
    client = RelayClient()
    for i in range(8):
        client.add(f"P{i}", RELAY, ticket("XXXXX", f"P{i}"), 0.0)
    channels = [client.path_for(f"P{i}").port for i in range(8)]  # type: ignore[union-attr]
    assert len(set(channels)) == 8 and all(1 <= c <= 0xFFFF for c in channels)
    assert channels != list(range(1, 9))
    # two agents do not pick the same sequence either
    other = RelayClient()
    other.add("P0", RELAY, ticket("XXXXX", "P0"), 0.0)
    others = [other.path_for("P0").port]  # type: ignore[union-attr]
    for i in range(1, 8):
        other.add(f"P{i}", RELAY, ticket("XXXXX", f"P{i}"), 0.0)
        others.append(other.path_for(f"P{i}").port)  # type: ignore[union-attr]
    assert others != channels


def _store(tmp: Path) -> SecretStore:
    return SecretStore(tmp / "relay.key", KeyStore(tmp / "ca.key", tmp / "keys.kek",
                                                   PLATFORM_PASSPHRASE_ENV))


def test_relay_key_is_encrypted_at_rest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = load_or_create_key(store)
    assert len(key) == KEY_SIZE
    data = store.path.read_bytes()
    assert key not in data and key.hex().encode() not in data
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert load_or_create_key(store) == key  # the same key on the next start
    # a wrong passphrase cannot read it
    with pytest.raises(KeyStoreError):
        store.load(environ={PLATFORM_PASSPHRASE_ENV: "not the passphrase"})


def test_clear_relay_key_is_migrated(tmp_path: Path) -> None:
    store = _store(tmp_path)
    old = bytes(range(KEY_SIZE))
    store.path.write_bytes(old)  # what 1eeaf5c wrote: 32 raw bytes, 0600
    os.chmod(store.path, 0o600)
    assert load_or_create_key(store) == old  # tickets minted before keep working
    data = store.path.read_bytes()
    assert old not in data and len(data) != KEY_SIZE
    assert load_or_create_key(store) == old


def test_corrupt_relay_key_is_an_error(tmp_path: Path) -> None:
    store = _store(tmp_path)
    load_or_create_key(store)
    store.path.write_bytes(store.path.read_bytes()[:-10] + b"AAAAAAAAA\n")
    with pytest.raises(KeyStoreError):
        load_or_create_key(store)
