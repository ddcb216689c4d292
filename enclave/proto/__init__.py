"""Sans-I/O protocol cores: wire formats, handshake, sessions, timers (no sockets, no clocks).

Entry point: `enclave.proto.node.Node`; wire layouts: `enclave.proto.wire`.
"""
