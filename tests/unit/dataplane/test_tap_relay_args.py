"""TapRelay refuses a bad configuration before it touches any fd."""

from __future__ import annotations

import os

import pytest

from enclave._fastpath import AeadKey, TapRelay
from enclave.bench.relayref import segment_for


def test_bad_arguments_are_refused() -> None:
    key = AeadKey("aes256gcm", os.urandom(32))
    with pytest.raises(ValueError, match="passes"):
        TapRelay(-1, -1, vnet_hdr=False, passes=3, key=key)
    with pytest.raises(ValueError, match="AeadKey"):
        TapRelay(-1, -1, vnet_hdr=False, passes=2)
    with pytest.raises(ValueError, match="segment"):
        TapRelay(-1, -1, vnet_hdr=False, passes=1, key=key, segment=10)
    with pytest.raises(ValueError, match="segment"):
        TapRelay(-1, -1, vnet_hdr=False, passes=1, key=key, segment=70000)


def test_counters_start_at_zero_and_stop_without_start_is_harmless() -> None:
    relay = TapRelay(-1, -1, vnet_hdr=True, passes=0)
    assert relay.counters() == {"frames": [0, 0], "bytes": [0, 0], "failures": 0,
                                "write_errors": 0}
    relay.stop()


def test_segment_is_one_inner_frame() -> None:
    assert segment_for(1406) == 1420
