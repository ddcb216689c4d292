"""enclave/bench/pathmove.py's pure parts: the relay set-up figure from a peers entry, the
cut's nft script, and how a path move is recognised in a sequence of peers entries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from enclave.bench import pathmove

pytestmark = pytest.mark.unit


def entries(*seq: dict[str, Any] | None) -> pathmove.PeerOf:
    it: Iterator[dict[str, Any] | None] = iter(seq)
    last: list[dict[str, Any] | None] = [None]

    def peer_of() -> dict[str, Any] | None:
        last[0] = next(it, last[0])
        return last[0]

    return peer_of


def test_relay_setup_is_introduction_to_first_frame() -> None:
    f = pathmove.relay_setup({"path": "relay-udp", "introduced_at": 100.0,
                              "connected_at": 100.25}, "aes256gcm")
    assert f.key == "setup_relay_ms" and f.cipher == "aes256gcm"
    assert f.overlay == pytest.approx(250.0) and "relay-udp" in f.note
    assert pathmove.relay_setup({"path": "relay-tls"}, None).overlay is None  # no stamps


def test_relayed_names_both_relays_only() -> None:
    assert pathmove.relayed("relay-udp") and pathmove.relayed("relay-tls")
    assert not pathmove.relayed("direct-udp") and not pathmove.relayed(None)


def test_cut_rules_drop_both_directions_in_their_own_table() -> None:
    text = pathmove.cut_rules("198.18.2.1")
    assert f"table ip {pathmove.CUT_TABLE}" in text
    assert "ip daddr 198.18.2.1 drop" in text and "ip saddr 198.18.2.1 drop" in text


def test_wait_moved_needs_the_path_and_a_move_after_the_cut() -> None:
    up = {"state": "connected"}
    peer_of = entries({**up, "path": "relay-udp", "path_changed_at": 5.0},  # an older move
                      None,
                      {**up, "path": "relay-udp", "path_changed_at": 12.0})
    got = pathmove.wait_moved(peer_of, lambda p: p == "relay-udp", 10.0, timeout=5)
    assert got["path_changed_at"] == 12.0


def test_wait_moved_fails_when_the_session_goes_down() -> None:
    peer_of = entries({"state": "connecting", "path": None})
    with pytest.raises(RuntimeError, match="went down"):
        pathmove.wait_moved(peer_of, lambda p: p == "relay-udp", 0.0, timeout=5)


def test_settle_keeps_the_first_entry_of_a_direct_pair() -> None:
    first = {"state": "connected", "path": "direct-udp"}
    assert pathmove.settle(entries(), first) is first


def test_settle_follows_a_relayed_start_to_the_direct_path() -> None:
    first = {"state": "connected", "path": "relay-udp"}
    got = pathmove.settle(entries({"state": "connected", "path": "relay-udp"},
                                  {"state": "connected", "path": "direct-udp"}), first)
    assert got["path"] == "direct-udp"
