"""Fuzz targets of the text/JSON parsers: enrolment token, control channel, HTTP bodies.

    token         EnrolmentToken.decode (enclave.cert.enrolment): raw text, "enclave1-" +
                  base64url of the case's bytes (the JSON body itself fuzzed), and valid tokens
                  with mutated fields; only TokenError escapes, a decoded token round-trips
    control_json  the WebSocket messages: parse_json (the platform's bounded JSON reader for
                  WebSocket text), then what each side does with an object -- the platform:
                  candidates_from_json (report), NatBehaviour, decode_signed (intent); the agent:
                  Introduction / Withdrawal / GatewayOffer / GatewayGrant .from_json; only the
                  errors the receivers catch may escape (ValueError family, KeyError,
                  TypeError, IntroductionError, IntentError)
    http_json     json_object (read_json's body check: 400 for anything not a JSON object of
                  bounded depth), then the request validators: str_field / str_list, intents
                  (decode_signed), policies (validate_policy, validate_gateway_policy),
                  gateway routes and ACLs (parse_routes, parse_acl); only ApiError 400 or the
                  validators' ValueError may escape

JSON cases come two ways: the case's bytes as the JSON text (libFuzzer is given a JSON
dictionary of tokens), or a JSON document of fuzz-chosen shape with realistic field names.
"""

from __future__ import annotations

import base64
import json

from bench.fuzz.harness import Factory, Reader
from enclave.cert.enrolment import EnrolmentToken, TokenError, b64url
from enclave.discovery.candidates import NatBehaviour
from enclave.discovery.introduction import (
    MAX_INTRO_CANDIDATES,
    Introduction,
    IntroductionError,
    Withdrawal,
    candidates_from_json,
)
from enclave.platform.app import json_object, parse_json, str_field, str_list
from enclave.platform.errors import ApiError
from enclave.platform.policy import validate_gateway_policy, validate_policy
from enclave.policy.gateway import GatewayGrant, GatewayOffer, parse_acl, parse_routes
from enclave.policy.intent import IntentError, decode_signed

PIN = "ab" * 32
GOOD_TOKEN = EnrolmentToken("https://198.18.0.1:8443", PIN, "key-1", bytes(range(32))).encode()
MULTI_TOKEN = EnrolmentToken("https://198.18.0.1:8443", PIN, "key-1", bytes(32),
                             ("https://198.18.0.2:8443", "https://[2001:db8::1]:443")).encode()
TOKEN_BODIES = [base64.urlsafe_b64decode(t[9:] + "=" * (-len(t[9:]) % 4))
                for t in (GOOD_TOKEN, MULTI_TOKEN)]
FIELDS = ("type", "peer", "cert", "candidates", "nat", "punch_at", "relay", "relay_ticket",
          "gateway", "grants", "reason", "host", "port", "transport", "kind", "statement",
          "signature", "signed", "name", "from", "to", "routes", "acl", "u", "p", "k", "s")
VALUES: tuple[object, ...] = (
    "introduce", "withdraw", "report", "intent", "udp", "tcp", "relay", "public", "private",
    "198.18.0.1", "::1", "127.0.0.1", "fe80::1", "host.example", "10.0.0.0/8", "0.0.0.0/0",
    "tcp:22", "udp:53-60", "unknown", "full-cone", "tag:web", "", "AAAA", 0, 1, 51820, 65536,
    -1, 1.5, True, None, [], {},
)


def fuzz_json(r: Reader, depth: int = 0) -> object:
    """A JSON-able value of fuzz-chosen shape, with the field names the receivers look for."""
    k = r.u8() % 8 if depth < 6 else 0
    if k <= 3:
        v = VALUES[r.u8() % len(VALUES)]
        return r.take(r.u8() % 24).decode("utf-8", "replace") if v == "" else v
    if k <= 5:
        return {FIELDS[r.u8() % len(FIELDS)]: fuzz_json(r, depth + 1) for _ in range(r.u8() % 6)}
    return [fuzz_json(r, depth + 1) for _ in range(r.u8() % 5)]


def json_case(r: Reader) -> bytes:
    if r.u8() % 2 == 0:
        return r.rest()
    return json.dumps(fuzz_json(r)).encode()


