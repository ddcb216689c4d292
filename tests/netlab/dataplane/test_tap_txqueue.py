"""The TAP's transmit ring length follows its offload mode (enclave/dataplane/tap.py).

A TAP without offloads queues one <= MTU frame per ring entry, so its ring is shortened to
TXQUEUELEN_PLAIN (the kernel default 1000 is ~25 ms of bufferbloat on that path); with TSO
it stays at TXQUEUELEN_OFFLOAD. Checked in a private namespace through `ip -j link`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from enclave.dataplane import tap as tapmod
from enclave.dataplane.tap import TapDevice
from tests.support.scratch_ns import scratch_ns

pytestmark = [pytest.mark.netlab, pytest.mark.root]


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_ns("txq") as name:
        yield name


def _txqlen(ns: str, dev: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", dev],
                         check=True, capture_output=True, text=True, timeout=10).stdout
    return int(json.loads(out)[0]["txqlen"])


def test_plain_tap_gets_short_ring(ns: str) -> None:
    with TapDevice(netns=ns) as tap:
        assert tap.offload == 0
        assert tap.txqueuelen == tapmod.TXQUEUELEN_PLAIN
        assert _txqlen(ns, tap.name) == tapmod.TXQUEUELEN_PLAIN


def test_offload_tap_keeps_default_ring(ns: str) -> None:
    with TapDevice(vnet_hdr=True, netns=ns) as tap:
        expected = tapmod.TXQUEUELEN_OFFLOAD if tap.offload else tapmod.TXQUEUELEN_PLAIN
        assert tap.txqueuelen == expected
        assert _txqlen(ns, tap.name) == expected


def test_vnet_hdr_without_offload_gets_short_ring(ns: str) -> None:
    with TapDevice("enclave1", vnet_hdr=True, offload=False, netns=ns) as tap:
        assert tap.offload == 0
        assert _txqlen(ns, "enclave1") == tapmod.TXQUEUELEN_PLAIN
