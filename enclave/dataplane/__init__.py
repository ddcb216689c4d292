"""Data-plane plumbing around the compiled fast path: the TAP device and MTU arithmetic.

The per-frame work (TSO split, GRO coalesce, AEAD, batched UDP I/O) lives in the
``enclave._fastpath`` extension; this package sets up what those loops operate on.
"""
