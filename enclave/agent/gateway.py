"""GatewayManager: applies this agent's gateway state (enclave.policy.gateway) to the kernel.

    Agent (introduce / withdraw / peer up-down / cert renewed)
        |  upsert_peer(PeerView) / remove_peer / set_up / set_local      (cheap, no I/O)
        v
    GatewayManager.apply()                                              (blocking: run it in
        |-- nft -f -   ruleset(local, peers)   (atomic replace, only when the text changed)
        |-- ip rule    pref 5180 not fwmark SOCKET_MARK lookup 51820  (while routes exist;
        |              the data socket is marked by mark_socket(), so tunnels never loop)
        |-- sysctl net.ipv4.ip_forward=1       (only while this system serves routes; the
        |                                       previous value is restored by close())
        '-- pyroute2   route replace PREFIX via <gateway overlay IP> dev enclave0 metric 50
                       table 51820, per subnet, one active gateway each (choose_active);
                       deleted when the gateway goes away or close()

Which gateway carries a subnet (choose_active, sticky): only gateways the prober hears are
eligible (an introduction does not make a gateway live: AgentGateway adds it as down, and a
re-introduction keeps the liveness the prober found); the holder keeps the subnet while it
answers, also across a moment when no gateway answered (the last holder is remembered), and
only when it stops answering does the subnet move, to the eligible one with the lowest
(priority, name).

A run that ended without close() (a crash, SIGKILL) leaves its tables, ip rule, routes and
ip_forward behind: the first apply() of the next run removes them whatever this system's role
now is, and restores ip_forward from the record the crashed run kept in the state directory
(FORWARD_RECORD, written while forwarding is on because we turned it on).

Everything runs in the caller's network namespace (tests call it through Host.call). Failures
of nft / netlink raise GatewayApplyError; the manager keeps what it believes is installed
consistent with what the kernel accepted, so the next apply() retries the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import errno
import ipaddress
import json
import logging
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from enclave.agent.ports import AgentView
from enclave.cert.errors import CertificateError
from enclave.cert.files import PRIVATE_FILE_MODE, atomic_write
from enclave.cert.identity import SystemIdentity
from enclave.cert.verification import verify_system_certificate
from enclave.dataplane.checksum import inet_checksum
from enclave.discovery.introduction import Introduction
from enclave.policy.gateway import (
    PROBE_INTERVAL,
    PROBE_MISSES,
    ROUTE_METRIC,
    ROUTE_TABLE,
    RULE_PRIORITY,
    SOCKET_MARK,
    TABLE,
    LocalView,
    PeerView,
    ProbeTracker,
    Route,
    choose_active,
    is_active,
    merge_counters,
    parse_counters,
    route_changes,
    ruleset,
    teardown_script,
)

log = logging.getLogger("enclave.agent.gateway")
NFT_TIMEOUT = 10.0
FORWARD_SYSCTL = "net.ipv4.ip_forward"
FORWARD_RECORD = "gateway-ip-forward"  # in the state dir: ip_forward before we turned it on

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class GatewayApplyError(RuntimeError):
    """The kernel refused the gateway configuration (nft or netlink)."""


SO_MARK = 36


def mark_socket(sock: socket.socket) -> None:
    """Mark the agent's data socket so its packets bypass the gateway route table."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, SOCKET_MARK)
    except OSError as exc:
        raise GatewayApplyError(f"cannot mark the data socket (SO_MARK): {exc}") from None


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                             timeout=NFT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GatewayApplyError(f"{argv[0]}: {exc}") from None
    if res.returncode != 0:
        raise GatewayApplyError(f"{' '.join(argv)} failed: {res.stderr.strip()[:500]}")
    return res


