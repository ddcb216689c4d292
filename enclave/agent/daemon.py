"""`enclave up`: the agent daemon (one asyncio process).

    ControlClient ----introduce / withdraw / crl / intents / offers----> Agent
    Discovery ------private addrs, reflected mappings, NAT-------------> Agent --report--> platform
    Agent ---introduce / withdraw / set_intents / set_revoked--> ConnectionManager (optional)
    LocalApi <--- `enclave status|peers` (root-only Unix socket)

Without a ConnectionManager (`enclave up --no-tap`: the control plane only) the Agent keeps
the introductions in a dict that status/peers show, and reads the UDP data socket itself (only
reflect replies are expected there).

Options (agent/options.py): CLI flags > environment (ENCLAVE_PORT, ENCLAVE_INTERFACE, ...) >
<state>/config.toml > defaults; an unknown key or a value that does not fit stops `up` at start.
Systemd: logs to stderr, SIGTERM/SIGINT stop gracefully, READY=1 to $NOTIFY_SOCKET once the
sockets are up, STOPPING=1 when shutdown begins.
Certificate renewal: a timer wakes at the certificate's renewal due time (2/3 of its lifetime)
or every ENCLAVE_RENEW_CHECK seconds (default RENEW_CHECK), whichever is first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import uvloop
from cryptography import x509

from enclave.agent.control import ControlClient
from enclave.agent.discovery import Discovery, DiscoveryState
from enclave.agent.dns_server import AgentDns
from enclave.agent.enrol import renew, renew_if_due, renewal_due_at
from enclave.agent.errors import AgentError
from enclave.agent.localapi import LocalApi, socket_path
from enclave.agent.metrics import agent_registry
from enclave.agent.options import AgentOptions
from enclave.agent.ping import ping_peer
from enclave.agent.portmap import PortMapper
from enclave.agent.ports import AgentView
from enclave.agent.state import StateDir
from enclave.agent.udp_socket import any_address, data_socket, send_to
from enclave.cert.crl import parse_crl
from enclave.cert.errors import CertificateError
from enclave.cert.identity import SystemIdentity
from enclave.cert.keys import Ed25519PrivateKey, public_key_raw
from enclave.cert.verification import verify_system_certificate
from enclave.discovery.candidates import NatBehaviour
from enclave.discovery.introduction import (
    Introduction,
    IntroductionError,
    Withdrawal,
    candidate_to_json,
)
from enclave.policy.intent import IntentError, IntentStatement, decode_signed, encode_signed
from enclave.promhttp import MetricsServer, parse_listen

if TYPE_CHECKING:
    from enclave.agent.gateway import AgentGateway

log = logging.getLogger("enclave.agent")
RENEW_CHECK = 3600.0  # the renewal timer wakes at least this often (ENCLAVE_RENEW_CHECK)
RENEW_CHECK_ENV = "ENCLAVE_RENEW_CHECK"
RENEW_RETRY = 30.0  # after a failed renewal that is due, try again this soon
RENEW_SLACK = 0.5  # wake this long after the due time (renew_if_due compares "now < due")


def renew_check_from_env() -> float:
    """ENCLAVE_RENEW_CHECK = seconds between renewal checks (default RENEW_CHECK, min 1)."""
    raw = os.environ.get(RENEW_CHECK_ENV, "").strip()
    try:
        return max(1.0, float(raw)) if raw else RENEW_CHECK
    except ValueError:
        log.error("%s=%r is not a number of seconds; using %d", RENEW_CHECK_ENV, raw,
                  RENEW_CHECK)
        return RENEW_CHECK


def renewal_sleep(ident: SystemIdentity, now: datetime.datetime, check: float) -> float:
    """Seconds until the renewal timer should look again: at the certificate's renewal due time
    (2/3 of its lifetime) if that comes before the next periodic check; a due renewal that
    failed is retried after RENEW_RETRY (or the check interval, if shorter)."""
    until_due = (renewal_due_at(ident) - now).total_seconds() + RENEW_SLACK
    if until_due <= RENEW_SLACK:
        return min(check, RENEW_RETRY)
    return min(check, until_due)


class ConnectionManagerLike(Protocol):
    """The daemon's connection manager (enclave.agent.wiring.AgentConnections)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def introduce(self, intro: Introduction) -> None: ...
    def withdraw(self, peer: str, reason: str) -> bool: ...
    def set_intents(self, names: set[str]) -> None: ...
    def set_revoked(self, serials: set[int]) -> None: ...
    def refresh_ticket(self, peer: str, ticket: bytes) -> None: ...
    def renewed(self, agent: AgentView) -> None: ...
    def on_unhandled(self, callback: Callable[[bytes, Any], object]) -> None: ...
    def on_forgotten(self, callback: Callable[[str], None]) -> None: ...
    def peers(self) -> list[dict[str, Any]]: ...
    def counters(self) -> dict[str, int]: ...
    def dataplane_status(self) -> dict[str, object] | None: ...
    async def ping(self, peer: str, timeout: float) -> dict[str, Any] | None: ...
    def handshake_counts(self) -> dict[str, int]: ...
    def set_local_nat(self, nat: NatBehaviour) -> None: ...
    def set_udp_blocked(self, blocked: bool) -> None: ...

    @property
    def has_tap(self) -> bool:
        """A TAP and the compiled data plane run (gateways and DNS are possible)."""


