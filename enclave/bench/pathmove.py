"""Path moves in `enclave bench`: set-up over the relay, and how fast a session leaves a dead
direct path and comes back to it.

    connected   the first `enclave peers` entry that is connected (relay first: the relay may
                carry the first frame while the punch is still on)
    settle()    poll until the path is not relayed, or GIVE_UP_AFTER + 1 s passed (a pair that
                must relay stays there) -> the path the flows run over
    relay_setup() a pair that must relay: setup_relay_ms = the platform's introduction of the
                pair (the agent's introduced_at) -> first frame (connected_at); setup_ms
                counts from the start of the second `enclave intent add` process instead, so
                it also holds that CLI's start-up and its HTTPS request
    moves()     only a pair on direct-udp, with a datagram every 0.2 s from a1 to an echo server
                on b1 over it (Traffic, started by the runner; it used to start `ping`, which
                a host may lack -- then the session was idle and the moves waited for the
                agents' own probes): site a's router drops everything between the two sites'
                public addresses (nft table CUT_TABLE; the platform stays reachable)
                  -> direct_to_relay_ms: cut -> path_changed_at on a1 (path moved to in the note)
                the cut is lifted
                  -> relay_to_direct_ms: lift -> path_changed_at on a1, back on direct-udp

Times are the agent's wall-clock path_changed_at minus the bench's wall clock just before the
cut's or the lift's nft command (the namespaces share the clock); polled every POLL_S for at
most MOVE_TIMEOUT_S.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from enclave.bench.report import Figure
from enclave.discovery.paths import GIVE_UP_AFTER
from enclave.netlab import netns

PeerOf = Callable[[], dict[str, Any] | None]  # a1's `enclave peers` entry for b1, or None

CUT_TABLE = "enclave_bench_cut"
POLL_S = 0.05
MOVE_TIMEOUT_S = 60.0
TRAFFIC_INTERVAL_S = 0.2


class Traffic:
    """A datagram from `sock` to `dst` every `interval` seconds on a thread while the block
    runs (replies are read and dropped): a session carrying traffic, as when a site's path
    dies under use.  The socket is the caller's (a lab host's, closed by the lab)."""

    def __init__(self, sock: socket.socket, dst: tuple[str, int],
                 interval: float = TRAFFIC_INTERVAL_S) -> None:
        self._sock, self._dst, self._interval = sock, dst, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pathmove-traffic",
                                        daemon=True)
        self.sent = 0
        self.received = 0

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self._sock.sendto(b"enclave bench path moves %d" % self.sent, self._dst)
                self.sent += 1
            until = time.monotonic() + self._interval
            while not self._stop.is_set() and (left := until - time.monotonic()) > 0:
                self._sock.settimeout(left)
                try:
                    self._sock.recv(2048)
                    self.received += 1
                except (TimeoutError, OSError):
                    break
            if (left := until - time.monotonic()) > 0:
                self._stop.wait(left)


def relayed(path: object) -> bool:
    return isinstance(path, str) and path.startswith("relay")


def settle(peer_of: PeerOf, first: dict[str, Any], wait_s: float = GIVE_UP_AFTER + 1.0
           ) -> dict[str, Any]:
    """The entry once the path is not relayed, or after `wait_s` (a pair that must relay)."""
    deadline = time.monotonic() + wait_s
    last = first
    while relayed(last.get("path")) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        got = peer_of()
        if got is not None and got.get("state") == "connected":
            last = got
    return last


def relay_setup(peer: dict[str, Any], cipher: str | None) -> Figure:
    """setup_relay_ms from a connected entry on a relayed path (None when it lacks stamps)."""
    intro, up = peer.get("introduced_at"), peer.get("connected_at")
    ms = (float(up) - float(intro)) * 1000 if isinstance(intro, int | float) and isinstance(
        up, int | float) else None
    return Figure("setup_relay_ms", "setup",
                  "set-up of a pair that must relay (introduction -> first frame)", "ms", cipher,
                  ms, None, False, f"path {peer.get('path')}; platform's introduction -> "
                  "connected_at (wall clocks of one host)")


def wait_moved(peer_of: PeerOf, want: Callable[[str], bool], after: float,
               timeout: float = MOVE_TIMEOUT_S) -> dict[str, Any]:
    """Poll until the session's path satisfies `want` and it moved after wall time `after`."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        got = peer_of()
        if got is not None:
            last = got
            if got.get("state") != "connected":
                raise RuntimeError(f"the session went down: {got}")
            moved = got.get("path_changed_at")
            if want(str(got.get("path"))) and isinstance(moved, int | float) and moved >= after:
                return got
        time.sleep(POLL_S)
    raise RuntimeError(f"no path move within {timeout:.0f} s (last entry: {last})")


def cut_rules(peer_ip: str) -> str:
    """nft script: a site router drops everything it forwards to or from `peer_ip`."""
    return (f"table ip {CUT_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter - 10; policy accept;\n"
            f"    ip daddr {peer_ip} drop\n"
            f"    ip saddr {peer_ip} drop\n"
            "  }\n"
            "}\n")


def cut(router_netns: str, peer_ip: str, on: bool) -> None:
    if on:
        netns.run(netns.exec_argv(router_netns, ["nft", "-f", "-"]), input=cut_rules(peer_ip))
    else:
        netns.run(netns.exec_argv(router_netns, ["nft", "delete", "table", "ip", CUT_TABLE]))


def moves(peer_of: PeerOf, router_netns: str, peer_ip: str, cipher: str | None, *,
          timeout: float = MOVE_TIMEOUT_S,
          set_cut: Callable[[str, str, bool], None] = cut) -> list[Figure]:
    """Cut the direct path at site a's router, wait for the session to move; lift the cut,
    wait for it to come back to direct-udp.  Two figures; the cut is always lifted.

    Each time is read just before its nft command: the path changes as soon as the rule
    does, which may be before the command returns (a loaded machine: an agent's re-probe
    found the re-opened path and moved back while `nft delete` still ran, so the move was
    stamped before a time read afterwards and the wait for it ran out: 'no path move within
    60 s' with the session back on direct-udp)."""
    t_cut = time.time()
    set_cut(router_netns, peer_ip, True)
    try:
        away = wait_moved(peer_of, lambda p: p != "direct-udp", t_cut, timeout)
    finally:
        t_lift = time.time()
        set_cut(router_netns, peer_ip, False)
    back = wait_moved(peer_of, lambda p: p == "direct-udp", t_lift, timeout)
    return [
        Figure("direct_to_relay_ms", "setup",
               "direct path cut -> session on another path (same session)", "ms", cipher,
               (float(away["path_changed_at"]) - t_cut) * 1000, None, False,
               f"site a's router drops a<->b; moved to {away.get('path')}"),
        Figure("relay_to_direct_ms", "setup",
               "direct path opens -> session back on it (relay -> direct)", "ms", cipher,
               (float(back["path_changed_at"]) - t_lift) * 1000, None, False,
               f"cut lifted; moved from {away.get('path')} to {back.get('path')}"),
    ]
