"""NAT behaviour in RFC 4787 words and the familiar names, from what `enclave netcheck` saw (pure).

Mapping (RFC 4787 section 4.1) -- the reflected address of one local socket towards the
reflector's two UDP ports (enclave.agent.discovery.classify):

    same mapping, equal to a local address+port      none (no NAT)
    same mapping for both ports                      endpoint-independent
    a new mapping per destination port                address-and-port-dependent

Filtering (RFC 4787 section 5) -- from a fresh socket that sent only to the reflector's port A,
which unsolicited replies come back:

    reply from another address (and port)            endpoint-independent
    reply from port B of the same address only       address-dependent
    no reply from port B                              address-and-port-dependent
    port B's reply passes, no other address offered  endpoint-independent or address-dependent

Familiar names (RFC 3489's): endpoint-independent mapping with endpoint-independent /
address-dependent / address-and-port-dependent filtering is a full cone / restricted cone /
port-restricted cone; any other mapping is symmetric.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from enclave.discovery.candidates import NatBehaviour


class Filtering(StrEnum):
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    NOT_PORT_DEPENDENT = "endpoint-independent or address-dependent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FilteringResult:
    behaviour: Filtering
    note: str | None = None  # why it is not more precise


def classify_filtering(
    plain_reply: bool, other_port_reply: bool, other_address_reply: bool | None
) -> FilteringResult:
    """`plain_reply`: the filtering socket's own request got its normal answer (the path works);
    `other_port_reply`: the reply from the reflector's other port came in;
    `other_address_reply`: the reply from its other address came in (None: not offered)."""
    if not plain_reply:
        return FilteringResult(Filtering.UNKNOWN, "no reply from the reflector over UDP")
    if other_address_reply:
        return FilteringResult(Filtering.ENDPOINT_INDEPENDENT)
    if not other_port_reply:
        return FilteringResult(Filtering.ADDRESS_AND_PORT_DEPENDENT)
    if other_address_reply is None:
        return FilteringResult(
            Filtering.NOT_PORT_DEPENDENT,
            "the platform has no second address to reply from "
            "(ENCLAVE_DISCOVERY_ALT_ADDRESS), so endpoint-independent and address-dependent "
            "filtering look alike")
    return FilteringResult(Filtering.ADDRESS_DEPENDENT)


_CONE = {
    Filtering.ENDPOINT_INDEPENDENT: "full cone",
    Filtering.ADDRESS_DEPENDENT: "restricted cone",
    Filtering.ADDRESS_AND_PORT_DEPENDENT: "port-restricted cone",
    Filtering.NOT_PORT_DEPENDENT: "full cone or restricted cone",
    Filtering.UNKNOWN: "cone (filtering unknown)",
}


def nat_name(mapping: NatBehaviour, filtering: Filtering) -> str:
    """The familiar name of a (mapping, filtering) pair."""
    if mapping is NatBehaviour.NONE:
        if filtering is Filtering.ENDPOINT_INDEPENDENT:
            return "no NAT (open)"
        if filtering is Filtering.UNKNOWN:
            return "no NAT"
        return "no NAT, firewalled"
    if mapping is NatBehaviour.ENDPOINT_INDEPENDENT:
        return _CONE[filtering]
    if mapping in (NatBehaviour.ADDRESS_DEPENDENT, NatBehaviour.SYMMETRIC):
        return "symmetric"
    return "unknown"
