"""How `enclave up` assembles its data path: credentials, peer validation, TAP + compiled DataPlane.

    Agent (daemon.py) --agent_factory(agent)--> AgentConnections (a ConnectionManager)
                                                   |  creds: system cert DER, Ed25519 signer,
                                                   |         caps = the cipher offer from
                                                   |         select_cipher (cipher.offer_caps)
                                                   |  validate_peer: verify_system_certificate
                                                   |         (CA, revoked serials, now)
                                                   |  dataplane: engine.DataPlane (apply)
                                                   v
        TAP enclave0 (MAC, overlay IP/prefix from the certificate, MTU from dataplane/mtu.py
             for the largest tag the offer allows: 32 bytes when it offers AEGIS-256)
             ^ frames                                             ^ DATA (UDP socket)
             |                                                    |
        enclave.dataplane.engine.DataPlane (native tx / rx threads, GIL released)
             | punt socket                   ^ apply(PeerKeysUpdated): the ConnectionManager
             v                               | hands the Node's event straight to it
        engine.DataPlane.serve(cm) routes them to the AgentConnections (a PuntHandler):
             DATAGRAM  -> cm.receive_udp       (handshakes, CONTROL, reflector replies, ...)
             TX        -> cm.send_on_path      (encrypted DATA for a TCP / relay path)
             FIRST_RX  -> cm.report_activity   (promotes receive-only keys at once)
             ROAMED    -> cm.peer_roamed -> Node.peer_roamed (the session follows)
             every ACTIVITY_INTERVAL: poll_activity -> cm.report_activity (keepalive, dead
             peer, rekey-by-count inputs of the Node)

Lifecycle: AgentConnections.start() starts the loops before the sockets are read and stop()
closes every session, stops the threads (joined) and removes the TAP, also when start() failed
half way.  Without the compiled extension `enclave up` refuses to start (no Python fallback).
"""

from __future__ import annotations

import datetime
import importlib
import logging
import socket
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar, cast

from cryptography.hazmat.primitives import serialization

from enclave.agent.connections import ConnectionManager
from enclave.agent.errors import AgentError
from enclave.agent.guard import PortGuard
from enclave.agent.ports import AgentView
from enclave.cert.errors import CertificateError
from enclave.cert.keys import sign
from enclave.cert.verification import verify_system_certificate
from enclave.cipher import CipherError, offer_caps, select_cipher
from enclave.dataplane.mtu import default_overlay_mtu
from enclave.logsafe import RejectionLog, shown
from enclave.policy.guard import Overlay
from enclave.proto.handshake import LocalCredentials, PeerIdentity, ValidatePeer
from enclave.sysinfo import crypto_flags_fast

if TYPE_CHECKING:
    from enclave.dataplane.engine import DataPlane

log = logging.getLogger("enclave.agent.wiring")

MAX_PEERS = 256


T = TypeVar("T")


