"""What the platform tells each side when mutual intent holds: the shared currency between the
control channel (which receives it) and the connection manager (which punches with it).

JSON form on the control channel (one object per introduction):

    {"type": "introduce",
     "peer": "V88RY",                       # the other system's name
     "cert": "<base64 DER>",                # its current certificate
     "nat": "endpoint-independent",         # NatBehaviour value
     "punch_at": 1764193000.25,             # unix time both sides start probing
     "candidates": [{"transport": "udp", "host": "198.19.1.2", "port": 51820,
                     "kind": "private", "nat": "endpoint-independent"}, ...],
     "relay": {"transport": "relay", "host": "198.18.0.2", "port": 3479} | null,
     "relay_ticket": "<base64>" | null,      # optional: this side's ticket for that relay
                                            # (enclave.platform.relay.mint_ticket)
     "gateway": {"routes": ["198.19.50.0/24"], "nat": true, "priority": 100} | absent,
                                            # optional: the peer is this side's gateway for
                                            # these routes (enclave.policy.gateway.GatewayOffer)
     "grants": [{"routes": [...], "acl": ["tcp:22", "icmp"], "policy": "ops-lan"}] | absent}
                                            # optional: the peer may use this side as its
                                            # gateway for these (GatewayGrant)

    {"type": "withdraw", "peer": "V88RY", "reason": "intent" | "revoked" | "offline" | ...}

Candidate and relay hosts must be IP literals (enclave.discovery.candidates.check_candidate_host):
a candidate with any other host is dropped on arrival (candidates_from_json), a relay that is not
an IP literal makes the introduction malformed. A withdrawal with reason "offline" is a hint
(the peer lost its control channel): the agent keeps a working session and ends only what is
still being set up.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass
from typing import Any

from enclave.discovery.candidates import (
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    Transport,
    candidate_allowed,
    check_candidate_host,
)
from enclave.policy.gateway import GatewayConfigError, GatewayGrant, GatewayOffer, grants_from_json

_KIND_NAMES = {k: k.name.lower().replace("_", "-") for k in CandidateKind}
_KIND_BY_NAME = {v: k for k, v in _KIND_NAMES.items()}
MAX_INTRO_CANDIDATES = 64  # more in one introduction: malformed
WITHDRAW_OFFLINE = "offline"  # the withdrawal reason that is only a hint (see above)


class IntroductionError(ValueError):
    """A malformed introduction or withdrawal from the control channel."""


@dataclass(frozen=True)
class Introduction:
    peer: str
    cert_der: bytes
    candidates: tuple[Candidate, ...]
    nat: NatBehaviour
    punch_at: float  # unix time (wall clock): the agent converts to its monotonic clock
    relay: PathAddr | None = None
    relay_ticket: bytes | None = None  # "this system may relay to `peer` until T", platform-made
    gateway: GatewayOffer | None = None  # `peer` is our gateway for these routes
    grants: tuple[GatewayGrant, ...] = ()  # `peer` may use us as its gateway for these

    def to_json(self) -> dict[str, Any]:
        out = self._base_json()
        if self.gateway is not None:
            out["gateway"] = self.gateway.to_json()
        if self.grants:
            out["grants"] = [g.to_json() for g in self.grants]
        return out

    def _base_json(self) -> dict[str, Any]:
        return {
            "type": "introduce",
            "peer": self.peer,
            "cert": base64.b64encode(self.cert_der).decode("ascii"),
            "nat": self.nat.value,
            "punch_at": self.punch_at,
            "candidates": [candidate_to_json(c) for c in self.candidates],
            "relay": addr_to_json(self.relay) if self.relay is not None else None,
            "relay_ticket": (
                base64.b64encode(self.relay_ticket).decode("ascii")
                if self.relay_ticket is not None
                else None
            ),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Introduction:
        try:
            if not isinstance(obj, dict) or obj.get("type") != "introduce":
                raise IntroductionError("not an introduction")
            peer = obj["peer"]
            if not isinstance(peer, str) or not peer or len(peer) > 64:
                raise IntroductionError("bad peer name")
            cert = base64.b64decode(obj["cert"], validate=True)
            candidates, _dropped = candidates_from_json(
                obj["candidates"], limit=MAX_INTRO_CANDIDATES, loopback=True)
            relay = obj.get("relay")
            ticket = obj.get("relay_ticket")
            if ticket is not None and (not isinstance(ticket, str) or len(ticket) > 1024):
                raise IntroductionError("bad relay ticket")
            return cls(
                peer=peer,
                cert_der=cert,
                candidates=candidates,
                nat=NatBehaviour(obj["nat"]),
                punch_at=float(obj["punch_at"]),
                relay=_relay_from_json(relay) if relay is not None else None,
                relay_ticket=(
                    base64.b64decode(ticket, validate=True) if ticket is not None else None
                ),
                gateway=(
                    GatewayOffer.from_json(obj["gateway"]) if obj.get("gateway") is not None
                    else None
                ),
                grants=grants_from_json(obj.get("grants")),
            )
        except IntroductionError:
            raise
        except GatewayConfigError as e:
            raise IntroductionError(f"bad gateway information: {e}") from e
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise IntroductionError(f"malformed introduction: {e!r}") from e


@dataclass(frozen=True)
class Withdrawal:
    peer: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "withdraw", "peer": self.peer, "reason": self.reason}

    @classmethod
    def from_json(cls, obj: Any) -> Withdrawal:
        if (
            not isinstance(obj, dict)
            or obj.get("type") != "withdraw"
            or not isinstance(obj.get("peer"), str)
            or not isinstance(obj.get("reason", ""), str)
        ):
            raise IntroductionError("malformed withdrawal")
        return cls(peer=obj["peer"], reason=obj.get("reason", ""))


def addr_to_json(addr: PathAddr) -> dict[str, Any]:
    return {"transport": addr.transport.value, "host": addr.host, "port": addr.port}


def addr_from_json(obj: Any) -> PathAddr:
    if not isinstance(obj, dict):
        raise IntroductionError("address is not an object")
    host, port = obj["host"], obj["port"]
    if (not isinstance(host, str) or len(host) > 255 or not isinstance(port, int)
            or isinstance(port, bool) or not 0 < port < 65536):
        raise IntroductionError("bad address")
    return PathAddr(Transport(obj["transport"]), host, port)


def candidate_to_json(c: Candidate) -> dict[str, Any]:
    return {**addr_to_json(c.addr), "kind": _KIND_NAMES[c.kind], "nat": c.nat.value}


def candidate_from_json(obj: Any) -> Candidate:
    addr = addr_from_json(obj)
    kind = _KIND_BY_NAME.get(obj.get("kind"))
    if kind is None:
        raise IntroductionError(f"bad candidate kind {obj.get('kind')!r}")
    return Candidate(addr, kind, NatBehaviour(obj.get("nat", NatBehaviour.UNKNOWN.value)))


def candidates_from_json(raw: object, *, limit: int, loopback: bool
                         ) -> tuple[tuple[Candidate, ...], int]:
    """The acceptable candidates of a JSON list, and how many were dropped for their host
    (not an IP literal, or an address check_candidate_host refuses). A list that is not a
    list, longer than `limit`, or holds a structurally malformed entry: IntroductionError."""
    if not isinstance(raw, list) or len(raw) > limit:
        raise IntroductionError("bad candidate list")
    parsed = [candidate_from_json(c) for c in raw]
    kept = tuple(
        dataclasses.replace(c, addr=c.addr._replace(host=check_candidate_host(
            c.addr.host, loopback=loopback)))
        for c in parsed if candidate_allowed(c, loopback=loopback)
    )
    return kept, len(parsed) - len(kept)


def _relay_from_json(obj: Any) -> PathAddr:
    addr = addr_from_json(obj)
    try:
        return addr._replace(host=check_candidate_host(addr.host, loopback=True))
    except ValueError as exc:
        raise IntroductionError(f"bad relay address: {exc}") from None
