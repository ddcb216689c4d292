"""A tiny HTTPS client pinned to the platform's TLS key (SHA-256 of its SubjectPublicKeyInfo).

The pin is checked right after the TLS handshake and before any request byte is sent, so a
wrong server never sees the enrolment secret or the CSR. No CA chain or hostname is trusted.

Given several URLs (one per node of the platform), a request goes to the first that accepts a
connection: the next is tried only when the connection or its TLS handshake fails, before any
request byte is sent, so a request is never sent twice.
"""

from __future__ import annotations

import hmac
import http.client
import json
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

from cryptography import x509

from enclave.agent.errors import AgentError, PinMismatch
from enclave.cert.keys import spki_sha256

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 1024 * 1024


class PinnedClient:
    def __init__(self, url: str | Sequence[str], pin: str,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise AgentError("no platform URL")
        for one in self.urls:
            parts = urlsplit(one)
            if parts.scheme != "https" or not parts.hostname:
                raise AgentError(f"platform URL must be https://HOST:PORT, got {one!r}")
        self._aim(self.urls[0])
        self.pin = pin.lower()
        self.timeout = timeout
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE  # trust comes from the pin below, not from a CA
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    def _aim(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or ""
        self.port = parts.port or 443

    def _connect(self) -> http.client.HTTPSConnection:
        """A pinned connection to the first URL that accepts one."""
        for url in self.urls[:-1]:
            self._aim(url)
            try:
                return self._connect_one()
            except PinMismatch:
                raise
            except AgentError:
                continue  # unreachable: nothing was sent; the next node
        self._aim(self.urls[-1])
        return self._connect_one()

    def _connect_one(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(
            self.host, self.port, timeout=self.timeout, context=self._ctx
        )
        try:
            conn.connect()
            assert isinstance(conn.sock, ssl.SSLSocket)
            der = conn.sock.getpeercert(binary_form=True)
            if der is None:
                raise PinMismatch("platform presented no TLS certificate")
            got = spki_sha256(x509.load_der_x509_certificate(der))
        except (OSError, ssl.SSLError, ValueError) as exc:
            conn.close()
            raise AgentError(f"cannot reach platform at {self.url}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        if not hmac.compare_digest(got, self.pin):
            conn.close()
            raise PinMismatch(
                f"platform at {self.url} presented TLS key {got}, but the token pins {self.pin}; "
                "refusing to talk to it"
            )
        return conn

    def request(
        self, method: str, path: str, body: dict[str, object] | None = None
    ) -> tuple[int, bytes]:
        conn = self._connect()
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE_BYTES + 1)
            if len(data) > MAX_RESPONSE_BYTES:
                raise AgentError("platform response too large")
            return resp.status, data
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError(f"request to platform {self.url}{path} failed: {exc}") from None
        finally:
            conn.close()

    def json(
        self, method: str, path: str, body: dict[str, object] | None = None
    ) -> tuple[int, dict[str, object]]:
        status, data = self.request(method, path, body)
        try:
            reply = json.loads(data)
        except ValueError:
            raise AgentError(f"platform sent a non-JSON reply (HTTP {status})") from None
        if not isinstance(reply, dict):
            raise AgentError(f"platform sent an unexpected reply (HTTP {status})")
        if status >= 400:
            raise AgentError(f"platform refused: {reply.get('error', 'unknown error')} "
                             f"(HTTP {status})")
        return status, reply