def off_loop(fn: Callable[[], T]) -> T:
    """Run fn() in a fresh thread and wait for it: pyroute2 (TAP set-up and removal) runs its
    own asyncio loop and refuses to start inside the agent's running one."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=body, name="enclave-netlink")
    t.start()
    t.join()
    if "error" in box:
        raise cast(BaseException, box["error"])
    return cast(T, box["value"])


def load_fastpath() -> ModuleType:
    """The compiled data-plane module, or AgentError telling how to get it.  Imported here,
    not at the top, so a missing extension becomes this message instead of an ImportError."""
    try:
        engine = importlib.import_module("enclave.dataplane.engine")
    except ImportError as exc:
        raise AgentError(
            f"the compiled data plane (enclave._fastpath) cannot be imported: {exc}. "
            "Build it with `python setup.py build_ext --inplace` (or reinstall enclave), "
            "or run `enclave up --no-tap` for the control plane only") from None
    return engine


class PeerValidator:
    """validate_peer for the handshake: chain to the CA, validity at now, not revoked, our
    organisation.  Keeps nothing: the Node carries the identity of an authenticated peer.
    Rejections are logged cut short and within a budget (enclave.logsafe.RejectionLog): a
    flood of bad certificates does not flood the log."""

    def __init__(self, agent: AgentView,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        self._agent = agent
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.rejections = RejectionLog(log)

    def __call__(self, der: bytes) -> PeerIdentity | None:
        try:
            ident = verify_system_certificate(der, self._agent.ca, now=self._clock(),
                                              revoked_serials=self._agent.revoked)
        except (CertificateError, ValueError) as exc:
            self.rejections.note("certificate", "rejected a peer certificate: %s",
                                 shown(str(exc), 200))
            return None
        if ident.org != self._agent.identity.org:
            self.rejections.note("organisation", "rejected a peer certificate of another "
                                 "organisation (%s)", shown(ident.org))
            return None
        return ident


def credentials(agent: AgentView, caps: int) -> LocalCredentials:
    """This system's handshake credentials with its cipher offer `caps` (cipher.offer_caps:
    AES256-GCM only when it is the chosen hardware cipher, AEGIS-256 only when allowed;
    ChaCha20-Poly1305 always)."""
    der = agent.state.load_certificate().public_bytes(serialization.Encoding.DER)
    key = agent.key
    return LocalCredentials(agent.record.name, der, lambda msg: sign(key, msg), caps,
                            agent.identity.public_key)


class AgentConnections(ConnectionManager):
    """The ConnectionManager of `enclave up`, owning the compiled data plane (if any): the
    Node's PeerKeysUpdated go to dp.apply, the loops' punt messages come back to us."""

    def __init__(self, creds: LocalCredentials, validator: ValidatePeer, *,
                 udp_sock: socket.socket, tcp_port: int, dp: DataPlane | None,
                 cipher: str, overlay: Overlay | None = None) -> None:
        # TCP to the data port only from peers; the overlay IP only through the TAP
        super().__init__(creds, validator, udp_sock=udp_sock, tcp_port=tcp_port, dataplane=dp,
                         tcp_guard=PortGuard(overlay=overlay))
        self.dp = dp
        self.cipher = cipher  # the cipher this side prefers (select_cipher)

    @property
    def has_tap(self) -> bool:
        return self.dp is not None

    def renewed(self, agent: AgentView) -> None:
        """The certificate was renewed: present the new one in every later handshake, and
        handshake again with every connected peer now, so the peers' data planes bind what
        the new certificate names (a gateway's routes) at once."""
        self.node.creds = credentials(agent, self.node.creds.caps)
        self.node.rehandshake(self._now())
        self._pump()

    def dataplane_status(self) -> dict[str, object] | None:
        if self.dp is None:
            return None
        out: dict[str, object] = self.dp.describe()
        out["counters"] = self.dp.global_counters()
        out["cipher"] = self.cipher
        return out

    async def start(self) -> None:
        try:
            if self.dp is not None:
                self.dp.serve(self)
            await super().start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            if self.dp is not None:
                dp, self.dp = self.dp, None
                await dp.aclose()  # stops and joins the threads, removes the TAP


def open_dataplane(agent: AgentView, max_tag: int) -> DataPlane:
    """Create the TAP (from the certificate) and the compiled data plane on agent.udp_sock;
    without a configured MTU the TAP's accounts for `max_tag`, the largest AEAD tag allowed."""
    engine = load_fastpath()
    opts = agent.options
    assert agent.udp_sock is not None
    mtu = opts.mtu or default_overlay_mtu(max_tag)
    ident = agent.identity
    try:
        sock = agent.udp_sock
        dp: DataPlane = off_loop(lambda: engine.DataPlane.open(
            sock, name=opts.interface, mac=ident.mac, address=ident.overlay_interface,
            address6=ident.overlay_interface6, mtu=mtu,
            offload=opts.offload, aqm=opts.aqm, max_peers=MAX_PEERS, threads=opts.threads))
    except (OSError, ValueError, RuntimeError) as exc:
        raise AgentError(f"cannot create TAP interface {opts.interface!r}: {exc}") from None
    log.info("data plane on %s (%s, %s, mtu %d): %s", opts.interface, ident.overlay_interface,
             ident.overlay_interface6, mtu,
             ", ".join(f"{k}={v}" for k, v in dp.describe().items() if k not in ("tap", "mtu")))
    return dp


def agent_factory(agent: AgentView) -> AgentConnections:
    """Everything `enclave up` needs to hold sessions (see the diagram at the top)."""
    try:
        # second witness from the kernel's flags: py-cpuinfo would spawn a process (~1.2 s)
        choice = select_cipher(agent.options.cipher, cpu_flags=crypto_flags_fast())
    except CipherError as exc:
        raise AgentError(str(exc)) from None
    log.info("cipher %s (%s)", choice.cipher, choice.reason)
    creds = credentials(agent, offer_caps(choice))
    validator = PeerValidator(agent)
    assert agent.udp_sock is not None
    dp = open_dataplane(agent, choice.max_tag_size) if agent.options.tap else None
    try:
        overlay = (Overlay(agent.options.interface, agent.identity.overlay_ip,
                           agent.identity.overlay_ip6) if dp is not None else None)
        cm = AgentConnections(creds, validator, udp_sock=agent.udp_sock,
                              tcp_port=agent.options.port, dp=dp, cipher=choice.cipher,
                              overlay=overlay)
        cm.use_relay_tls(agent.record.url, agent.record.pin)  # relay of last resort over TLS
        return cm
    except BaseException:
        if dp is not None:
            off_loop(dp.close)
        raise
