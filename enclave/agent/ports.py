"""The running agent as its parts see it: a Protocol, no behaviour.

    daemon.Agent ──(AgentView)──> wiring.agent_factory / AgentConnections, gateway.AgentGateway

The daemon's Agent satisfies AgentView.  This module sits below the daemon, the wiring and the
gateway, so none of them imports another for its types.
"""

from __future__ import annotations

import socket
from typing import Protocol

from cryptography import x509

from enclave.agent.state import EnrolmentRecord, StateDir
from enclave.cert.identity import SystemIdentity
from enclave.cert.keys import Ed25519PrivateKey


class OptionsView(Protocol):
    """The agent options the data path and the gateway read (options.AgentOptions)."""

    port: int
    interface: str
    mtu: int | None
    cipher: str | None
    offload: bool
    aqm: bool
    threads: int
    tap: bool


class AgentView(Protocol):
    """What the connection-manager wiring and the gateway read from the running agent."""

    state: StateDir
    record: EnrolmentRecord
    key: Ed25519PrivateKey
    ca: x509.Certificate
    revoked: set[int]
    udp_sock: socket.socket | None

    @property
    def identity(self) -> SystemIdentity: ...

    @property
    def options(self) -> OptionsView: ...
