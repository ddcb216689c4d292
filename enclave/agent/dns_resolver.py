"""The agent's DNS answers for `NAME.enclave`, sans I/O: a name table, query bytes -> reply.

    NameTable  <- this system (the owner) + every introduced peer (set / remove by system name)
        |
    respond(table, query_wire, asker) -> reply_wire | None      (dnspython messages)

What it answers (authoritative for the zone `enclave.`, no recursion):
  * `NAME.enclave.` for a name in the table (case-insensitive): A -> the overlay IPv4,
    AAAA -> the overlay IPv6 when there is one (else an empty NOERROR answer), ANY -> both;
    other types -> an empty NOERROR answer.
  * `enclave.` itself: its SOA (type SOA or ANY), otherwise an empty NOERROR answer.
  * any other name under `enclave.` (unknown, withdrawn, never introduced, or deeper labels):
    NXDOMAIN. The table only holds introduced systems, so an existing system that was not
    introduced gets exactly the reply of a name that exists nowhere (cloaking); negative replies
    carry the constant SOA, whose serial never changes, so nothing tells them apart.
  * names outside `enclave.`, other classes than IN: REFUSED; opcodes other than QUERY: NOTIMP.

Who sees what (`asker`, the query's source address): the owner itself (a query from its own
overlay address, or asker None) sees the whole table. Anyone else, such as a peer asking over the
overlay, sees only the owner's name and its own (a name whose address is the asker's): the
owner's other peers were introduced to the owner, not to the asker, so for the asker they get
the NXDOMAIN of a name that does not exist, and the table cannot be enumerated from outside.

Error contract: never raises for any input bytes. A message too short to hold a header, or one
that is itself a response (QR set), gets no reply (None); a parseable header with a malformed
body gets FORMERR, as does a query with other than one question.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ZONE = dns.name.from_text("enclave.")
TTL = 30  # seconds: introductions and withdrawals change the table at any time
SOA_TEXT = "enclave. hostmaster.enclave. 1 3600 600 86400 30"
HEADER_LEN = 12
PLAIN_UDP_SIZE = 512


@dataclass(frozen=True)
class Record:
    """What `NAME.enclave` resolves to: the system's overlay addresses."""

    v4: ipaddress.IPv4Address
    v6: ipaddress.IPv6Address | None = None


class NameTable:
    """System name -> Record, for this system (`owner`) and the peers it has been introduced to."""

    def __init__(self, owner: str = "") -> None:
        self.owner = owner.lower()
        self._records: dict[str, Record] = {}

    def set(self, name: str, v4: ipaddress.IPv4Address,
            v6: ipaddress.IPv6Address | None = None) -> None:
        self._records[name.lower()] = Record(v4, v6)

    def remove(self, name: str) -> None:
        self._records.pop(name.lower(), None)

    def get(self, name: str) -> Record | None:
        return self._records.get(name.lower())

    def lookup(self, name: str, asker: str | None) -> Record | None:
        """The record of `name` as `asker` may see it (see the module docstring)."""
        record = self.get(name)
        if record is None or asker is None or name.lower() == self.owner:
            return record
        try:
            source = ipaddress.ip_address(asker)
        except ValueError:
            return None
        own = self._records.get(self.owner)
        if own is not None and source in (own.v4, own.v6):
            return record
        return record if source in (record.v4, record.v6) else None

    def names(self) -> list[str]:
        return sorted(self._records)

    def __len__(self) -> int:
        return len(self._records)


def respond(table: NameTable, wire: bytes, asker: str | None = None) -> bytes | None:
    """The reply to one DNS message `wire` from address `asker` (None: this system itself),
    or None when it deserves silence.

    Every reply fits the 512 bytes of plain DNS over UDP (one question of at most 255 bytes, at
    most one A and one AAAA record or one SOA, names compressed), so none is ever truncated.
    """
    if len(wire) < HEADER_LEN or wire[2] & 0x80:  # no header, or a response: never answer
        return None
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # DNSException, and plain ValueError/IndexError on some garbage
        return _formerr(wire)
    return _answer(table, query, asker).to_wire(max_size=PLAIN_UDP_SIZE)


def _answer(table: NameTable, query: dns.message.Message,
            asker: str | None) -> dns.message.Message:
    reply = dns.message.make_response(query, recursion_available=False)
    if query.opcode() != dns.opcode.QUERY:
        reply.set_rcode(dns.rcode.NOTIMP)
        return reply
    if len(query.question) != 1:
        reply.set_rcode(dns.rcode.FORMERR)
        return reply
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if question.rdclass != dns.rdataclass.IN or not qname.is_subdomain(ZONE):
        reply.set_rcode(dns.rcode.REFUSED)
        return reply
    reply.flags |= dns.flags.AA
    labels = qname.relativize(ZONE).labels
    if qname == ZONE:
        if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            reply.answer.append(_soa())
        else:
            reply.authority.append(_soa())
        return reply
    record = table.lookup(_label_text(labels[0]), asker) if len(labels) == 1 else None
    if record is None:
        reply.set_rcode(dns.rcode.NXDOMAIN)
        reply.authority.append(_soa())
        return reply
    if qtype in (dns.rdatatype.A, dns.rdatatype.ANY):
        reply.answer.append(dns.rrset.from_text(qname, TTL, "IN", "A", str(record.v4)))
    if qtype in (dns.rdatatype.AAAA, dns.rdatatype.ANY) and record.v6 is not None:
        reply.answer.append(dns.rrset.from_text(qname, TTL, "IN", "AAAA", str(record.v6)))
    if not reply.answer:
        reply.authority.append(_soa())  # the name exists, the type does not (NODATA)
    return reply


def _label_text(label: bytes) -> str:
    return label.decode("ascii", errors="replace")


def _soa() -> dns.rrset.RRset:
    return dns.rrset.from_text(ZONE, TTL, "IN", "SOA", SOA_TEXT)


def _formerr(wire: bytes) -> bytes:
    """FORMERR echoing the query's id and opcode (the body could not be parsed)."""
    reply = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    reply.flags = dns.flags.QR
    reply.set_opcode(dns.opcode.from_flags(int.from_bytes(wire[2:4], "big")))
    reply.set_rcode(dns.rcode.FORMERR)
    return reply.to_wire()
