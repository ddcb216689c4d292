"""How `enclave up` assembles its data path: credentials, peer validation, TAP + compiled DataPlane.

    Agent (daemon.py) --agent_factory(agent)--> AgentConnections (a ConnectionManager)
                                                   |  creds: system cert DER, Ed25519 signer,
                                                   |         caps from select_cipher (AES only
                                                   |         when it runs in hardware)
                                                   |  validate_peer: verify_system_certificate
                                                   |         (CA, revoked serials, now)
                                                   v
        TAP enclave0 (MAC, overlay IP/prefix from the certificate, MTU from dataplane/mtu.py)
             ^ frames                                             ^ DATA (UDP socket)
             |                                                    |
        enclave.dataplane.engine.DataPlane (native tx / rx threads, GIL released)
             | punt socket                                        ^ install_peer / remove_peer
             v                                                    |
        CompiledDataPlane (this file) ----------------------------+
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

import asyncio
import datetime
import importlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from enclave.agent.connections import ConnectionManager
from enclave.agent.errors import AgentError
from enclave.agent.guard import PortGuard
from enclave.cert.errors import CertificateError
from enclave.cert.identity import SystemIdentity
from enclave.cert.keys import sign
from enclave.cert.verification import verify_system_certificate
from enclave.cipher import AES256GCM, CipherError, select_cipher
from enclave.logsafe import RejectionLog, shown
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.handshake import LocalCredentials, PeerIdentity
from enclave.proto.wire import CAP_AES256GCM_HW
from enclave.sysinfo import crypto_flags_fast

if TYPE_CHECKING:
    from enclave.agent.daemon import Agent
    from enclave.dataplane.engine import DataPlane, PuntMessage

log = logging.getLogger("enclave.agent.wiring")

ACTIVITY_INTERVAL = 1.0  # seconds between data-plane key-usage reports to the Node
MAX_PEERS = 256


T = TypeVar("T")


def off_loop(fn: Callable[[], T]) -> T:
    """Run fn() in a fresh thread and wait for it: pyroute2 (TAP set-up and removal) runs its
    own asyncio loop and refuses to start inside the agent's running one."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=body, name="enclave-netlink")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return cast(T, box["value"])


def load_fastpath() -> Any:
    """The compiled data-plane module, or AgentError telling how to get it."""
    try:
        engine = importlib.import_module("enclave.dataplane.engine")
    except ImportError as exc:
        raise AgentError(
            f"the compiled data plane (enclave._fastpath) cannot be imported: {exc}. "
            "Build it with `python setup.py build_ext --inplace` (or reinstall enclave), "
            "or run `enclave up --no-tap` for the control plane only") from None
    return engine


class PeerValidator:
    """validate_peer for the handshake: chain to the CA, validity at now, not revoked.

    Remembers the identity of every certificate it accepted, by system name, so the data plane
    can install the peer's certified MAC (PeerKeysUpdated comes before SessionEstablished).
    Rejections are logged cut short and within a budget (enclave.logsafe.RejectionLog): a
    flood of bad certificates does not flood the log.
    """

    def __init__(self, agent: Agent, clock: Callable[[], datetime.datetime] | None = None) -> None:
        self._agent = agent
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.identities: dict[str, SystemIdentity] = {}
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
        self.identities[ident.name] = ident
        return ident

    def identity_of(self, peer: str) -> tuple[bytes, bool] | None:
        ident = self.identities.get(peer)
        return None if ident is None else (ident.mac, bool(ident.gateway_routes))


def credentials(agent: Agent, cipher: str) -> LocalCredentials:
    """This system's handshake credentials: offering AES256-GCM only when it is the chosen
    (hardware) cipher; ChaCha20-Poly1305 otherwise (the peer then uses it too)."""
    from cryptography.hazmat.primitives import serialization

    der = agent.state.load_certificate().public_bytes(serialization.Encoding.DER)
    key = agent.key
    caps = CAP_AES256GCM_HW if cipher == AES256GCM else 0
    return LocalCredentials(agent.record.name, der, lambda msg: sign(key, msg), caps,
                            agent.identity.public_key)


