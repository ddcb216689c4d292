"""`enclave bench` reports the relay pair's set-up and the path moves as figures (runner.run in
a real netlab with real agents and platform):

    --path relay-udp lab (symmetric / symmetric)   -> setup_relay_ms, path relay-udp
    default lab (full-cone / port-restricted)      -> path moves stage: direct_to_relay_ms
                                                      (moved to a relay) and relay_to_direct_ms
                                                      (back on direct-udp)

No timing thresholds: the figures exist, are measured (> 0) and name the paths they moved over.
"""

from __future__ import annotations

import pytest

from enclave.bench import runner
from enclave.netlab import netns
from tests.support.lab import netlab_unavailable

pytestmark = [pytest.mark.netlab, pytest.mark.root]


@pytest.fixture(scope="module", autouse=True)
def _lab_possible() -> None:
    reason = netlab_unavailable()
    if reason is not None:
        pytest.skip(reason)


def _opts(**kw: object) -> runner.BenchOptions:
    return runner.BenchOptions(ciphers=["chacha20poly1305"], duration=1, flows=("latency",),
                               ping_count=10, crypto=False, relay=False, **kw)  # type: ignore[arg-type]


def _gone(prefix: str) -> bool:
    return prefix != "" and not [n for n in netns.list_netns() if n.startswith(prefix)]


def test_relay_pair_reports_its_setup_time() -> None:
    report = runner.run(_opts(nat_a="symmetric", nat_b="symmetric"))
    assert _gone(report.meta["lab_prefix"])
    stages = {s.name: s for s in report.stages}
    connected = stages.get("connected (chacha20poly1305)")
    assert connected is not None and connected.status == "ok", report.stages
    assert report.paths["chacha20poly1305"] == "relay-udp"
    figs = {f.key: f for f in report.figures}
    got = figs["setup_relay_ms"]
    assert got.overlay is not None and got.overlay > 0 and "relay-udp" in got.note, got
    assert "relay_to_direct_ms" not in figs  # never direct: no move to report


def test_direct_pair_reports_the_moves_to_and_from_the_relay() -> None:
    report = runner.run(_opts())
    assert _gone(report.meta["lab_prefix"])
    stages = {s.name: s for s in report.stages}
    assert report.paths.get("chacha20poly1305") == "direct-udp", report.stages
    moves = stages.get("path moves (chacha20poly1305)")
    assert moves is not None and moves.status == "ok", report.stages
    figs = {f.key: f for f in report.figures}
    away, back = figs["direct_to_relay_ms"], figs["relay_to_direct_ms"]
    assert away.overlay is not None and away.overlay > 0 and "moved to relay" in away.note
    assert back.overlay is not None and back.overlay > 0
    assert back.note.endswith("to direct-udp"), back.note
    assert "setup_relay_ms" not in figs
