"""enclave: a self-hostable peer-to-peer L2 network fabric."""

__version__ = "0.1.0"