class GatewayManager:
    def __init__(self, local: LocalView, forward_record: Path | None = None) -> None:
        self.local = local
        self._forward_record = forward_record  # see FORWARD_RECORD (None: not kept)
        self._recovered = False
        self.peers: dict[str, PeerView] = {}  # changed under _state (prober thread + loop)
        self.active: dict[Route, str] = {}  # subnet -> gateway carrying it
        self._held: dict[Route, str] = {}  # RoutePlan.held: the holders choose_active keeps
        self.installed: dict[Route, ipaddress.IPv4Address] = {}  # routes in the kernel
        self.failovers = 0
        self._applied: str | None = None  # nft text in the kernel (None: no tables)
        self._forward_saved: str | None = None  # ip_forward before we set it
        self._rule = False  # our ip rule is installed
        self._lock = threading.Lock()  # one apply() at a time
        self._state = threading.Lock()  # the peer table

    # -- state (no I/O) -----------------------------------------------------------------------

    def set_local(self, local: LocalView) -> None:
        self.local = local

    def upsert_peer(self, peer: PeerView) -> None:
        """Add or replace a peer. A peer that was already our gateway keeps the liveness the
        prober found: an introduction (renewal, new candidates) says nothing about whether it
        forwards now."""
        with self._state:
            old = self.peers.get(peer.name)
            if old is not None and old.routes and peer.routes:
                peer = dataclasses.replace(peer, up=old.up)
            self.peers[peer.name] = peer

    def remove_peer(self, name: str) -> None:
        with self._state:
            self.peers.pop(name, None)

    def set_up(self, name: str, up: bool) -> bool:
        """Mark a gateway answering or not; True if that changed anything."""
        with self._state:
            p = self.peers.get(name)
            if p is None or p.up == up:
                return False
            self.peers[name] = dataclasses.replace(p, up=up)
            return True

    def snapshot(self) -> list[PeerView]:
        """The peers now (the prober thread and the event loop change the table)."""
        with self._state:
            return list(self.peers.values())

    # -- I/O ----------------------------------------------------------------------------------

    def apply(self) -> None:
        """Bring the kernel in line with the state (idempotent; cheap when nothing changed)."""
        with self._lock:
            if not self._recovered:
                self._recovered = True  # once: a system without nft is not told each time
                try:
                    self._recover()
                except GatewayApplyError as exc:
                    log.warning("gateway: cleaning up after a previous run failed: %s", exc)
            self._apply_nft()
            self._apply_forwarding()
            self._apply_routes()

    def _recover(self) -> None:
        """Remove what a previous run left behind (see the module docstring)."""
        _run(["nft", "-f", "-"], teardown_script())
        self._set_rule(False)
        subprocess.run(["ip", "route", "flush", "table", str(ROUTE_TABLE)], capture_output=True,
                       timeout=NFT_TIMEOUT, check=False)  # fails only when it is empty
        record = self._forward_record
        if record is not None and record.exists():
            saved = record.read_text(errors="replace").strip()
            if saved in ("0", "1") and saved != "1":
                _run(["sysctl", "-qw", f"{FORWARD_SYSCTL}={saved}"])
                log.info("gateway: restored %s=%s left on by a previous run", FORWARD_SYSCTL,
                         saved)
            record.unlink(missing_ok=True)

    def _apply_nft(self) -> None:
        peers = self.snapshot()
        if is_active(self.local, peers):
            text = ruleset(self.local, peers)
            if text != self._applied:
                _run(["nft", "-f", "-"], text)
                self._applied = text
                log.debug("gateway filter applied (%d peers)", len(peers))
        elif self._applied is not None:
            _run(["nft", "-f", "-"], teardown_script())
            self._applied = None

    def _apply_forwarding(self) -> None:
        if self.local.served and self._forward_saved is None:
            before = _run(["sysctl", "-n", FORWARD_SYSCTL]).stdout.strip()
            if before != "1":
                if self._forward_record is not None:  # a crash leaves the record behind
                    atomic_write(self._forward_record, before.encode() + b"\n",
                                 PRIVATE_FILE_MODE)
                _run(["sysctl", "-qw", f"{FORWARD_SYSCTL}=1"])
            self._forward_saved = before
            log.info("gateway: IPv4 forwarding on for %s (%s)",
                     ", ".join(map(str, self.local.served)),
                     "masquerade" if self.local.nat else "routed")
        elif not self.local.served and self._forward_saved is not None:
            self._restore_forwarding()

    def _restore_forwarding(self) -> None:
        saved, self._forward_saved = self._forward_saved, None
        if saved is not None and saved != "1":
            _run(["sysctl", "-qw", f"{FORWARD_SYSCTL}={saved}"])
        if self._forward_record is not None:
            self._forward_record.unlink(missing_ok=True)

    def _apply_routes(self) -> None:
        peers = self.snapshot()
        plan = choose_active(peers, self._held)
        for prefix, name in plan.active.items():
            old = self._held.get(prefix)
            if old is not None and old != name:
                self.failovers += 1
                log.info("gateway failover: %s now via %s (was %s)", prefix, name, old)
        put, gone = route_changes(self.installed, plan.via)
        if put and not self._rule:
            self._set_rule(True)
        if put or gone:
            with IPRoute() as ipr:
                links = ipr.link_lookup(ifname=self.local.iface)
                if not links and put:
                    raise GatewayApplyError(f"no interface {self.local.iface}")
                for prefix, via in put:
                    try:
                        ipr.route("replace", dst=str(prefix), gateway=str(via), oif=links[0],
                                  priority=ROUTE_METRIC, table=ROUTE_TABLE)
                    except NetlinkError as exc:
                        raise GatewayApplyError(f"route {prefix} via {via}: {exc}") from None
                    self.installed[prefix] = via
                for prefix in gone:
                    self._del_route(ipr, prefix)
        self.active, self._held = plan.active, plan.held
        if not self.installed and self._rule:
            self._set_rule(False)

    def _set_rule(self, on: bool) -> None:
        pref = str(RULE_PRIORITY)
        while subprocess.run(["ip", "rule", "del", "pref", pref], capture_output=True,
                             timeout=NFT_TIMEOUT, check=False).returncode == 0:
            pass  # a leftover of a previous run, or ours
        if on:
            _run(["ip", "rule", "add", "pref", pref, "not", "fwmark", f"{SOCKET_MARK:#x}",
                  "lookup", str(ROUTE_TABLE)])
        self._rule = on

    def _del_route(self, ipr: IPRoute, prefix: Route) -> None:
        via = self.installed.pop(prefix, None)
        try:
            ipr.route("del", dst=str(prefix), gateway=str(via) if via else None,
                      priority=ROUTE_METRIC, table=ROUTE_TABLE)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                raise GatewayApplyError(f"delete route {prefix}: {exc}") from None

    def counters(self) -> dict[str, dict[str, int]]:
        """{peer tag: {reason: packets}} from the filter ({} when it is not installed)."""
        if self._applied is None:
            return {}
        res = _run(["nft", "-j", "list", "counters", "table", "netdev", TABLE])
        out = parse_counters(json.loads(res.stdout or "{}"))
        if self.local.served:  # acl_denied, forward_denied and replies' routed live there
            fwd = _run(["nft", "-j", "list", "counters", "table", "ip", TABLE])
            out = merge_counters(out, parse_counters(json.loads(fwd.stdout or "{}")))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "served": [str(r) for r in self.local.served],
            "nat": self.local.nat if self.local.served else None,
            "routes": {str(r): {"via": str(v), "gateway": self.active.get(r)}
                       for r, v in sorted(self.installed.items())},
            "failovers": self.failovers,
            "filter": self._applied is not None,
        }

    def close(self) -> None:
        """Remove routes, filter tables and restore ip_forward (best effort, never raises)."""
        with self._lock:
            try:
                if self.installed:
                    with IPRoute() as ipr:
                        for prefix in list(self.installed):
                            self._del_route(ipr, prefix)
            except (GatewayApplyError, OSError, NetlinkError) as exc:
                log.warning("gateway: removing routes failed: %s", exc)
            self.installed.clear()
            self.active = {}
            self._held = {}
            try:
                if self._rule:
                    self._set_rule(False)
                _run(["nft", "-f", "-"], teardown_script())
                self._applied = None
                self._restore_forwarding()
            except GatewayApplyError as exc:
                log.warning("gateway: cleanup failed: %s", exc)


