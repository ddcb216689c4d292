"""Pure parts of a platform on several nodes: the URL list in enrolment tokens and the store,
the agent's reconnect delays, the NOTIFY payload, presence rows."""

from __future__ import annotations

import base64
import json
import random

import pytest

from enclave.agent.control import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    FAILOVER_SPREAD,
    backoff_delay,
    control_urls,
    failover_delay,
)
from enclave.cert.enrolment import TOKEN_PREFIX, EnrolmentToken, TokenError, b64url
from enclave.discovery.candidates import (
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    Transport,
)
from enclave.platform.errors import InitError
from enclave.platform.fanout import MAX_PAYLOAD, Event, decode_event, encode_event
from enclave.platform.presence import Presence
from enclave.platform.urls import MAX_URLS, check_urls, decode_urls, encode_urls

PIN = "ab" * 32
SECRET = b"s" * 32


def _raw_token(body: dict[str, object]) -> str:
    return TOKEN_PREFIX + b64url(json.dumps(body).encode())


# -- tokens ------------------------------------------------------------------------------------

def test_token_carries_every_url_first_first() -> None:
    token = EnrolmentToken("https://a.example:8443", PIN, "k1", SECRET,
                           ("https://b.example:8443", "https://c.example:8443"))
    back = EnrolmentToken.decode(token.encode())
    assert back.urls == ("https://a.example:8443", "https://b.example:8443",
                         "https://c.example:8443")
    assert back == token


def test_old_single_url_token_still_parses() -> None:
    old = _raw_token({"u": "https://a.example:8443", "p": PIN, "k": "k1", "s": b64url(SECRET)})
    token = EnrolmentToken.decode(old)
    assert token.urls == ("https://a.example:8443",)
    body = token.encode()[len(TOKEN_PREFIX):]
    assert "us" not in json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


@pytest.mark.parametrize("case, us", [
    (1, "https://b:1"),                   # not a list
    (2, [1, 2]),                          # not strings
    (3, ["http://b:1"]),                  # not https
    (4, ["https://"]),                    # no host
    (5, ["https://b:1"] * 17),            # too many
])
def test_bad_url_lists_are_refused(case: int, us: object) -> None:
    raw = _raw_token({"u": "https://a:1", "p": PIN, "k": "k", "s": b64url(SECRET), "us": us})
    with pytest.raises(TokenError):
        EnrolmentToken.decode(raw)


def test_store_url_list() -> None:
    assert check_urls(["https://a:1", "https://b:2/", "https://a:1"]) == ["https://a:1",
                                                                          "https://b:2"]
    for bad in ([], ["https://a"], ["http://a:1"], ["https://a:1/path"],
                [f"https://h{i}:1" for i in range(MAX_URLS + 1)]):
        with pytest.raises(InitError):
            check_urls(bad)
    assert decode_urls(encode_urls(["https://a:1", "https://b:2"]), "x") == ["https://a:1",
                                                                              "https://b:2"]
    for broken in (None, "", "{", "[]", "[1]", '{"a": 1}'):
        assert decode_urls(broken, "https://first:1") == ["https://first:1"]


# -- reconnect delays --------------------------------------------------------------------------

def test_backoff_jitter_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        full = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(attempt, 16))
        for _ in range(50):
            delay = backoff_delay(attempt, rng)
            assert full * 0.5 <= delay <= full
    assert max(backoff_delay(100, rng) for _ in range(100)) <= BACKOFF_MAX


def test_failover_delays_spread_over_the_window() -> None:
    rng = random.Random(11)
    delays = [failover_delay(rng) for _ in range(10_000)]
    assert all(0.0 <= d <= FAILOVER_SPREAD for d in delays)
    # spread, not bunched: every tenth of the window gets some of a node's agents
    buckets = {min(9, int(d / FAILOVER_SPREAD * 10)) for d in delays}
    assert buckets == set(range(10))


def test_control_urls() -> None:
    assert control_urls(["https://a:1", "https://a:1/", "ftp://x:1", "https://[::1", "https://b:2"]
                        ) == ["wss://a:1/v1/control", "wss://b:2/v1/control"]
    assert control_urls("https://a:1") == ["wss://a:1/v1/control"]


# -- NOTIFY payloads ---------------------------------------------------------------------------

def test_event_round_trip() -> None:
    for event in (Event("presence", "h-1a2b", ("web-1", "db-2")), Event("change", "n", ())):
        assert decode_event(encode_event(event)) == event


def test_event_too_many_names_sends_none() -> None:
    event = Event("presence", "node", tuple(f"system-{i:05d}" for i in range(2000)))
    payload = encode_event(event)
    assert len(payload.encode()) <= MAX_PAYLOAD
    assert decode_event(payload) == Event("presence", "node", ())  # none: every system


@pytest.mark.parametrize("case, payload", [
    (1, ""), (2, "presence"), (3, "presence:"), (4, "other:node:a"), (5, ":node:a"),
    (6, "presence::a"), (7, "change:n:" + "a" * 9000),
])
def test_foreign_payloads_are_ignored(case: int, payload: str) -> None:
    assert decode_event(payload) is None


# -- presence rows -----------------------------------------------------------------------------

def test_presence_row_round_trip() -> None:
    p = Presence("web-1", "node-1",
                 (Candidate(PathAddr(Transport.UDP, "198.18.0.5", 51820), CandidateKind.PUBLIC,
                            NatBehaviour.ENDPOINT_INDEPENDENT),),
                 NatBehaviour.ENDPOINT_INDEPENDENT, False,
                 PathAddr(Transport.RELAY, "198.18.0.9", 3479))
    assert Presence.from_row("web-1", "node-1", p.report_json()) == p


@pytest.mark.parametrize("case, report", [
    (1, "not json"), (2, "[]"), (3, '{"c": "x"}'), (4, '{"n": "bogus"}'),
    (5, '{"r": {"host": 1}}'), (6, "[" * 100000),
])
def test_unreadable_presence_is_skipped(case: int, report: str) -> None:
    assert Presence.from_row("web-1", "node-1", report) is None
