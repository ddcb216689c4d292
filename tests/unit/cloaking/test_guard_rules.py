"""The data port guard's nftables text (enclave.policy.guard): pure rendering."""

from __future__ import annotations

import ipaddress

import pytest

from enclave.policy.guard import parse_hosts, ruleset, table_name, teardown_script


def test_only_ip_literals_join_the_set() -> None:
    got = parse_hosts(["198.18.1.1", "peer.example", "", "::1", "::ffff:198.18.2.2", "1.2.3"])
    assert got == {ipaddress.ip_address("198.18.1.1"), ipaddress.ip_address("::1"),
                   ipaddress.ip_address("198.18.2.2")}


def test_ruleset_admits_peers_and_drops_the_rest_of_the_port() -> None:
    text = ruleset(51820, parse_hosts(["198.18.2.1", "198.18.1.1", "fd00::1"]))
    lines = [line.strip() for line in text.splitlines()]
    # atomic replace: create-if-missing, delete, create
    assert lines[:3] == ["table inet enclave_guard_51820 {}",
                         "delete table inet enclave_guard_51820",
                         "table inet enclave_guard_51820 {"]
    assert "set peers4 { type ipv4_addr; elements = { 198.18.1.1, 198.18.2.1 }; }" in lines
    assert "set peers6 { type ipv6_addr; elements = { fd00::1 }; }" in lines
    rules = [x for x in lines if x.startswith("tcp dport")]
    assert rules == [
        "tcp dport 51820 ct state established,related accept",
        "tcp dport 51820 ip saddr @peers4 accept",
        "tcp dport 51820 ip6 saddr @peers6 accept",
        "tcp dport 51820 counter drop",  # last: a stranger's SYN gets neither SYN-ACK nor RST
    ]
    assert "hook input" in text and "policy accept" in text  # only the data port is touched


def test_empty_set_and_teardown() -> None:
    text = ruleset(40000, set())
    assert "set peers4 { type ipv4_addr; }" in text and "elements" not in text
    assert teardown_script(40000) == ("table inet enclave_guard_40000 {}\n"
                                      "delete table inet enclave_guard_40000\n")
    assert table_name(40000) == "enclave_guard_40000"
    with pytest.raises(ValueError):
        table_name(0)
