"""The read buffer of asyncio's TLS transport, sized for many long-lived connections.

asyncio.sslproto.SSLProtocol (Python 3.11) gives every TLS connection a zero-filled read buffer
of ``max_size`` = 256 KiB, allocated when the connection is made: with thousands of agents'
control channels that alone is 256 MB per 1,000 connections (and as much again in a load
generator holding their client ends). A TLS record carries at most 16 KiB of plaintext, so
TLS_READ_BUFFER per read loses nothing but a few more read() calls on a bulk transfer.
"""

from __future__ import annotations

from asyncio import sslproto

TLS_READ_BUFFER = 32 * 1024  # bytes per connection (asyncio's default: 256 KiB)


def shrink_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Every TLS connection this process makes from now on reads into ``size`` bytes."""
    sslproto.SSLProtocol.max_size = size
