"""Protocol timers and limits (seconds / message counts).  Not wire constants: see wire.py."""

from __future__ import annotations

REKEY_AFTER_TIME = 120.0  # the session's initiator starts a fresh handshake after this
REKEY_RESPONDER_LAG = 10.0  # ... and the other side does if the initiator has not
REKEY_AFTER_MESSAGES = 2**32  # ... or after this many messages sent with one key
REJECT_AFTER_TIME = 180.0  # keys are never used (either way) after this age
REJECT_AFTER_MESSAGES = 2**64 - 2**16  # counter ceiling for one key
KEY_OVERLAP = 10.0  # old keys stay receive-only this long after the new keys took over

KEEPALIVE_MIN = 15.0  # idle sender sends a keepalive after U(KEEPALIVE_MIN, KEEPALIVE_MAX)
KEEPALIVE_MAX = 25.0
DEAD_PEER_PING_AFTER = 30.0  # nothing heard this long: ask for a reply every PING_INTERVAL
PING_INTERVAL = 2.0
DEAD_PEER_TIMEOUT = 40.0  # nothing heard this long: the peer is dead, the session closes

HANDSHAKE_RETRY_BASE = 1.0  # retries back off 1, 2, 4, 8, 16, 16 ... seconds (+ jitter)
HANDSHAKE_RETRY_MAX = 16.0
HANDSHAKE_MAX_ATTEMPTS = 8
HANDSHAKE_TIMEOUT = 5.0  # a responder forgets an unconfirmed handshake after this
MIN_REHANDSHAKE_INTERVAL = 5.0  # inits from a peer whose session is younger are ignored
# (unless they carry a certificate other than the session's: a renewal, Node.rehandshake)
MAX_RESPONSE_RESENDS = 8  # duplicate inits (punching on several paths) get the cached response
CONFIRM_RETRY = 0.5  # initiator repeats CONFIRM until the responder's first packet arrives
CONFIRM_MAX_SENDS = 10

CLOSE_SENDS = 3  # an authenticated CLOSE is sent this many times ...
CLOSE_INTERVAL = 0.25  # ... this far apart

RTT_PROBE_INTERVAL = 10.0  # rtt measurement on the current path (authenticated PROBE / REPLY)
RELAY_NUDGE_INTERVAL = 0.25  # after the relay channel is up, re-offer it until a session exists
RELAY_NUDGES = 40
RECONNECT_DELAY = 1.0  # after a session was lost (not closed locally) while the peer is wanted
PATH_SUSPECT_AFTER = 2.0  # sent since last hearing, nothing authentic heard this long: probe
PATH_PROBE_INTERVAL = 0.5  # the current path (authenticated PROBE) this often ...
PATH_PROBES = 4  # ... this many times unanswered: the path is dead, the session fails over

INIT_RATE_PER_SOURCE = 10.0  # handshake messages per second per source (INIT: per source IP)
INIT_BURST_PER_SOURCE = 20.0
INIT_RATE_PER_IDENTITY = 5.0  # INITs per second per claimed certificate (after MAC1)
INIT_BURST_PER_IDENTITY = 10.0
UNDER_LOAD_RATE = 250.0  # valid-MAC1 INITs offered faster than this (half the global limit) ...
UNDER_LOAD_BURST = 100.0
UNDER_LOAD_AFTER = 1.0  # ... put the responder under load for this long: cookies (MAC2) needed
COOKIE_SECRET_LIFETIME = 120.0  # the responder's cookie secret is replaced this often
COOKIE_LIFETIME = 115.0  # an initiator uses a cookie this long (a little less than the secret)
INIT_RATE_GLOBAL = 500.0  # and in total
INIT_BURST_GLOBAL = 200.0
RATE_LIMIT_TABLE = 4096  # source addresses tracked (LRU)
INIT_TIMESTAMP_TABLE = 4096  # peers whose latest accepted init timestamp is remembered (LRU)
