"""Private keys encrypted at rest.

A private key is stored as encrypted PKCS#8 PEM ("BEGIN ENCRYPTED PRIVATE KEY": PBES2, PBKDF2 +
AES-256-CBC, via `cryptography`). The key-encryption passphrase comes from, in order:

  1. the environment variable (ENCLAVE_KEY_PASSPHRASE for agents,
     ENCLAVE_PLATFORM_KEY_PASSPHRASE for the platform)
  2. a systemd credential: $CREDENTIALS_DIRECTORY/enclave-key-passphrase
     (resp. enclave-platform-key-passphrase)
  3. a separate 0600 key-encryption-key file (random 256-bit, base64), created when the key is
     first stored if neither of the above is set.

Keys are never logged, never sent, and never written unencrypted.

SecretStore keeps a small symmetric secret (the relay's ticket key) under the same passphrase:

    enclave-secret-v1\n base64( salt[16] | nonce[12] | AES-256-GCM(secret, aad=magic) ) \n
    key = scrypt(passphrase, salt, n=2**15, r=8, p=1)
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from enclave.cert.errors import KeyStoreError
from enclave.cert.files import PRIVATE_FILE_MODE, atomic_write

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey

AGENT_PASSPHRASE_ENV = "ENCLAVE_KEY_PASSPHRASE"
AGENT_CREDENTIAL = "enclave-key-passphrase"
PLATFORM_PASSPHRASE_ENV = "ENCLAVE_PLATFORM_KEY_PASSPHRASE"
PLATFORM_CREDENTIAL = "enclave-platform-key-passphrase"
MAX_KEY_FILE_BYTES = 16384
SECRET_MAGIC = b"enclave-secret-v1\n"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def encrypt_private_key(key: PrivateKey, passphrase: bytes) -> bytes:
    if not passphrase:
        raise KeyStoreError("empty key-encryption passphrase")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def decrypt_private_key(pem: bytes, passphrase: bytes) -> PrivateKey:
    if b"ENCRYPTED PRIVATE KEY" not in pem:
        raise KeyStoreError("private key file is not encrypted PKCS#8")
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        # cryptography says "Bad decrypt. Incorrect password?" or a parse error: both are ours.
        raise KeyStoreError(
            f"cannot decrypt private key (wrong passphrase or corrupt file): {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyStoreError("unsupported private key type")
    return key


@dataclass(frozen=True)
class KeyStore:
    """One encrypted private key file plus where its passphrase comes from."""

    key_path: Path
    kek_path: Path
    env_name: str = AGENT_PASSPHRASE_ENV
    credential_name: str = AGENT_CREDENTIAL

    def _external_passphrase(self, environ: Mapping[str, str]) -> bytes | None:
        value = environ.get(self.env_name)
        if value:
            return value.encode()
        cred_dir = environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            cred = Path(cred_dir) / self.credential_name
            if cred.exists():
                data = cred.read_bytes().strip()
                if not data:
                    raise KeyStoreError(f"systemd credential {cred} is empty")
                return data
        return None

    def passphrase(
        self, *, create: bool = False, environ: Mapping[str, str] | None = None
    ) -> bytes:
        env = os.environ if environ is None else environ
        external = self._external_passphrase(env)
        if external is not None:
            return external
        if self.kek_path.exists():
            data = self.kek_path.read_bytes().strip()
            if len(data) < 16:
                raise KeyStoreError(f"key-encryption key file {self.kek_path} is corrupt")
            return data
        if not create:
            raise KeyStoreError(
                f"no key-encryption key: set {self.env_name}, provide the systemd credential "
                f"{self.credential_name}, or restore {self.kek_path}"
            )
        data = base64.b64encode(secrets.token_bytes(32))
        atomic_write(self.kek_path, data + b"\n", PRIVATE_FILE_MODE)
        return data

    def save(self, key: PrivateKey, *, environ: Mapping[str, str] | None = None) -> None:
        passphrase = self.passphrase(create=True, environ=environ)
        atomic_write(self.key_path, encrypt_private_key(key, passphrase), PRIVATE_FILE_MODE)

    def load(self, *, environ: Mapping[str, str] | None = None) -> PrivateKey:
        try:
            if self.key_path.stat().st_size > MAX_KEY_FILE_BYTES:
                raise KeyStoreError(f"private key file {self.key_path} is too large")
            pem = self.key_path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(f"private key file {self.key_path} not found") from None
        return decrypt_private_key(pem, self.passphrase(environ=environ))

    def load_ed25519(self, *, environ: Mapping[str, str] | None = None) -> Ed25519PrivateKey:
        key = self.load(environ=environ)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyStoreError(f"{self.key_path} does not hold an Ed25519 key")
        return key


def _secret_key(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, **_SCRYPT).derive(passphrase)


def encrypt_secret(secret: bytes, passphrase: bytes) -> bytes:
    if not passphrase:
        raise KeyStoreError("empty key-encryption passphrase")
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    sealed = AESGCM(_secret_key(passphrase, salt)).encrypt(nonce, secret, SECRET_MAGIC)
    return SECRET_MAGIC + base64.b64encode(salt + nonce + sealed) + b"\n"


def decrypt_secret(data: bytes, passphrase: bytes) -> bytes:
    if not data.startswith(SECRET_MAGIC):
        raise KeyStoreError("secret file is not an encrypted enclave secret")
    try:
        raw = base64.b64decode(data[len(SECRET_MAGIC):].strip(), validate=True)
    except ValueError:
        raise KeyStoreError("secret file is corrupt") from None
    if len(raw) < 16 + 12 + 16:
        raise KeyStoreError("secret file is corrupt")
    try:
        return AESGCM(_secret_key(passphrase, raw[:16])).decrypt(raw[16:28], raw[28:],
                                                                 SECRET_MAGIC)
    except InvalidTag:
        raise KeyStoreError("cannot decrypt secret (wrong passphrase or corrupt file)") from None


@dataclass(frozen=True)
class SecretStore:
    """One encrypted symmetric secret file; the passphrase comes from `keys` (a KeyStore)."""

    path: Path
    keys: KeyStore

    def save(self, secret: bytes, *, environ: Mapping[str, str] | None = None) -> None:
        passphrase = self.keys.passphrase(create=True, environ=environ)
        atomic_write(self.path, encrypt_secret(secret, passphrase), PRIVATE_FILE_MODE)

    def load(self, *, environ: Mapping[str, str] | None = None) -> bytes:
        try:
            if self.path.stat().st_size > MAX_KEY_FILE_BYTES:
                raise KeyStoreError(f"secret file {self.path} is too large")
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(f"secret file {self.path} not found") from None
        return decrypt_secret(data, self.keys.passphrase(environ=environ))

    def is_clear(self, size: int) -> bool:
        """The file holds exactly `size` bytes not in the encrypted format (an old clear key)."""
        try:
            data = self.path.read_bytes() if self.path.stat().st_size == size else b""
        except FileNotFoundError:
            return False
        return len(data) == size and not data.startswith(SECRET_MAGIC)
