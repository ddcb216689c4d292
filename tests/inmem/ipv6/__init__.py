"""IPv6 underlay: reflection over both families on loopback."""
