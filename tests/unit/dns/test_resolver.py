"""enclave.agent.dns_resolver: the name table -> reply for a query message (no sockets)."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from enclave.agent.dns_resolver import NameTable, respond

SELF_V4 = ipaddress.IPv4Address("100.64.0.2")
PEER_V4 = ipaddress.IPv4Address("100.64.0.3")
PEER_V6 = ipaddress.IPv6Address("fd7a:115c:a1e0::3")


@pytest.fixture
def table() -> NameTable:
    t = NameTable(owner="4T9GP")
    t.set("4T9GP", SELF_V4)
    t.set("3ZM8D", PEER_V4, PEER_V6)
    return t


def ask(table: NameTable, name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    wire = respond(table, query.to_wire())
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id
    return reply


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


# (case, name, type, rcode, answers)
CASES = [
    (1, "4T9GP.enclave.", "A", dns.rcode.NOERROR, ["100.64.0.2"]),
    (2, "4t9gp.ENCLAVE.", "A", dns.rcode.NOERROR, ["100.64.0.2"]),  # case-insensitive
    (3, "3zm8d.enclave.", "A", dns.rcode.NOERROR, ["100.64.0.3"]),
    (4, "3ZM8D.enclave.", "AAAA", dns.rcode.NOERROR, ["fd7a:115c:a1e0::3"]),
    (5, "4T9GP.enclave.", "AAAA", dns.rcode.NOERROR, []),  # no overlay IPv6: NODATA
    (6, "3ZM8D.enclave.", "ANY", dns.rcode.NOERROR, ["100.64.0.3", "fd7a:115c:a1e0::3"]),
    (7, "3ZM8D.enclave.", "MX", dns.rcode.NOERROR, []),
    (8, "XXXXX.enclave.", "A", dns.rcode.NXDOMAIN, []),
    (9, "www.3ZM8D.enclave.", "A", dns.rcode.NXDOMAIN, []),  # deeper labels do not exist
    (10, "example.com.", "A", dns.rcode.REFUSED, []),
    (11, "enclave.com.", "A", dns.rcode.REFUSED, []),
    (12, "enclave.", "A", dns.rcode.NOERROR, []),
]


@pytest.mark.parametrize(("case", "name", "rdtype", "rcode", "answers"), CASES,
                         ids=[str(c[0]) for c in CASES])
def test_answers(table: NameTable, case: int, name: str, rdtype: str, rcode: int,
                 answers: list[str]) -> None:
    reply = ask(table, name, rdtype)
    assert reply.rcode() == rcode, case
    assert addresses(reply) == answers, case
    assert not reply.flags & dns.flags.RA
    if rcode != dns.rcode.REFUSED:
        assert reply.flags & dns.flags.AA


def test_answers_carry_the_short_ttl(table: NameTable) -> None:
    assert [r.ttl for r in ask(table, "3ZM8D.enclave.").answer] == [30]


def test_unknown_name_reply_equals_the_reply_for_a_withdrawn_peer(table: NameTable) -> None:
    """Cloaking: a system that exists but is not (or no longer) introduced answers exactly like
    a name that exists nowhere: same rcode, same sections, byte for byte but the name."""
    table.remove("3ZM8D")
    gone = ask(table, "3ZM8D.enclave.")
    never = ask(table, "ZZZZZ.enclave.")
    assert gone.rcode() == never.rcode() == dns.rcode.NXDOMAIN
    assert gone.flags == never.flags
    assert [r.to_text() for r in gone.authority] == [r.to_text() for r in never.authority]
    assert gone.answer == never.answer == []


def test_set_replaces_and_remove_is_idempotent(table: NameTable) -> None:
    table.set("3zm8d", ipaddress.IPv4Address("100.64.9.9"))
    assert addresses(ask(table, "3ZM8D.enclave.")) == ["100.64.9.9"]
    table.remove("3ZM8D")
    table.remove("3ZM8D")
    assert table.names() == ["4t9gp"]


def test_edns_query_gets_edns_reply(table: NameTable) -> None:
    reply = ask(table, "3ZM8D.enclave.", use_edns=0)
    assert reply.edns == 0
    assert addresses(reply) == ["100.64.0.3"]


def test_notify_opcode_is_not_implemented(table: NameTable) -> None:
    query = dns.message.make_query("3ZM8D.enclave.", "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    wire = respond(table, query.to_wire())
    assert wire is not None
    assert dns.message.from_wire(wire).rcode() == dns.rcode.NOTIMP


def test_two_questions_get_formerr(table: NameTable) -> None:
    query = dns.message.make_query("3ZM8D.enclave.", "A")
    query.question.append(dns.message.make_query("4T9GP.enclave.", "A").question[0])
    wire = respond(table, query.to_wire())
    assert wire is not None
    assert dns.message.from_wire(wire).rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("wire", [b"", b"\x12", b"\x12\x34" + b"\x00" * 9])
def test_shorter_than_a_header_is_silence(table: NameTable, wire: bytes) -> None:
    assert respond(table, wire) is None


def test_a_response_is_never_answered(table: NameTable) -> None:
    query = dns.message.make_query("3ZM8D.enclave.", "A")
    response = dns.message.make_response(query)
    assert respond(table, response.to_wire()) is None


@pytest.mark.parametrize("body", [
    b"\xff" * 40,                                   # label lengths past the end
    b"\x00\x01\x00\x00\x00\x00\x00\x00\x07enclave",  # truncated question
    b"\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # compression loop
])
def test_malformed_body_gets_formerr_with_the_id(table: NameTable, body: bytes) -> None:
    wire = b"\xab\xcd\x01\x00" + body
    reply_wire = respond(table, wire)
    assert reply_wire is not None
    reply = dns.message.from_wire(reply_wire)
    assert reply.id == 0xABCD
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.flags & dns.flags.QR


def test_random_bytes_never_raise(table: NameTable) -> None:
    import random

    rng = random.Random(5)
    for _ in range(2000):
        wire = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        respond(table, wire)  # must not raise


def test_the_longest_name_still_fits_plain_udp(table: NameTable) -> None:
    """A 255-byte question name: the NXDOMAIN reply with its SOA stays within 512 bytes."""
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 53, "enclave", ""])
    reply = ask(table, name, "ANY", use_edns=0)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert len(reply.to_wire()) <= 512


OTHER_V4 = "100.64.0.4"


def ask_from(table: NameTable, name: str, asker: str | None) -> dns.message.Message:
    wire = respond(table, dns.message.make_query(name, "A").to_wire(), asker)
    assert wire is not None
    return dns.message.from_wire(wire)


@pytest.mark.parametrize(("case", "asker", "name", "answers"), [
    (1, None, "3ZM8D.enclave.", ["100.64.0.3"]),              # this system: everything
    (2, "100.64.0.2", "3ZM8D.enclave.", ["100.64.0.3"]),      # from its own overlay address
    (3, "100.64.0.3", "3ZM8D.enclave.", ["100.64.0.3"]),      # a peer asking its own name
    (4, "100.64.0.3", "4T9GP.enclave.", ["100.64.0.2"]),      # a peer asking the owner's
    (5, OTHER_V4, "3ZM8D.enclave.", []),                      # another peer's name: hidden
    (6, OTHER_V4, "4t9gp.enclave.", ["100.64.0.2"]),
    (7, "fd7a:115c:a1e0::3", "3ZM8D.enclave.", ["100.64.0.3"]),  # its overlay IPv6
    (8, "not an address", "3ZM8D.enclave.", []),
])
def test_who_sees_which_names(table: NameTable, case: int, asker: str | None, name: str,
                              answers: list[str]) -> None:
    reply = ask_from(table, name, asker)
    assert addresses(reply) == answers, case
    assert reply.rcode() == (dns.rcode.NOERROR if answers else dns.rcode.NXDOMAIN), case


def test_a_hidden_peer_looks_exactly_like_a_name_that_does_not_exist(table: NameTable) -> None:
    hidden = ask_from(table, "3ZM8D.enclave.", OTHER_V4)
    absent = ask_from(table, "ZZZZZ.enclave.", OTHER_V4)
    assert (hidden.rcode(), hidden.flags, hidden.answer) == (absent.rcode(), absent.flags,
                                                             absent.answer)
    assert [r.to_text() for r in hidden.authority] == [r.to_text() for r in absent.authority]
