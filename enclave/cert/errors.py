"""Errors raised by the certificate core. Messages say why, never include key material."""

from __future__ import annotations


class CertificateError(Exception):
    """A certificate, CSR or revocation list is malformed, expired, revoked or from the wrong CA."""


class KeyStoreError(Exception):
    """A private key file is missing, corrupt, or not decryptable with its key-encryption key."""