class CompiledDataPlane:
    """engine.DataPlane as the ConnectionManager's data plane (DataPlaneLike + punt routing)."""

    reads_udp = True  # the native rx thread reads the UDP socket; the CM must not

    def __init__(self, dp: DataPlane, validator: PeerValidator) -> None:
        self.dp = dp
        self._validator = validator
        self._cm: ConnectionManager | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False

    # -- DataPlaneLike ------------------------------------------------------------------------
    def install(self, peer: str, keys: PeerKeysUpdated) -> None:
        if keys.tx is None and not keys.rx:
            self.dp.remove_peer(peer)
            return
        ident = self._validator.identity_of(peer)
        if ident is None:  # cannot happen after a handshake: the validator saw the cert
            log.warning("no certified MAC for %s: session not installed in the data plane", peer)
            return
        self.dp.install_peer(peer, keys, ident[0], ident[1])

    def remove(self, peer: str) -> None:
        self.dp.remove_peer(peer)

    def counters(self, peer: str) -> dict[str, int]:
        return self.dp.peer_counters(peer)

    def inject(self, packet: bytes) -> None:
        try:
            self.dp.inject(packet)
        except OSError:  # punt socket full: the packet is lost like on a busy link
            log.debug("inject queue full: dropped a %d-byte DATA packet", len(packet))

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, cm: ConnectionManager) -> None:
        self._cm = cm
        loop = asyncio.get_running_loop()
        self.dp.start()
        self._started = True
        self.dp.on_punt(self._on_punt, loop)
        self._task = loop.create_task(self._activity())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._cm = None
        await asyncio.to_thread(self.dp.close)  # stops and joins the threads, removes the TAP

    def describe(self) -> dict[str, Any]:
        out = self.dp.describe()
        out["counters"] = self.dp.global_counters()
        return out

    # -- from the loops -------------------------------------------------------------------------
    def _on_punt(self, msg: PuntMessage) -> None:
        from enclave import _fastpath as fp

        cm = self._cm
        if cm is None:
            return
        if msg.kind == fp.PUNT_DATAGRAM and msg.addr is not None:
            cm.receive_udp(msg.packet, msg.addr)
        elif msg.kind == fp.PUNT_TX and msg.peer is not None:
            cm.send_on_path(msg.peer, msg.packet)
        elif msg.kind == fp.PUNT_FIRST_RX:
            cm.report_activity(msg.local_index, rx=True, tx_messages=None)
        elif msg.kind == fp.PUNT_ROAMED and msg.peer is not None and msg.addr is not None:
            cm.peer_roamed(msg.peer, msg.addr, msg.local_index)

    async def _activity(self) -> None:
        while True:
            await asyncio.sleep(ACTIVITY_INTERVAL)
            cm = self._cm
            if cm is None:
                return
            try:
                for _peer, index, got, sent in self.dp.poll_activity():
                    cm.report_activity(index, rx=got, tx_messages=sent)
            except Exception:  # keep reporting; a bug here must not end the data path
                log.exception("data-plane activity report failed")


class AgentConnections(ConnectionManager):
    """The ConnectionManager of `enclave up`, owning its CompiledDataPlane (if any)."""

    def __init__(self, *args: Any, compiled: CompiledDataPlane | None = None,
                 **kw: Any) -> None:
        super().__init__(*args, dataplane=compiled, **kw)
        self.compiled = compiled
        self.cipher: str | None = None  # the cipher this side prefers (select_cipher)

    def renewed(self, agent: Agent) -> None:
        """The certificate was renewed: present the new one in every later handshake."""
        self.node.creds = credentials(agent, self.cipher or "")

    async def start(self) -> None:
        try:
            if self.compiled is not None:
                self.compiled.start(self)
            await super().start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            if self.compiled is not None:
                compiled, self.compiled = self.compiled, None
                await compiled.close()


def open_dataplane(agent: Agent, validator: PeerValidator) -> CompiledDataPlane:
    """Create the TAP (from the certificate) and the compiled data plane on agent.udp_sock."""
    engine = load_fastpath()
    from enclave.dataplane.mtu import DEFAULT_OVERLAY_MTU

    opts = agent.options
    assert agent.udp_sock is not None
    mtu = opts.mtu or DEFAULT_OVERLAY_MTU
    ident = agent.identity
    try:
        sock = agent.udp_sock
        dp = off_loop(lambda: engine.DataPlane.open(
            sock, name=opts.interface, mac=ident.mac, address=ident.overlay_interface, mtu=mtu,
            offload=opts.offload, max_peers=MAX_PEERS, identity_of=validator.identity_of))
    except (OSError, ValueError, RuntimeError) as exc:
        raise AgentError(f"cannot create TAP interface {opts.interface!r}: {exc}") from None
    log.info("data plane on %s (%s, mtu %d): %s", opts.interface, ident.overlay_interface, mtu,
             ", ".join(f"{k}={v}" for k, v in dp.describe().items() if k not in ("tap", "mtu")))
    return CompiledDataPlane(dp, validator)


def agent_factory(agent: Agent) -> AgentConnections:
    """Everything `enclave up` needs to hold sessions (see the diagram at the top)."""
    try:
        # second witness from the kernel's flags: py-cpuinfo would spawn a process (~1.2 s)
        choice = select_cipher(agent.options.cipher, cpu_flags=crypto_flags_fast())
    except CipherError as exc:
        raise AgentError(str(exc)) from None
    log.info("cipher %s (%s)", choice.cipher, choice.reason)
    creds = credentials(agent, choice.cipher)
    validator = PeerValidator(agent)
    assert agent.udp_sock is not None
    compiled = open_dataplane(agent, validator) if agent.options.tap else None
    try:
        cm = AgentConnections(creds, validator, udp_sock=agent.udp_sock,
                              tcp_port=agent.options.port, compiled=compiled,
                              tcp_guard=PortGuard())  # TCP to the data port only from peers
    except BaseException:
        if compiled is not None:
            off_loop(compiled.dp.close)
        raise
    cm.cipher = choice.cipher
    return cm
