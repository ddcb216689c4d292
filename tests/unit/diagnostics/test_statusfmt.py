"""`enclave status` text (enclave.agent.statusfmt) and `enclave ping` lines (agent/ping.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enclave.agent.localapi import LocalApiError
from enclave.agent.ping import MAX_TIMEOUT, format_pong, ping_args, ping_peer
from enclave.agent.statusfmt import human_age, human_bytes, human_rtt, status_text

NOW = 1_800_000_000.0
STATUS: dict[str, Any] = {
    "name": "AAAAA", "org": "acme", "overlay_ip": "100.64.0.7",
    "cert_expires": "2027-01-01T00:00:00+00:00",
    "platform": {"url": "https://198.18.0.11:8443", "state": "connected", "last_error": None},
    "mappings": {"udp": ["198.18.1.1:51820", None], "tcp": "198.18.1.1:51820"},
    "nat": "endpoint-independent", "peers": 2,
}
PEERS: list[dict[str, Any]] = [
    {"name": "BBBBB", "state": "connected", "overlay_ip": "100.64.0.9", "path": "direct-udp",
     "endpoint": "198.18.2.1:51820", "rtt_ms": 1.234, "connected_at": NOW - 300,
     "path_changed_at": NOW - 120,
     "last_handshake_at": NOW - 35, "rx_bytes": 1536, "tx_bytes": 5 * 1024 * 1024},
    {"name": "CCCCC", "state": "connecting", "path": None, "endpoint": "198.18.3.1:51820",
     "rtt_ms": None, "connected_at": None, "rx_bytes": 0, "tx_bytes": 148},
]


@pytest.mark.parametrize(("n", "text"), [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (5 * 1024 ** 2, "5.0 MiB"), (3 * 1024 ** 4, "3.0 TiB"), (2 * 1024 ** 6, "2048.0 PiB"),
])
def test_human_bytes(n: int | None, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(("age", "text"), [
    (None, "-"), (0, "0s ago"), (59.9, "59s ago"), (60, "1m ago"), (3599, "59m ago"),
    (7200, "2h ago"), (3 * 86400 + 5, "3d ago"), (-5, "0s ago"),
])
def test_human_age(age: float | None, text: str) -> None:
    assert human_age(None if age is None else NOW - age, NOW) == text


def test_human_rtt() -> None:
    assert [human_rtt(x) for x in (None, 0.4567, 12.34, 250.4)] == [
        "-", "0.46ms", "12.3ms", "250ms"]


def test_status_text_self_lines_then_one_line_per_peer() -> None:
    lines = status_text(STATUS, PEERS, NOW).splitlines()
    assert lines[0] == "name         AAAAA (acme)"
    assert "mappings     udp 198.18.1.1:51820, -; tcp 198.18.1.1:51820" in lines
    i = lines.index("")
    header, b, c = lines[i + 1:]
    assert header.split() == ["PEER", "OVERLAY", "IP", "PATH", "PATH", "SINCE", "ENDPOINT", "RTT",
                              "HANDSHAKE", "RX", "TX"]
    # PATH SINCE: when the session last moved to another path (path_changed_at)
    assert b.split() == ["BBBBB", "100.64.0.9", "direct-udp", "2m", "ago", "198.18.2.1:51820",
                         "1.23ms", "35s", "ago", "1.5", "KiB", "5.0", "MiB"]
    # a peer without a session shows its state and no path age / endpoint / rtt / handshake
    assert c.split() == ["CCCCC", "-", "connecting", "-", "-", "-", "-", "0", "B", "148", "B"]
    # columns line up: every row starts its endpoint at the same offset
    assert header.index("ENDPOINT") == b.index("198.18.2.1")


def test_status_text_without_peers_has_no_table() -> None:
    text = status_text(dict(STATUS, peers=0), [], NOW)
    assert "PEER" not in text and text.endswith("peers        0")


def test_format_pong() -> None:
    ok = {"peer": "BBBBB", "overlay_ip": "100.64.0.9", "ok": True, "path": "relay-udp",
          "endpoint": "198.18.0.11:8445", "rtt_ms": 3.14159}
    assert format_pong(ok) == ("pong from BBBBB (100.64.0.9) via relay-udp 198.18.0.11:8445 "
                               "in 3.14ms")
    bad = {"peer": "BBBBB", "overlay_ip": None, "ok": False, "error": "no reply within 2s"}
    assert format_pong(bad) == "no pong from BBBBB: no reply within 2s"


@pytest.mark.parametrize("args", [{}, {"peer": ""}, {"peer": 5}, {"peer": "é"},
                                  {"peer": "B" * 65}, {"peer": "B", "timeout": "x"},
                                  {"peer": "B", "timeout": True},
                                  {"peer": "B", "timeout": float("nan")}])
def test_ping_args_refused(args: dict[str, Any]) -> None:
    with pytest.raises(LocalApiError):
        ping_args(args)


def test_ping_args_normalised() -> None:
    assert ping_args({"peer": "bbbbb"}) == ("BBBBB", 2.0)
    assert ping_args({"peer": "B", "timeout": 1e9}) == ("B", MAX_TIMEOUT)
    assert ping_args({"peer": "B", "timeout": -1})[1] > 0


class _Cm:
    def __init__(self, state: str, answer: dict[str, Any] | None) -> None:
        self.state, self.answer, self.pinged = state, answer, 0

    def peers(self) -> list[dict[str, Any]]:
        return [{"name": "BBBBB", "state": self.state, "overlay_ip": "100.64.0.9"}]

    async def ping(self, peer: str, timeout: float) -> dict[str, Any] | None:
        self.pinged += 1
        return self.answer


def test_ping_peer_outcomes() -> None:
    run = asyncio.run
    with pytest.raises(LocalApiError, match="not a peer"):
        run(ping_peer(_Cm("connected", None), {"BBBBB"}, {"peer": "zzzzz"}))
    with pytest.raises(LocalApiError, match="without a data plane"):
        run(ping_peer(None, {"BBBBB"}, {"peer": "bbbbb"}))
    cm = _Cm("connecting", None)
    got = run(ping_peer(cm, {"BBBBB"}, {"peer": "bbbbb"}))
    assert not got["ok"] and got["error"] == "no session (connecting)" and cm.pinged == 0
    got = run(ping_peer(_Cm("connected", None), {"BBBBB"}, {"peer": "BBBBB", "timeout": 1}))
    assert not got["ok"] and got["error"] == "no reply within 1s"
    answer = {"path": "direct-udp", "endpoint": "198.18.2.1:51820", "rtt_ms": 0.5}
    got = run(ping_peer(_Cm("connected", answer), {"BBBBB"}, {"peer": "BBBBB"}))
    assert got["ok"] and got["path"] == "direct-udp" and got["overlay_ip"] == "100.64.0.9"
