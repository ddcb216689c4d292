"""enclave.agent.dns_server on loopback: UDP and TCP answers, framing, bounds, bad input;
AgentDns fills its table from introductions carrying real certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from enclave.agent.dns_resolved import ResolvedRoute
from enclave.agent.dns_resolver import NameTable
from enclave.agent.dns_server import AgentDns, DnsServer
from enclave.cert import create_ca, issue_system_certificate, verify_system_certificate
from enclave.cert.identity import SystemIdentity
from enclave.discovery.candidates import NatBehaviour
from enclave.discovery.introduction import Introduction

HOST = "127.0.0.1"


def serve(body: Callable[[DnsServer], Awaitable[None]], **kw: float) -> None:
    table = NameTable(owner="4T9GP")  # the server's own address: it asks from there
    table.set("4T9GP", ipaddress.IPv4Address(HOST))
    table.set("3ZM8D", ipaddress.IPv4Address("100.64.0.3"))

    async def main() -> None:
        server = DnsServer(table, HOST, 0, **kw)  # type: ignore[arg-type]
        await server.start()
        try:
            await body(server)
        finally:
            await server.close()

    asyncio.run(main())


def query_wire(name: str = "3ZM8D.enclave.") -> bytes:
    return dns.message.make_query(name, "A").to_wire()


def rcode_and_answers(wire: bytes) -> tuple[int, list[str]]:
    msg = dns.message.from_wire(wire)
    return msg.rcode(), [rd.to_text() for rrset in msg.answer for rd in rrset]


async def udp_ask(port: int, wire: bytes, timeout: float = 2.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        await loop.sock_sendto(s, wire, (HOST, port))
        try:
            return await asyncio.wait_for(loop.sock_recv(s, 4096), timeout)
        except TimeoutError:
            return None


async def tcp_frames(port: int, *messages: bytes) -> list[bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    for m in messages:
        writer.write(len(m).to_bytes(2, "big") + m)
    await writer.drain()
    out = []
    try:
        for _ in messages:
            size = int.from_bytes(await reader.readexactly(2), "big")
            out.append(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        pass
    writer.close()
    return out


def test_udp_answers_a_and_nxdomain() -> None:
    async def body(server: DnsServer) -> None:
        got = await udp_ask(server.port, query_wire())
        assert got is not None and rcode_and_answers(got) == (0, ["100.64.0.3"])
        got = await udp_ask(server.port, query_wire("NOPE1.enclave."))
        assert got is not None and rcode_and_answers(got) == (dns.rcode.NXDOMAIN, [])

    serve(body)


def test_udp_garbage_gets_silence_and_the_server_keeps_answering() -> None:
    async def body(server: DnsServer) -> None:
        assert await udp_ask(server.port, b"\x01", timeout=0.3) is None
        got = await udp_ask(server.port, query_wire())
        assert got is not None and rcode_and_answers(got)[1] == ["100.64.0.3"]

    serve(body)


def test_tcp_several_queries_on_one_connection() -> None:
    async def body(server: DnsServer) -> None:
        replies = await tcp_frames(server.port, query_wire(), query_wire("x.enclave."),
                                   query_wire("example.org."))
        assert [rcode_and_answers(r)[0] for r in replies] == [
            dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED]

    serve(body)


def test_tcp_with_dnspython_client() -> None:
    async def body(server: DnsServer) -> None:
        q = dns.message.make_query("3zm8d.enclave.", "A")
        reply = await asyncio.to_thread(dns.query.tcp, q, HOST, timeout=2, port=server.port)
        assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["100.64.0.3"]

    serve(body)


def test_tcp_malformed_frame_gets_formerr_then_a_response_frame_closes() -> None:
    async def body(server: DnsServer) -> None:
        bad = b"\x00\x07\x01\x00" + b"\xff" * 20
        response = dns.message.make_response(dns.message.make_query("a.enclave.", "A"))
        replies = await tcp_frames(server.port, bad, response.to_wire(), query_wire())
        assert len(replies) == 1  # FORMERR, then silence closes the connection
        assert dns.message.from_wire(replies[0]).rcode() == dns.rcode.FORMERR

    serve(body)


def test_tcp_connections_are_bounded_and_idle_ones_closed() -> None:
    async def body(server: DnsServer) -> None:
        held = [await asyncio.open_connection(HOST, server.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert server.tcp_connections == 2
        reader, writer = await asyncio.open_connection(HOST, server.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # over the limit: closed at once
        writer.close()
        for r, _w in held:  # idle: closed by the server after its timeout
            assert await asyncio.wait_for(r.read(), 5) == b""
        assert server.tcp_connections == 0
        for _r, w in held:
            w.close()

    serve(body, max_tcp=2, idle_timeout=0.3)


def test_a_half_sent_tcp_query_is_dropped_after_the_timeout() -> None:
    async def body(server: DnsServer) -> None:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(b"\x00\x40" + b"\x00" * 5)  # promises 64 bytes, sends 5
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    serve(body, idle_timeout=0.3)


def test_close_ends_open_tcp_connections() -> None:
    table = NameTable()

    async def main() -> None:
        server = DnsServer(table, HOST, 0)
        await server.start()
        reader, writer = await asyncio.open_connection(HOST, server.port)
        await asyncio.sleep(0.05)
        await server.close()
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert server.tcp_connections == 0
        writer.close()

    asyncio.run(main())


# -- AgentDns: the table from introductions ------------------------------------------------------

NOW = dt.datetime.now(dt.UTC)
CA_KEY, CA = create_ca("acme", now=NOW - dt.timedelta(days=1))


def cert(name: str, ip: str) -> bytes:
    c = issue_system_certificate(CA_KEY, CA, Ed25519PrivateKey.generate().public_key(),
                                 name=name, org="acme", overlay_ip=ipaddress.IPv4Address(ip),
                                 overlay_prefix=10, now=NOW - dt.timedelta(minutes=5),
                                 lifetime=dt.timedelta(days=1))
    return c.public_bytes(Encoding.DER)


def verify(der: bytes) -> SystemIdentity:
    return verify_system_certificate(der, CA, now=dt.datetime.now(dt.UTC))


def intro(peer: str, der: bytes) -> Introduction:
    return Introduction(peer=peer, cert_der=der, candidates=(), nat=NatBehaviour.UNKNOWN,
                        punch_at=0.0)


def agent_dns(tmp_path: Path) -> AgentDns:
    route = ResolvedRoute("lo", ipaddress.IPv4Address(HOST), runtime=tmp_path / "absent")
    return AgentDns("4T9GP", ipaddress.IPv4Address(HOST), "lo", verify, port=0, route=route)


def test_agent_dns_names_itself_and_introduced_peers(tmp_path: Path) -> None:
    d = agent_dns(tmp_path)
    d.introduce(intro("3ZM8D", cert("3ZM8D", "100.64.0.3")))
    assert d.table.names() == ["3zm8d", "4t9gp"]

    async def main() -> None:
        assert await d.start()
        try:
            got = await udp_ask(d.server.port, query_wire("3zm8d.enclave."))
            assert got is not None and rcode_and_answers(got) == (0, ["100.64.0.3"])
            d.withdraw("3ZM8D")
            got = await udp_ask(d.server.port, query_wire("3zm8d.enclave."))
            assert got is not None and rcode_and_answers(got) == (dns.rcode.NXDOMAIN, [])
            got = await udp_ask(d.server.port, query_wire("4T9GP.enclave."))
            assert got is not None and rcode_and_answers(got) == (0, [HOST])
        finally:
            await d.stop()

    asyncio.run(main())


def test_agent_dns_ignores_bad_or_mismatched_certificates(tmp_path: Path) -> None:
    d = agent_dns(tmp_path)
    d.introduce(intro("3ZM8D", cert("7QQQQ", "100.64.0.9")))  # someone else's certificate
    d.introduce(intro("3ZM8D", b"\x30\x03garbage"))
    assert d.table.names() == ["4t9gp"]
    d.withdraw("4T9GP")  # a withdrawal never removes this system's own name
    assert d.table.names() == ["4t9gp"]


def test_agent_dns_start_reports_a_port_in_use(tmp_path: Path) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            s.listen()
            port = s.getsockname()[1]
            d = AgentDns("4T9GP", ipaddress.IPv4Address(HOST), "lo", verify, port=port,
                         route=ResolvedRoute("lo", ipaddress.IPv4Address(HOST),
                                             runtime=tmp_path / "absent"))
            assert await d.start() is False
            assert not d.serving

    asyncio.run(main())
