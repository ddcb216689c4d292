"""The control channel between agent and platform: one home for its constants and messages.

WebSocket (text frames, one JSON object each) at CONTROL_PATH on the platform's HTTPS port. The
agent checks the TLS key pin before it signs anything.

    platform                                              agent
      {"type": "challenge", "v": 1, "nonce": b64(32)}  ->
                                                       <-  {"type": "hello", "name": N,
                                                             "signature": b64(Ed25519(
                                                               challenge_message(nonce, N, pin)))}
      checks: N exists, is active, holds a current unrevoked certificate, signature by N's key
      {"type": "welcome", "name": N, "time": unix, "discovery": {"udp": [A, B], "tcp": B},
       "crl": b64 DER, "crl_number": n}               ->      (or "error" + close 4401)

    then, pushed by the platform as things change (no polling):
      {"type": "introduce", ...}   enclave.discovery.introduction.Introduction
      {"type": "withdraw", "peer": P, "reason": "intent"|"revoked"|"disabled"|"expired"|"offline"}
                                   "offline" is a hint: a working session stays up
      {"type": "crl", "crl": b64 DER, "crl_number": n}
      {"type": "intents", "peers": [names this system holds intent for]}
      {"type": "policy_offer", "offer": {"statement", "signature"}}  CA-signed, op "policy"
      {"type": "renew"}            a certificate change (tags) waits: renew now
    and sent by the agent:
      {"type": "report", "candidates": [candidate JSON...], "nat": NatBehaviour value,
       "mappings": {"udp": ["ip:port", "ip:port"], "tcp": "ip:port" | null}}
                                   candidates: IP literals of kind private/public over udp/tcp
                                   only (others are dropped: enclave.discovery.candidates.
                                   check_candidate_host), at most 32; applied at most once a
                                   second per system, the newest waiting report winning
      {"type": "intent", "signed": {"statement", "signature"}}   counter-signed policy offer
    Keepalive: the agent pings every HEARTBEAT seconds and gives the channel up after
    SILENCE_TIMEOUT seconds without any frame from the platform (a busy platform, seconds late
    with its pong, is not dropped); the platform pings only an agent silent for
    PLATFORM_HEARTBEAT seconds (a live agent's pings keep it from doing so) and drops it when
    the pong is PLATFORM_HEARTBEAT / 2 late: an agent cut off is noticed within 22.5 s.
"""

from __future__ import annotations

CONTROL_PATH = "/v1/control"
INTENTS_PATH = "/v1/intents"
CHALLENGE_SIZE = 32
HEARTBEAT = 10.0  # seconds between the agent's pings
SILENCE_TIMEOUT = 30.0  # seconds without any frame from the platform: the agent reconnects
PLATFORM_HEARTBEAT = 15.0  # seconds of silence from an agent after which the platform pings
HELLO_TIMEOUT = 10.0
CLOSE_AUTH_FAILED = 4401
CLOSE_REPLACED = 4000
MAX_MESSAGE_BYTES = 256 * 1024
PUNCH_DELAY = 0.5  # seconds from introduction to the shared "punch at" time
_CHALLENGE_DOMAIN = b"enclave-control-v1\n"


def challenge_message(nonce: bytes, name: str, pin: str) -> bytes:
    """What the agent signs: bound to the challenge, its name and the TLS key it pinned."""
    return _CHALLENGE_DOMAIN + nonce + b"\n" + name.encode("ascii") + b"\n" + pin.encode("ascii")
