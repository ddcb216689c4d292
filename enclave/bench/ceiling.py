"""Stage "ceiling" of `enclave bench`: what any TAP overlay can reach on this machine.

The same two lab hosts get a second TAP each (``ceil0``, a /30 at the top of 100.64.0.0/10),
joined by :class:`enclave._fastpath.TapRelay` running in the bench process, which does the
overlay's per-byte work except the network leg (see the drawing in ``_fp_relay.pxi``)::

    a1: iperf3 -c --> ceil0 ==read==> [seal + open every 1420 B] ==write==> ceil0 --> iperf3 -s :b1
                           (TapRelay thread a->b; b->a likewise for the ACKs)

Rows, single-stream TCP a1 -> b1, each against the raw path of the same run:

* ``ceiling_plain``: TAP in, TAP out, no AEAD (read/write and the TAPs' own costs);
* ``ceiling_<cipher>``: plus one seal and one open per overlay datagram's worth of bytes, i.e.
  both agents' AEAD work, with no sendmmsg/recvmmsg and no forwarding across the lab.

The overlay does strictly more work than the second row, so that row bounds it from above on
this machine; the note says how close the overlay came.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enclave.bench import flows

CEILING_IFNAME = "ceil0"
CEILING_A = "100.127.255.1/30"
CEILING_B = "100.127.255.2/30"


@dataclass
class CeilingRow:
    cipher: str | None  # None: no AEAD
    gbit_s: float
    frames: int
    open_failures: int


def segment_for(mtu: int) -> int:
    """Bytes sealed per overlay datagram: one inner Ethernet frame of an ``mtu``-byte packet."""
    return mtu + 14


def measure(a: Any, b: Any, *, ciphers: list[str], duration: float, offload: bool, mtu: int,
            progress: Callable[[str], None] = lambda _: None) -> list[CeilingRow]:
    """Relay ceil0(a) <-> ceil0(b) once per mode (plain, then each cipher) and run one TCP
    stream a -> b over it. ``a``/``b``: lab hosts (``.netns``, ``.run``/``.popen``)."""
    try:
        from enclave._fastpath import AeadKey, TapRelay
    except ImportError as exc:  # the stage fails with a reason; the run goes on
        raise RuntimeError(f"compiled fast path not available: {exc}") from exc
    # imported here: keeps `enclave` start-up fast (dataplane.tap loads pyroute2)
    from enclave.dataplane.tap import TapDevice

    rows: list[CeilingRow] = []
    with TapDevice(CEILING_IFNAME, address=CEILING_A, mtu=mtu, vnet_hdr=offload,
                   offload=offload, netns=a.netns) as tap_a, \
         TapDevice(CEILING_IFNAME, address=CEILING_B, mtu=mtu, vnet_hdr=offload,
                   offload=offload, netns=b.netns) as tap_b:
        if tap_a.vnet_hdr != tap_b.vnet_hdr:
            raise RuntimeError("the two ceiling TAPs disagree on vnet_hdr")
        server = flows.start_iperf3_server(b)
        try:
            for cipher in [None, *ciphers]:
                progress(f"ceiling ({cipher or 'no AEAD'})")
                key = None if cipher is None else AeadKey(cipher, os.urandom(32))
                relay = TapRelay(tap_a.fd, tap_b.fd, vnet_hdr=tap_a.vnet_hdr,
                                 passes=0 if key is None else 2, key=key,
                                 segment=segment_for(mtu))
                with relay:
                    res = flows.tcp_throughput(a, CEILING_B.split("/")[0], duration=duration)
                counters = relay.counters()
                rows.append(CeilingRow(cipher, res.gbit_s, sum(counters["frames"]),
                                       int(counters["failures"])))
        finally:
            flows.stop(server)
    return rows
