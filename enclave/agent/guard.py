"""PortGuard: keeps the agent's nftables guard of its TCP data port (enclave.policy.guard).

    TcpTransport.start()        -> install(port): delete a table a crashed agent left on this
                                   port, install one that admits nobody yet
    introduce(peer, candidates) -> allow(peer, hosts): the peer's IP literals join the set
    withdraw(peer)              -> forget(peer)
    TcpTransport.close()        -> remove(): the table is deleted
    PortGuard(overlay=...)      the same table drops packets for the overlay IP that arrive by
                                another interface than the TAP or loopback

Runs `nft -f -` in the agent's own network namespace (blocking, a few milliseconds: it runs only
on start, stop and introductions).  Without nftables or CAP_NET_ADMIN the guard is off (logged
once) and the data port answers SYNs as a plain listener does.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterable

from enclave.policy.guard import IPAddress, Overlay, parse_hosts, ruleset, teardown_script

log = logging.getLogger("enclave.agent.guard")
NFT_TIMEOUT = 10.0

Runner = Callable[[str], bool]  # nft script -> applied


def run_nft(script: str) -> bool:
    """`nft -f -` with `script`; False (logged) when nft is missing or refuses."""
    try:
        res = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                             timeout=NFT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nft: %s", exc)
        return False
    if res.returncode != 0:
        log.warning("nft refused the data port guard: %s", res.stderr.strip()[:300])
        return False
    return True


class PortGuard:
    def __init__(self, runner: Runner = run_nft, overlay: Overlay | None = None) -> None:
        self._run = runner
        self._overlay = overlay  # the TAP's address: reachable only through the TAP (or lo)
        self._port: int | None = None
        self._peers: dict[str, set[IPAddress]] = {}
        self._applied: str | None = None

    @property
    def active(self) -> bool:
        return self._applied is not None

    def install(self, port: int) -> bool:
        """Guard `port` (admitting nobody yet); False when the kernel refused (guard off)."""
        self._port = port
        self._applied = None
        if not self._apply():
            log.warning("TCP data port %d is not guarded: it answers SYNs from anyone", port)
            self._port = None  # off: later introductions do not retry
            return False
        return True

    def allow(self, peer: str, hosts: Iterable[str]) -> None:
        self._peers[peer] = parse_hosts(hosts)
        self._apply()

    def forget(self, peer: str) -> None:
        if self._peers.pop(peer, None) is not None:
            self._apply()

    def remove(self) -> None:
        if self._port is not None and self._applied is not None:
            self._run(teardown_script(self._port))
        self._applied = None
        self._port = None

    def allowed(self) -> set[IPAddress]:
        return set().union(*self._peers.values()) if self._peers else set()

    def _apply(self) -> bool:
        if self._port is None:
            return False
        text = ruleset(self._port, self.allowed(), self._overlay)
        if text == self._applied:
            return True
        if not self._run(text):
            return False
        self._applied = text
        return True
