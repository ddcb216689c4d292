"""IPv6 underlay tests: real agents and a real platform over IPv6 in netlab."""
