"""SSDP search answers (enclave.agent.ssdp): the parser's verdict on well-formed and malformed
answers, and search() over real loopback sockets (the "gateway" is 127.0.0.1, answering the
M-SEARCH unicast; strangers answer from 127.0.0.2): only the gateway's answer with a LOCATION on
the gateway is taken, junk never raises, and at most MAX_ANSWERS datagrams are read."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from enclave.agent import ssdp

IGD1, IGD2 = ssdp.SEARCH_TARGETS
GOOD = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: " + IGD1.encode()
        + b"\r\nUSN: uuid:1::x\r\nEXT:\r\nLOCATION: http://198.19.1.1:5000/rootDesc.xml\r\n\r\n")


def _answer(*headers: str, status: str = "HTTP/1.1 200 OK", end: str = "\r\n") -> bytes:
    return end.join([status, *headers, "", ""]).encode("latin-1")


LOC = "LOCATION: http://198.19.1.1:5000/rootDesc.xml"


@pytest.mark.parametrize(("data", "st", "location"), [
    (GOOD, IGD1, "http://198.19.1.1:5000/rootDesc.xml"),
    (_answer(f"ST: {IGD2}", LOC), IGD2, "http://198.19.1.1:5000/rootDesc.xml"),
    (_answer(f"st:{IGD1}", "Location:\thttp://198.19.1.1/d.xml "), IGD1, "http://198.19.1.1/d.xml"),
    (_answer(f"ST: {IGD1}", LOC, end="\n"), IGD1, "http://198.19.1.1:5000/rootDesc.xml"),
    (_answer(f"ST: {IGD1}", LOC, status="HTTP/1.0 200 OK"), IGD1,
     "http://198.19.1.1:5000/rootDesc.xml"),
    # what follows the empty line is not a header
    (_answer(f"ST: {IGD1}", LOC) + b"LOCATION: http://198.19.1.12/x\r\n", IGD1,
     "http://198.19.1.1:5000/rootDesc.xml"),
])
def test_well_formed_answers_parse(data: bytes, st: str, location: str) -> None:
    assert ssdp.parse_answer(data) == ssdp.Answer(st, location)


MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("binary", bytes(range(256))),
    ("nul in a header", GOOD.replace(b"EXT:", b"EXT:\x00")),
    ("non-ascii location", _answer(f"ST: {IGD1}", "LOCATION: http://198.19.1.1/\u00e9")),
    ("utf-8 bytes", GOOD.replace(b"max-age", "m\u00e4x".encode())),
    ("no location", _answer(f"ST: {IGD1}")),
    ("empty location", _answer(f"ST: {IGD1}", "LOCATION:")),
    ("two locations", _answer(f"ST: {IGD1}", LOC, "LOCATION: http://198.19.1.12/x")),
    ("location after the header block", _answer(f"ST: {IGD1}", "") + LOC.encode() + b"\r\n"),
    ("huge location", _answer(f"ST: {IGD1}", "LOCATION: http://198.19.1.1/" + "a" * 300)),
    ("tab inside the location", _answer(f"ST: {IGD1}", "LOCATION: http://198.19.1.1/\tx")),
    ("lone CR splitting a line", _answer(f"ST: {IGD1}", LOC + "\rLOCATION: http://a/")),
    ("no ST", _answer(LOC)),
    ("other ST", _answer("ST: upnp:rootdevice", LOC)),
    ("ssdp:all ST", _answer("ST: ssdp:all", LOC)),
    ("two STs", _answer(f"ST: {IGD1}", f"ST: {IGD2}", LOC)),
    ("not 200", _answer(f"ST: {IGD1}", LOC, status="HTTP/1.1 404 Not Found")),
    ("not HTTP", _answer(f"ST: {IGD1}", LOC, status="NOTIFY * HTTP/1.1")),
    ("an M-SEARCH", ssdp.m_search(IGD1)),
    ("HTTP/2", _answer(f"ST: {IGD1}", LOC, status="HTTP/2 200 OK")),
    ("status line only", b"HTTP/1.1 200 OK"),
    ("header without colon", _answer(f"ST: {IGD1}", LOC, "garbage")),
    ("header name with space", _answer(f"ST: {IGD1}", "LOCATION : http://198.19.1.1/x")),
    ("folded header line", _answer(f"ST: {IGD1}", LOC, " continued")),
    ("empty header name", _answer(f"ST: {IGD1}", LOC, ": x")),
    ("over MAX_ANSWER_BYTES", GOOD + b"X" * ssdp.MAX_ANSWER_BYTES),
    ("many headers", _answer(f"ST: {IGD1}", LOC, *(["X: y"] * 400))),
]


@pytest.mark.parametrize("data", [d for _, d in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_answers_are_none(data: bytes) -> None:
    assert ssdp.parse_answer(data) is None


def test_wrong_locations_parse_but_are_not_the_gateway_s() -> None:
    """The parser reads LOCATION as given; gateway_url then decides (its own table is in
    test_upnp_gateway_url.py)."""
    for url in ("https://198.19.1.1/x", "http://198.19.1.12:5000/x", "http://router/x",
                "file:///etc/passwd", "http://198.19.1.1@198.19.1.12/x"):
        got = ssdp.parse_answer(_answer(f"ST: {IGD1}", f"LOCATION: {url}"))
        assert got is not None and got.location == url
        assert not ssdp.gateway_url(got.location, "198.19.1.1")


# -- search() over loopback -------------------------------------------------------------------

Replier = Callable[[socket.socket, socket.socket, tuple[str, int]], None]


@pytest.fixture
def gateway() -> Iterator[Callable[[Replier], int]]:
    """start(reply) -> port: a UDP "gateway" on 127.0.0.1 that calls reply(gateway socket,
    stranger socket on 127.0.0.2, client address) on the first M-SEARCH it gets."""
    socks: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(reply: Replier) -> int:
        gw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.extend((gw, stranger))
        gw.bind(("127.0.0.1", 0))
        stranger.bind(("127.0.0.2", 0))
        gw.settimeout(5)

        def serve() -> None:
            try:
                data, addr = gw.recvfrom(2048)
            except OSError:
                return
            if data.startswith(b"M-SEARCH"):
                reply(gw, stranger, addr)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return int(gw.getsockname()[1])

    yield start
    for t in threads:  # the reply may still be sending after the search ended: then close
        t.join(5)
    for s in socks:
        s.close()


def _search(port: int, wait_ms: int = 1000) -> tuple[str | None, list[tuple[str, str]]]:
    ignored: list[tuple[str, str]] = []
    got = ssdp.search("127.0.0.1", wait_ms, group="127.0.0.1", port=port,
                      on_ignored=lambda src, loc: ignored.append((src, loc)))
    return got, ignored


def _loc(host: str) -> bytes:
    return _answer(f"ST: {IGD1}", f"LOCATION: http://{host}:5000/rootDesc.xml")


def test_the_gateway_s_answer_is_taken_after_strangers_and_junk(
        gateway: Callable[[Replier], int]) -> None:
    def reply(gw: socket.socket, stranger: socket.socket, to: tuple[str, int]) -> None:
        stranger.sendto(_loc("127.0.0.2"), to)  # a LAN host naming itself
        stranger.sendto(_loc("127.0.0.1"), to)  # ... or naming the gateway
        gw.sendto(_loc("127.0.0.2"), to)  # the gateway's address, a LOCATION elsewhere
        for _, junk in MALFORMED:
            gw.sendto(junk[:60000], to)
        gw.sendto(b"Y" * 9000, to)  # truncated on receipt
        gw.sendto(_loc("127.0.0.1"), to)

    got, ignored = _search(gateway(reply))
    assert got == "http://127.0.0.1:5000/rootDesc.xml"
    assert ignored == [("127.0.0.2", "http://127.0.0.2:5000/rootDesc.xml"),
                       ("127.0.0.2", "http://127.0.0.1:5000/rootDesc.xml"),
                       ("127.0.0.1", "http://127.0.0.2:5000/rootDesc.xml")]


def test_only_strangers_answer_means_no_igd(gateway: Callable[[Replier], int]) -> None:
    def reply(gw: socket.socket, stranger: socket.socket, to: tuple[str, int]) -> None:
        stranger.sendto(_loc("127.0.0.2"), to)

    got, ignored = _search(gateway(reply), wait_ms=300)
    assert got is None and ignored == [("127.0.0.2", "http://127.0.0.2:5000/rootDesc.xml")]


def test_at_most_max_answers_datagrams_are_read(gateway: Callable[[Replier], int]) -> None:
    """A flood ends the search after MAX_ANSWERS datagrams: the gateway's answer behind it is
    never read (and nothing is kept of the flood)."""
    def reply(gw: socket.socket, stranger: socket.socket, to: tuple[str, int]) -> None:
        for _ in range(ssdp.MAX_ANSWERS):
            stranger.sendto(_loc("127.0.0.2"), to)
        gw.sendto(_loc("127.0.0.1"), to)

    got, ignored = _search(gateway(reply))
    assert got is None and len(ignored) == ssdp.MAX_ANSWERS


def test_no_answer_is_none(gateway: Callable[[Replier], int]) -> None:
    got, ignored = _search(gateway(lambda gw, stranger, to: None), wait_ms=200)
    assert got is None and ignored == []


def test_an_unreachable_gateway_is_none() -> None:
    assert ssdp.search("not an address", 100) is None
    assert ssdp.search("", 100) is None
