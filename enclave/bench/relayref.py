"""Stage "relay reference" of `enclave bench`: the overlay's per-byte work without the UDP leg.

The same two lab hosts get a second TAP each (``ceil0``, a /30 at the top of 100.64.0.0/10),
joined by :class:`enclave._fastpath.TapRelay` running in the bench process, which does the
overlay's per-byte work on the overlay's thread structure except the network leg (see the
drawing in ``_fp_relay.pxi``)::

    a1: iperf3 -c -> ceil0 =read=> [seal every 1420 B] =ring=> [open, write] => ceil0 :b1
                      (TapRelay: two threads a->b; two b->a for the ACKs)    iperf3 -s

Rows, single-stream TCP a1 -> b1, each against the raw path of the same run:

* ``relay_plain``: TAP in, TAP out, no AEAD (read/write and the TAPs' own costs);
* ``relay_aead`` (one per cipher): plus one seal and one open per overlay datagram's worth of
  bytes, i.e. both agents' AEAD work, with no sendmmsg/recvmmsg and no forwarding across the lab.

Every row uses the default overlay MTU (1398, segment 1412 B) whatever the cipher; an agent that
allows AEGIS-256 uses 1382 (its 32-byte tag), so its pieces are 16 bytes shorter than here.

A reference, not a bound: the relay's four threads live in one process (one scheduling group:
with autogroup, one session shares the CPU as one), where the overlay's live in two agents, and
other load on the machine weighs differently on each, so the overlay can come out above it; the
note gives the overlay / relay ratio of the same run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enclave.bench import flows

RELAY_IFNAME = "ceil0"
RELAY_A = "100.127.255.1/30"
RELAY_B = "100.127.255.2/30"


@dataclass
class RelayRow:
    cipher: str | None  # None: no AEAD
    gbit_s: float | None  # None: not measured (see note)
    frames: int
    open_failures: int
    note: str = ""


def segment_for(mtu: int) -> int:
    """Bytes sealed per overlay datagram: one inner Ethernet frame of an ``mtu``-byte packet."""
    return mtu + 14


def measure(a: Any, b: Any, *, ciphers: list[str], duration: float, offload: bool, mtu: int,
            progress: Callable[[str], None] = lambda _: None) -> list[RelayRow]:
    """Relay ceil0(a) <-> ceil0(b) once per mode (plain, then each cipher) and run one TCP
    stream a -> b over it. ``a``/``b``: lab hosts (``.netns``, ``.run``/``.popen``). A cipher
    the relay cannot run gives a row without a figure, saying so."""
    try:
        from enclave._fastpath import AeadKey, TapRelay
    except ImportError as exc:  # the stage fails with a reason; the run goes on
        raise RuntimeError(f"compiled fast path not available: {exc}") from exc
    # imported here: keeps `enclave` start-up fast (dataplane.tap loads pyroute2)
    from enclave.dataplane.tap import TapDevice

    rows: list[RelayRow] = []
    with TapDevice(RELAY_IFNAME, address=RELAY_A, mtu=mtu, vnet_hdr=offload,
                   offload=offload, netns=a.netns) as tap_a, \
         TapDevice(RELAY_IFNAME, address=RELAY_B, mtu=mtu, vnet_hdr=offload,
                   offload=offload, netns=b.netns) as tap_b:
        if tap_a.vnet_hdr != tap_b.vnet_hdr:
            raise RuntimeError("the two relay TAPs disagree on vnet_hdr")
        server = flows.start_iperf3_server(b)
        try:
            for cipher in [None, *ciphers]:
                progress(f"relay reference ({cipher or 'no AEAD'})")
                key = None if cipher is None else AeadKey(cipher, os.urandom(32))
                try:
                    relay = TapRelay(tap_a.fd, tap_b.fd, vnet_hdr=tap_a.vnet_hdr,
                                     passes=0 if key is None else 2, key=key,
                                     segment=segment_for(mtu))
                except ValueError as exc:  # a cipher TapRelay does not implement
                    rows.append(RelayRow(cipher, None, 0, 0, f"not measured: {exc}"))
                    continue
                with relay:
                    res = flows.tcp_throughput(a, RELAY_B.split("/")[0], duration=duration)
                counters = relay.counters()
                rows.append(RelayRow(cipher, res.gbit_s, sum(counters["frames"]),
                                     int(counters["failures"])))
        finally:
            flows.stop(server)
    return rows
