"""`enclave status` shows the overlay IPv6 under the overlay IP (and not at all without one)."""

from __future__ import annotations

from enclave.agent.statusfmt import self_lines


def test_status_text_shows_the_overlay_ipv6() -> None:
    lines = self_lines({"name": "V88RY", "org": "acme", "overlay_ip": "100.64.0.7",
                        "overlay_ip6": "fd7f:75e3:1e7e::6440:7"})
    assert lines[1:3] == ["overlay ip   100.64.0.7", "overlay ip6  fd7f:75e3:1e7e::6440:7"]
    off = self_lines({"overlay_ip": "100.64.0.7", "overlay_ip6": "fd7f:75e3:1e7e::6440:7",
                      "dataplane": {"tap": "enclave0", "address6": None}})
    assert off[2] == "overlay ip6  fd7f:75e3:1e7e::6440:7 (not on the TAP: IPv6 is off)"
    old = self_lines({"name": "V88RY", "org": "acme", "overlay_ip": "100.64.0.7"})
    assert not any("ip6" in line for line in old)