CmFactory = Callable[[AgentView], ConnectionManagerLike]


def sd_notify(message: str) -> None:
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    addr = "\0" + target[1:] if target.startswith("@") else target
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), addr)


class _UdpReader(asyncio.DatagramProtocol):
    def __init__(self, feed: Callable[[bytes, Any], object]) -> None:
        self.feed = feed

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.feed(data, addr)


class Agent:
    def __init__(self, state: StateDir, options: AgentOptions, *,
                 cm_factory: CmFactory | None = None) -> None:
        self.state = state
        self.options = options
        self.record = state.load_enrolment()
        if self.record.state != "active":
            raise AgentError(f"{self.record.name} is {self.record.state}; "
                             "run `enclave enrol --resume` after approval")
        self.identity = state.identity(datetime.datetime.now(datetime.UTC))
        try:
            self.key: Ed25519PrivateKey = state.keystore().load_ed25519()
        except Exception as exc:
            raise AgentError(f"cannot load the system key: {exc}") from None
        if public_key_raw(self.key) != self.identity.public_key:
            raise AgentError("the system key does not match the certificate")
        self.ca: x509.Certificate = state.load_ca()
        self.cm_factory = cm_factory
        self.cm: ConnectionManagerLike | None = None
        self.gateway: AgentGateway | None = None  # once the TAP is up
        self.dns: AgentDns | None = None  # NAME.enclave on the overlay IP once the TAP is up
        self.metrics: MetricsServer | None = None  # --metrics HOST:PORT
        self.intros: dict[str, Introduction] = {}
        self.intro_times: dict[str, float] = {}
        self.withdrawals: list[dict[str, Any]] = []  # the most recent, for status
        self.intents: set[str] = set()
        self.revoked: set[int] = set()
        self.crl_number: int | None = None
        self.discovery_target: tuple[str, list[int], int | None] | None = None
        self.udp_sock: socket.socket | None = None
        self.control: ControlClient | None = None
        self.discovery: Discovery | None = None
        self.portmap: PortMapper | None = None  # options.portmap: the router's mapping
        # wall clock: the agent object made, and first "ready" (control channel up and our
        # candidates, with a classified NAT, reported to the platform); `status` shows both
        self.started_at = time.time()
        self.ready_at: float | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()

    # -- running -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        name = self.record.name
        self.udp_sock = data_socket()  # [::]:port for IPv4 and IPv6 (agent/udp_socket.py)
        self.udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.options.threads > 1 and self.options.tap:
            # the data plane's other workers bind their sockets beside this one
            # (engine.reuseport_siblings); one worker keeps the port exclusive as before
            self.udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self.udp_sock.bind((any_address(self.udp_sock), self.options.port))
        except OSError as exc:
            self.udp_sock.close()
            raise AgentError(f"cannot bind UDP port {self.options.port}: {exc}") from None
        self.udp_sock.setblocking(False)
        sock = self.udp_sock

        def send_udp(data: bytes, addr: tuple[str, int]) -> None:
            send_to(sock, data, addr)

        self.discovery = Discovery(name, self.key, send_udp, udp_port=self.options.port,
                                   tcp_port=self.options.port, on_change=self._discovered,
                                   exclude_ifaces=(self.options.interface,),
                                   platform_urls=lambda: self.record.all_urls)
        transport: asyncio.DatagramTransport | None = None
        api: LocalApi | None = None
        signals = False
        try:
            # the factory may create the TAP + data plane: everything below is undone in finally
            self.cm = self.cm_factory(self) if self.cm_factory is not None else None
            if self.cm is not None:
                self.cm.on_unhandled(self.discovery.feed)
                self.cm.on_forgotten(self._forget_peer)
                await self.cm.start()
                if self.cm.has_tap:
                    # imported here: pyroute2 costs ~0.2 s that `enclave up --no-tap` never needs
                    from enclave.agent.gateway import AgentGateway

                    self.gateway = AgentGateway(self)
                    self.gateway.schedule()
                    if self.options.dns:
                        ident = self.identity
                        self.dns = AgentDns(name, ident.overlay_ip, self.options.interface,
                                            self._verify_peer_cert,
                                            overlay=ident.overlay_networks,
                                            address6=ident.overlay_ip6)
                        await self.dns.start()
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpReader(self._feed_udp), sock=sock)
            self.control = ControlClient(self.record.all_urls, self.record.pin, name, self.key,
                                         self, on_urls=self._keep_urls)
            api = LocalApi(socket_path(self.state.root),
                           {"status": self.status, "peers": self.peers},
                           {"ping": self.ping})
            await api.start()
            if self.options.metrics:
                host, port = parse_listen(self.options.metrics)
                self.metrics = MetricsServer(agent_registry(self), host, port)
                try:
                    await self.metrics.start()
                except OSError as exc:
                    raise AgentError(f"cannot serve metrics on {self.options.metrics}: "
                                     f"{exc}") from None
                log.info("metrics on http://%s/metrics", self.options.metrics)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            signals = True
            discovery = self.discovery
            self._tasks = [
                loop.create_task(self.control.run()),
                loop.create_task(discovery.run(lambda: self.discovery_target)),
                loop.create_task(self._renewal()),
            ]
            if self.options.portmap:
                self.portmap = PortMapper(self.options.port, self._report)
                self._tasks.append(loop.create_task(self.portmap.run()))
            sd_notify("READY=1")
            log.info("agent %s up (udp/tcp port %d, overlay %s)", name, self.options.port,
                     self.identity.overlay_ip)
            await self._stop.wait()
            log.info("shutting down")
            sd_notify("STOPPING=1")
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if self.portmap is not None:
                await self.portmap.release()  # lifetime 0; bounded by RELEASE_TIMEOUT_S
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            if self.metrics is not None:
                await self.metrics.close()
            if self.dns is not None:
                await self.dns.stop()
            if api is not None:
                await api.stop()
            if self.gateway is not None:
                await self.gateway.close()
            if self.cm is not None:
                await self.cm.stop()
            if transport is not None:
                transport.close()
            sock.close()
            log.info("stopped")

    def _feed_udp(self, data: bytes, addr: Any) -> None:
        if self.discovery is not None:
            self.discovery.feed(data, addr)

    async def _renewal(self) -> None:
        check = renew_check_from_env()
        while True:
            now = datetime.datetime.now(datetime.UTC)
            await asyncio.sleep(renewal_sleep(self.identity, now, check))
            await self._renew(force=False)

    async def _renew(self, *, force: bool) -> None:
        now = datetime.datetime.now(datetime.UTC)
        try:
            if force:
                ident: SystemIdentity | None = await asyncio.to_thread(renew, self.state)
            else:
                ident = await asyncio.to_thread(renew_if_due, self.state, now)
        except (AgentError, CertificateError, OSError) as exc:
            log.warning("certificate renewal failed: %s", exc)
            return
        if ident is not None:
            self.identity = ident
            log.info("certificate renewed, valid until %s", ident.not_after.isoformat())
            if self.cm is not None:
                self.cm.renewed(self)  # later handshakes present the new certificate
            if self.gateway is not None:
                self.gateway.renewed()

    # -- control channel events (ControlHandler) ------------------------------------------------

    def on_connected(self, welcome: dict[str, Any]) -> None:
        disc = welcome.get("discovery")
        # the address the control connection reached, never a name (resolving it here would
        # block the event loop on every discovery datagram)
        host = (self.control.address or self.control.host) if self.control else ""
        if isinstance(disc, dict) and isinstance(disc.get("udp"), list):
            udp = [int(p) for p in disc["udp"] if isinstance(p, int)][:2]
            tcp = disc.get("tcp")
            self.discovery_target = (host, udp, tcp if isinstance(tcp, int) else None)
        self._apply_crl(welcome)
        self._report()
        if self.discovery is not None:
            self.discovery.kick()

    def _keep_urls(self, urls: list[str]) -> None:
        """The platform's URLs changed (told in a welcome): kept in the enrolment record, so the
        next start tries them all."""
        self.record = replace(self.record, urls=tuple(urls))
        self.state.save_enrolment(self.record)

    def on_disconnected(self) -> None:
        # The platform will send fresh introductions on reconnect; live sessions keep running.
        pass

    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        try:
            if kind == "introduce":
                intro = Introduction.from_json(msg)
                new = intro.peer not in self.intros
                self.intros[intro.peer] = intro
                if new:
                    self.intro_times[intro.peer] = time.time()
                log.info("introduced to %s (%d candidates, nat %s)", intro.peer,
                         len(intro.candidates), intro.nat.value)
                if self.cm is not None:
                    self.cm.introduce(intro)
                if self.gateway is not None:
                    self.gateway.introduce(intro)
                if self.dns is not None:
                    self.dns.introduce(intro)
            elif kind == "withdraw":
                w = Withdrawal.from_json(msg)
                # False: an "offline" hint for a working session, which stays up (the
                # platform is not in the data path)
                ended = self.cm.withdraw(w.peer, w.reason) if self.cm is not None else True
                self.withdrawals = [*self.withdrawals[-15:],
                                    {"peer": w.peer, "reason": w.reason, "at": time.time(),
                                     "session_kept": not ended}]
                log.info("withdrawn: %s (%s)%s", w.peer, w.reason,
                         "" if ended else "; the working session is kept")
                if ended:
                    self._forget_peer(w.peer)
            elif kind == "crl":
                self._apply_crl(msg)
            elif kind == "intents":
                peers = msg.get("peers")
                if isinstance(peers, list):
                    self.intents = {p for p in peers if isinstance(p, str)}
                    if self.cm is not None:
                        self.cm.set_intents(set(self.intents))
            elif kind == "policy_offer":
                self._counter_sign(msg.get("offer"))
            elif kind == "renew":
                asyncio.get_running_loop().create_task(self._renew(force=True))
            elif kind == "relay_ticket":
                self._relay_ticket(msg)
        except (IntroductionError, IntentError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignored malformed %r message from the platform: %s", kind, exc)

    def _forget_peer(self, peer: str) -> None:
        """The peer is gone (withdrawn, or its session kept on an "offline" hint ended)."""
        self.intros.pop(peer, None)
        self.intro_times.pop(peer, None)
        if self.gateway is not None:
            self.gateway.withdraw(peer)
        if self.dns is not None:
            self.dns.withdraw(peer)

    def _relay_ticket(self, msg: dict[str, Any]) -> None:
        """A later relay ticket for an introduced peer (a long relayed session keeps going)."""
        peer, raw = msg["peer"], msg["ticket"]
        if not isinstance(peer, str) or not isinstance(raw, str):
            raise ValueError("relay_ticket needs peer and ticket strings")
        ticket = base64.b64decode(raw, validate=True)
        intro = self.intros.get(peer)
        if intro is None or intro.relay is None:
            return
        self.intros[peer] = dataclasses.replace(intro, relay_ticket=ticket)
        if self.cm is not None:
            self.cm.refresh_ticket(peer, ticket)

    def _apply_crl(self, msg: dict[str, Any]) -> None:
        raw = msg.get("crl")
        if not isinstance(raw, str):
            return
        try:
            crl = parse_crl(base64.b64decode(raw, validate=True), self.ca,
                            now=datetime.datetime.now(datetime.UTC))
        except (CertificateError, ValueError) as exc:
            log.warning("ignored a bad revocation list: %s", exc)
            return
        self.revoked = set(crl.serials)
        self.crl_number = crl.number
        if self.cm is not None:
            self.cm.set_revoked(set(self.revoked))

    def _counter_sign(self, offer: object) -> None:
        st, _raw, _sig = decode_signed(offer, public_key_raw(self.ca.public_key()))  # type: ignore[arg-type]
        if st.op != "policy" or st.from_name != self.record.name or st.policy is None:
            raise IntentError("policy offer not for this system")
        mine = IntentStatement.new("add", self.record.name, st.to_name, int(time.time()),
                                   exp=st.exp, policy=st.policy)
        if self.control is not None:
            self.control.send({"type": "intent", "signed": encode_signed(mine, self.key)})
        log.info("counter-signed policy %s intent for %s", st.policy, st.to_name)

    def _discovered(self, state: DiscoveryState) -> None:
        if self.cm is not None:
            self.cm.set_local_nat(state.nat)  # birthday probing picks its side by it
            self.cm.set_udp_blocked(state.udp_blocked)  # relay over TLS first, at once
        self._report()

    def _report(self) -> None:
        if self.control is None or self.discovery is None:
            return
        ds = self.discovery.state
        cands = ds.candidates(self.options.port, self.options.port)
        if self.portmap is not None:  # the router's mapping first: it needs no punching
            mapped = self.portmap.candidates({m[0] for m in ds.udp if m is not None})
            cands = mapped + [c for c in cands if c.addr not in {m.addr for m in mapped}]
        sent = self.control.send({"type": "report", "nat": ds.nat.value,
                                  "candidates": [candidate_to_json(c) for c in cands],
                                  "mappings": ds.mappings_json()})
        # ready: the NAT is classified, or a check finished without it (UDP blocked: the TCP
        # mapping and private candidates are all there will be)
        settled = ds.nat is not NatBehaviour.UNKNOWN or (
            ds.checked_at is not None and not any(m is not None for m in ds.udp))
        if sent and self.ready_at is None and settled:
            self.ready_at = time.time()

    # -- local API -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        ds = self.discovery.state if self.discovery else None
        return {
            "name": self.record.name,
            "org": self.record.org,
            "overlay_ip": str(self.identity.overlay_ip),
            "overlay_ip6": None if self.identity.overlay_ip6 is None
            else str(self.identity.overlay_ip6),
            "cert_expires": self.identity.not_after.isoformat(),
            "cert_serial": self.identity.serial,
            "platform": {
                "url": self.record.url,
                "urls": list(self.control.urls if self.control else self.record.all_urls),
                "via": self.control.ws_url if self.control else None,  # the node tried last
                "state": self.control.state if self.control else "stopped",
                "connects": self.control.connects if self.control else 0,
                "last_error": self.control.last_error if self.control else None,
            },
            "mappings": ds.mappings_json() if ds else {"udp": [], "tcp": None},
            "discovery": None if self.discovery_target is None else {
                "host": self.discovery_target[0], "udp": list(self.discovery_target[1]),
                "tcp": self.discovery_target[2]},
            "nat": (ds.nat if ds else NatBehaviour.UNKNOWN).value,
            "udp_blocked": ds.udp_blocked if ds else False,  # relay over TLS first
            "private_addresses": ds.private if ds else [],
            "port": self.options.port,
            "portmap": self.portmap.describe() if self.portmap is not None else None,
            "started_at": self.started_at,
            "ready_at": self.ready_at,
            "intents": sorted(self.intents),
            "crl_number": self.crl_number,
            "revoked_serials": sorted(self.revoked),
            "withdrawals": list(self.withdrawals),
            "peers": len(self.intros),
            "dataplane": self._dataplane_status(),
            "node_drops": self._node_drops(),
            "handshakes": self.cm.handshake_counts() if self.cm is not None else {},
            "gateway": self.gateway.describe() if self.gateway is not None else None,
        }

    def _verify_peer_cert(self, der: bytes) -> SystemIdentity:
        """A peer's certificate checked against the CA and the CRL (CertificateError)."""
        return verify_system_certificate(der, self.ca, now=datetime.datetime.now(datetime.UTC),
                                         revoked_serials=self.revoked)

    def metrics_view(self) -> dict[str, Any]:
        """What `--metrics` reads at each scrape (enclave.agent.metrics): in-memory figures only,
        unlike status() (no nft counters, no discovery state)."""
        return {
            "cert_expires": self.identity.not_after.isoformat(),
            "dataplane": self._dataplane_status(),
            "node_drops": self._node_drops(),
            "handshakes": self.cm.handshake_counts() if self.cm is not None else {},
        }

    def _node_drops(self) -> dict[str, int]:
        """What the connection manager's Node dropped silently, by reason."""
        return dict(self.cm.counters()) if self.cm is not None else {}

    def _dataplane_status(self) -> dict[str, object] | None:
        return self.cm.dataplane_status() if self.cm is not None else None

    async def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        """The local API's "ping": one authenticated PING to an introduced peer (agent/ping.py)."""
        return await ping_peer(self.cm, self.intros, args)

    def peers(self) -> list[dict[str, Any]]:
        if self.cm is not None:
            return self.cm.peers()
        out = []
        for name, intro in sorted(self.intros.items()):
            out.append({
                "name": name, "state": "introduced", "path": None, "endpoint": None,
                "rx_bytes": None, "tx_bytes": None, "rtt_ms": None, "connected_at": None,
                "introduced_at": self.intro_times.get(name),
                "nat": intro.nat.value,
                "candidates": [f"{c.addr.transport.value}:{c.addr.host}:{c.addr.port}"
                               for c in intro.candidates],
            })
        return out


def run_agent(state: StateDir, options: AgentOptions, cm_factory: CmFactory | None = None) -> None:
    agent = Agent(state, options, cm_factory=cm_factory)
    uvloop.run(agent.run())
