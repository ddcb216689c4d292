"""The read buffer of asyncio's TLS transport: small for many long-lived connections, large for
the few that carry bulk data.

asyncio.sslproto.SSLProtocol (Python 3.11) gives every TLS connection a zero-filled read buffer
of ``max_size`` = 256 KiB, allocated when the connection is made: with thousands of agents'
control channels that alone is 256 MB per 1,000 connections (and as much again in a load
generator holding their client ends). A TLS record carries at most 16 KiB of plaintext, so
TLS_READ_BUFFER per read loses nothing but a few more read() calls on a bulk transfer.

A relay-over-TLS connection is such a bulk transfer: every socket read costs a pass through
asyncio's TLS layer in Python (selector event, recv_into, the memory BIO, the reads of the
records, the protocol's buffer_updated), so 32 KiB reads spend several times the CPU per GB of
256 KiB ones.  widen_tls_read_buffer gives one connection BULK_TLS_READ_BUFFER back.
"""

from __future__ import annotations

import asyncio
from asyncio import sslproto

TLS_READ_BUFFER = 32 * 1024  # bytes per connection (asyncio's default: 256 KiB)
BULK_TLS_READ_BUFFER = 256 * 1024  # a relay-over-TLS connection's


def shrink_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Every TLS connection this process makes from now on reads into ``size`` bytes."""
    sslproto.SSLProtocol.max_size = size


def widen_tls_read_buffer(transport: asyncio.BaseTransport,
                          size: int = BULK_TLS_READ_BUFFER) -> None:
    """This one connection reads up to ``size`` bytes per socket read from now on (asyncio's
    TLS transport; any other transport is left as it is)."""
    if isinstance(transport, sslproto._SSLProtocolTransport):
        proto = transport._ssl_protocol
        if proto is not None:  # an instance attribute over the class's: this connection only
            proto.__dict__["max_size"] = size
