"""The bench's measuring tools: pure parts, and in-process senders/receivers on loopback sockets.

The tools that drive other processes (udp_rate, iperf3, procstat):
tests/netlab/bench/test_bench_tool_processes.py."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from enclave.bench import crypto, udpgen
from enclave.bench.peer import PeerBenchError, find_peer


def _pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    return rx, tx


def test_percentile_nearest_rank() -> None:
    assert udpgen.percentile([], 50) is None
    assert udpgen.percentile([5.0], 99) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert udpgen.percentile(values, 50) == 50.0
    assert udpgen.percentile(values, 99) == 99.0
    assert udpgen.percentile(list(reversed(values)), 100) == 100.0


def test_udpgen_counts_real_packets() -> None:
    rx, tx = _pair()
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(udpgen.recv(rx, run_id=42, idle=1.0,
                                                               wait=5.0)))
    t.start()
    # noise the receiver must ignore: another run, a runt, a ping
    tx.send(udpgen.HEADER.pack(udpgen.MAGIC_DATA, 41, 0) + bytes(48))
    tx.send(b"xx")
    tx.send(udpgen.HEADER.pack(udpgen.MAGIC_PING, 42, 0))
    sent = udpgen.send(tx, size=100, duration=0.3, run_id=42, rate_pps=5000)
    t.join(10)
    rx.close()
    tx.close()
    assert not t.is_alive()
    assert 1000 <= sent["sent"] <= 1700 and sent["bytes"] == sent["sent"] * 100
    assert out["sent_reported"] == sent["sent"]
    assert out["received"] == sent["sent"]  # paced, loopback: nothing lost
    assert out["bytes"] == out["received"] * 100
    assert out["pps"] > 0


def test_udpgen_recv_gives_up_when_nothing_arrives() -> None:
    rx, tx = _pair()
    t0 = time.monotonic()
    out = udpgen.recv(rx, run_id=1, idle=0.1, wait=0.3)
    assert time.monotonic() - t0 < 2
    assert out["received"] == 0 and out["sent_reported"] is None
    rx.close()
    tx.close()


def test_udpgen_rejects_bad_sizes() -> None:
    rx, tx = _pair()
    with pytest.raises(ValueError):
        udpgen.send(tx, size=8, duration=0.1, run_id=1)
    with pytest.raises(ValueError):
        udpgen.ping(tx, count=1, interval=0, size=70000)
    rx.close()
    tx.close()


def test_ping_echo_round_trip_and_loss() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    t = threading.Thread(target=udpgen.echo, args=(srv,), kwargs={"lifetime": 1.5}, daemon=True)
    t.start()
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.connect(srv.getsockname())
    res = udpgen.ping(cli, count=20, interval=0.001, timeout=1.0)
    assert res["sent"] == 20 and res["received"] == 20 and res["lost"] == 0
    assert 0 < res["min_us"] <= res["p50_us"] <= res["p99_us"] <= res["max_us"] < 1e6
    cli.close()
    # nobody listening: every ping is lost, and it returns promptly
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.connect(("127.0.0.1", port))
    t0 = time.monotonic()
    res = udpgen.ping(cli, count=3, interval=0.0, timeout=0.2)
    assert res["received"] == 0 and res["lost"] == 3 and res["p50_us"] is None
    assert time.monotonic() - t0 < 3
    cli.close()
    t.join(5)
    srv.close()


def test_crypto_rows_are_measured() -> None:
    rows = crypto.run(None, sizes=(64, 1400), seconds=0.01)
    ciphers = crypto.available_ciphers()
    assert len(rows) == len(ciphers) * 2 * 2
    for row in rows:
        assert row["frames"] >= crypto.BATCH and row["gbit_s"] > 0 and row["ns_per_frame"] > 0
        assert row["gbit_s"] == pytest.approx(row["frames"] * row["size"] * 8
                                              / row["seconds"] / 1e9)
    with pytest.raises(ValueError, match="not available"):
        crypto.run(["rot13"])
    with pytest.raises(ValueError, match="frame size"):
        crypto.run(None, sizes=(0,))


def test_find_peer() -> None:
    peers: list[dict[str, Any]] = [
        {"name": "AAAAA", "overlay_ip": "100.64.0.5", "endpoint": "198.18.2.1:51820"},
        {"name": "BBBBB", "overlay_ip": None, "endpoint": None}]
    assert find_peer(peers, "AAAAA") == ("100.64.0.5", "198.18.2.1")
    with pytest.raises(PeerBenchError, match="no overlay_ip"):
        find_peer(peers, "BBBBB")
    assert find_peer(peers, "BBBBB", "100.64.0.9") == ("100.64.0.9", None)
    assert find_peer(peers, "AAAAA", "100.64.0.9")[0] == "100.64.0.5"  # agent's value wins
    with pytest.raises(PeerBenchError, match="no peer named"):
        find_peer(peers, "CCCCC")