class TokenTarget:
    max_len = 2100

    def __init__(self, seed: int) -> None:
        self.decoded = 0

    def seeds(self) -> list[bytes]:
        return [bytes([0]) + GOOD_TOKEN.encode(), bytes([0]) + MULTI_TOKEN.encode(),
                *(bytes([1]) + b for b in TOKEN_BODIES), bytes([2, 0, 0]), bytes([2, 1, 0])]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        mode = r.u8() % 3
        if mode == 0:
            text = r.rest().decode("utf-8", "replace")
        elif mode == 1:
            text = "enclave1-" + b64url(r.rest())
        else:
            text = "enclave1-" + b64url(r.edits(TOKEN_BODIES[r.u8() % len(TOKEN_BODIES)]))
        try:
            tok = EnrolmentToken.decode(text)
        except TokenError:
            return
        self.decoded += 1
        assert EnrolmentToken.decode(tok.encode()) == tok

    def state(self) -> dict[str, tuple[int, int]]:
        return {}


class ControlJsonTarget:
    max_len = 4096

    def __init__(self, seed: int) -> None:
        pass

    def seeds(self) -> list[bytes]:
        intro = {"type": "introduce", "peer": "p", "cert": "AAAA", "nat": "unknown",
                 "punch_at": 1.0, "candidates": [{"transport": "udp", "host": "198.18.0.1",
                                                   "port": 51820, "kind": "public"}]}
        return [bytes([0]) + json.dumps(intro).encode(),
                bytes([0]) + b'{"type":"withdraw","peer":"p","reason":"offline"}',
                bytes([0]) + b'{"type":"report","candidates":[],"nat":"unknown"}']

    def one(self, data: bytes) -> None:
        r = Reader(data)
        text = json_case(r)
        try:
            msg = parse_json(text)
        except ValueError:  # UnicodeDecodeError, JSONDecodeError, JsonTooDeep
            return
        if not isinstance(msg, dict):
            return
        for parse in (self._platform_side, self._agent_side):
            try:
                parse(msg)
            except (ValueError, KeyError, TypeError, IntroductionError, IntentError, ApiError):
                pass

    @staticmethod
    def _platform_side(msg: dict[str, object]) -> None:
        for loopback in (False, True):
            try:
                kept, dropped = candidates_from_json(msg.get("candidates"), limit=32,
                                                     loopback=loopback)
                assert len(kept) + dropped <= 32
            except IntroductionError:
                pass
        try:
            NatBehaviour(str(msg.get("nat", "unknown")))
        except ValueError:
            pass
        decode_signed(msg.get("signed"))

    @staticmethod
    def _agent_side(msg: dict[str, object]) -> None:
        try:
            intro = Introduction.from_json(msg)
            assert len(intro.candidates) <= MAX_INTRO_CANDIDATES
        except IntroductionError:
            pass
        try:
            Withdrawal.from_json(msg)
        except IntroductionError:
            pass
        for cls in (GatewayOffer, GatewayGrant):
            try:
                cls.from_json(msg.get("gateway"))
            except (ValueError, KeyError, TypeError):
                pass

    def state(self) -> dict[str, tuple[int, int]]:
        return {}


class HttpJsonTarget:
    max_len = 8192

    def __init__(self, seed: int) -> None:
        pass

    def seeds(self) -> list[bytes]:
        return [bytes([0]) + b'{"name":"p1","from":"tag:web","to":"tag:db"}',
                bytes([0]) + b'{"statement":"e30=","signature":""}',
                bytes([0]) + b'{"routes":["10.0.0.0/8"],"acl":["tcp:22"]}', bytes([0]) + b"[[[]]]"]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        try:
            body = json_object(json_case(r))
        except ApiError as exc:
            assert exc.status == 400, exc
            return
        fields: list[str] = []
        for f in ("name", "from", "to", "gateway"):
            try:
                fields.append(str_field(body, f))
            except ApiError as exc:
                assert exc.status == 400
        for f in ("routes", "acl"):
            try:
                items = str_list(body, f)
            except ApiError as exc:
                assert exc.status == 400
                continue
            try:
                parse_routes(items) if f == "routes" else parse_acl(items)
            except ValueError:
                pass
        if len(fields) >= 3:
            try:
                validate_policy(*fields[:3])
            except ValueError:
                pass
            try:
                validate_gateway_policy(fields[0], fields[1], fields[2], "10.0.0.0/8", None)
            except ValueError:
                pass
        try:
            decode_signed(body)
        except IntentError:
            pass

    def state(self) -> dict[str, tuple[int, int]]:
        return {}


FACTORIES: dict[str, Factory] = {
    "token": TokenTarget, "control_json": ControlJsonTarget, "http_json": HttpJsonTarget,
}
