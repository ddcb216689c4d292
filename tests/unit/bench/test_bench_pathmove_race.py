"""enclave/bench/pathmove.moves when the session moves while the nft command still runs (a
loaded machine): the path changes as soon as the rule does, before the command returns.

The bench read its clock after each command, so a move stamped during the lift's `nft delete`
came "before" the lift and the wait for the move back ran out ('no path move within 60 s',
the session back on direct-udp). Each time is now read before its command. The session here
is a dict that the cut function moves mid-command, as the agents did.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from enclave.bench import pathmove

pytestmark = pytest.mark.unit

COMMAND_S = 0.05  # how long each simulated nft command runs after its rule took effect


def test_a_move_during_the_nft_command_counts() -> None:
    session: dict[str, Any] = {"state": "connected", "path": "direct-udp",
                               "path_changed_at": time.time() - 100}
    calls: list[bool] = []

    def set_cut(router: str, peer_ip: str, on: bool) -> None:
        assert (router, peer_ip) == ("ns-router-a", "198.18.2.1")
        calls.append(on)
        # the rule is in (or out): the agents move at once, then the command returns
        session["path"] = "relay-udp" if on else "direct-udp"
        session["path_changed_at"] = time.time()
        time.sleep(COMMAND_S)

    figs = pathmove.moves(lambda: dict(session), "ns-router-a", "198.18.2.1", "aes256gcm",
                          timeout=2.0, set_cut=set_cut)
    assert calls == [True, False]  # cut, then always lifted
    got = {f.key: f for f in figs}
    away, back = got["direct_to_relay_ms"], got["relay_to_direct_ms"]
    assert away.overlay is not None and 0 <= away.overlay < COMMAND_S * 1000
    assert back.overlay is not None and 0 <= back.overlay < COMMAND_S * 1000
    assert "moved to relay-udp" in away.note and back.note.endswith("to direct-udp")


def test_no_move_still_times_out_and_lifts_the_cut() -> None:
    session = {"state": "connected", "path": "direct-udp", "path_changed_at": 0.0}
    calls: list[bool] = []
    with pytest.raises(RuntimeError, match="no path move"):
        pathmove.moves(lambda: dict(session), "r", "198.18.2.1", None, timeout=0.3,
                       set_cut=lambda _r, _ip, on: calls.append(on))
    assert calls == [True, False]