# -- liveness prober ---------------------------------------------------------------------------
#
#   every PROBE_INTERVAL, for each gateway peer:   ICMP echo -> its overlay IP (through enclave0)
#   PROBE_MISSES unanswered in a row -> set_up(name, False) + apply() at once (routes move to a
#                                       standby)
#   a reply (the first, or again)    -> set_up(name, True)  + apply() at the end of the round
#                                       (eligible; gateways heard in one round are weighed
#                                       together, so the first choice is by (priority, name),
#                                       not by which reply came first)

_ICMP_ECHO = 8
_ICMP_ECHO_REPLY = 0


def echo_request(ident: int, seq: int) -> bytes:
    body = struct.pack("!BBHHH", _ICMP_ECHO, 0, 0, ident, seq) + b"enclave-gw-probe"
    return body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]


def parse_echo_reply(packet: bytes, ident: int) -> tuple[str, int] | None:
    """(source address, seq) of an echo reply with our identifier in a raw IPv4 packet."""
    if len(packet) < 28 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return None
    typ, _code, _ck, got_id, seq = struct.unpack_from("!BBHHH", packet, ihl)
    if typ != _ICMP_ECHO_REPLY or got_id != ident:
        return None
    return socket.inet_ntoa(packet[12:16]), seq


class GatewayProber:
    """A daemon thread probing the manager's gateway peers; start it in the agent's namespace."""

    def __init__(self, manager: GatewayManager, *, interval: float = PROBE_INTERVAL,
                 misses: int = PROBE_MISSES) -> None:
        self.manager = manager
        self.interval = interval
        self.tracker = ProbeTracker(misses)
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF
        self.errors = 0
        self._seq = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self._sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="gateway-prober", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._sock is not None:
            self._sock.close()

    def _gateways(self) -> dict[str, str]:
        return {str(p.overlay_ip): p.name for p in self.manager.snapshot() if p.routes}

    def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._stop.is_set():
            lost = heard = False
            gateways = self._gateways()
            for name in list(self.tracker.outstanding):
                if name not in gateways.values():
                    self.tracker.forget(name)
            for ip, name in gateways.items():
                if not self.tracker.alive(name):
                    lost |= self.manager.set_up(name, False)
                self.tracker.sent(name)
                self._seq = (self._seq + 1) & 0xFFFF
                try:
                    sock.sendto(echo_request(self.ident, self._seq), (ip, 0))
                except OSError:  # no route yet / interface down: counts as a miss
                    pass
            if lost:
                self._apply()
            deadline = time.monotonic() + self.interval
            while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                ready, _, _ = select.select([sock], [], [], min(left, 0.1))
                if not ready:
                    continue
                try:
                    packet = sock.recv(2048)
                except OSError:
                    continue
                got = parse_echo_reply(packet, self.ident)
                if got is not None and got[0] in gateways:
                    name = gateways[got[0]]
                    self.tracker.replied(name)
                    heard |= self.manager.set_up(name, True)
            if heard:
                self._apply()

    def _apply(self) -> None:
        try:
            self.manager.apply()
        except GatewayApplyError as exc:
            self.errors += 1
            log.warning("gateway prober: %s", exc)


# -- the agent's side -----------------------------------------------------------------------------


def _overlay6(ident: SystemIdentity) -> ipaddress.IPv6Network | None:
    """The org's overlay IPv6 /64 (enclave.cert.overlay6), or None without one."""
    v6 = ident.overlay_interface6
    return None if v6 is None else v6.network


class AgentGateway:
    """Feeds the Agent's introductions / withdrawals / renewals into a GatewayManager.

    Introductions are trusted for gateway purposes only after the peer certificate verifies
    against the CA (its MAC, overlay IP and certified routes come from there, never from the
    platform's JSON). A peer newly our gateway is down until the prober hears it (then it may
    carry routes); kernel changes run off the event loop, coalesced.
    """

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent
        ident = agent.identity
        self.manager = GatewayManager(LocalView(agent.options.interface, ident.overlay_interface,
                                                tuple(ident.gateway_routes), True,
                                                _overlay6(ident)),
                                      agent.state.root / FORWARD_RECORD)
        self.prober: GatewayProber | None = None
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        if agent.udp_sock is not None:
            mark_socket(agent.udp_sock)

    def _local(self) -> LocalView:
        grants = [g for p in self.manager.snapshot() for g in p.grants]
        nat = all(g.nat for g in grants) if grants else True
        ident = self.agent.identity
        return LocalView(self.agent.options.interface, ident.overlay_interface,
                         tuple(ident.gateway_routes), nat, _overlay6(ident))

    def introduce(self, intro: Introduction) -> None:
        try:
            peer = verify_system_certificate(intro.cert_der, self.agent.ca,
                                             now=datetime.datetime.now(datetime.UTC),
                                             revoked_serials=self.agent.revoked)
        except (CertificateError, ValueError) as exc:
            log.warning("gateway: ignoring %s's introduction: %s", intro.peer, exc)
            return
        if peer.name != intro.peer:
            log.warning("gateway: introduction for %s carries %s's certificate", intro.peer,
                        peer.name)
            return
        view = PeerView(peer.name, peer.mac, peer.overlay_ip, tuple(peer.gateway_routes),
                        intro.gateway, tuple(intro.grants))
        # a gateway is eligible once it answers a probe (its session forwards); upsert_peer
        # keeps what the prober found for one that was already our gateway
        self.manager.upsert_peer(dataclasses.replace(view, up=not view.routes))
        self.schedule()

    def withdraw(self, name: str) -> None:
        if name in self.manager.peers:
            self.manager.remove_peer(name)
            self.schedule()

    def renewed(self) -> None:
        self.schedule()

    def schedule(self) -> None:
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._apply_loop())

    async def _apply_loop(self) -> None:
        while self._dirty:
            self._dirty = False
            self.manager.set_local(self._local())
            try:
                await asyncio.to_thread(self.manager.apply)
            except GatewayApplyError as exc:
                self.errors += 1
                log.warning("gateway: %s", exc)
            if self.prober is None and any(p.routes for p in self.manager.snapshot()):
                self.prober = GatewayProber(self.manager)
                self.prober.start()

    def describe(self) -> dict[str, Any]:
        out = self.manager.describe()
        out["errors"] = self.errors
        out["down"] = sorted(p.name for p in self.manager.snapshot() if not p.up)
        try:
            out["counters"] = self.manager.counters()
        except (GatewayApplyError, ValueError) as exc:
            out["counters"] = {"error": str(exc)}
        return out

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self.prober is not None:
            await asyncio.to_thread(self.prober.stop)
        await asyncio.to_thread(self.manager.close)
