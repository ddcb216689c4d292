"""`enclave info` shows AEGIS-256: whether libsodium runs it on AES-NI here (available) and
whether the configuration offers it to peers (allowed), with the fallback cipher."""

from __future__ import annotations

import pytest

from enclave import _fastpath as fp
from enclave import info


def test_default_does_not_allow_aegis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCLAVE_CIPHER", raising=False)
    report = info.gather(None)
    assert report["aegis256"] == {"available": fp.aegis256_available(), "allowed": False}
    assert report["cipher"] == report["cipher_fallback"] != "aegis256"


@pytest.mark.parametrize("how", ["config", "env"])
def test_aegis_allowed_when_configured(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "env":
        monkeypatch.setenv("ENCLAVE_CIPHER", "aegis256")
        report = info.gather(None)
    else:
        monkeypatch.delenv("ENCLAVE_CIPHER", raising=False)
        report = info.gather("aegis256")
    available = fp.aegis256_available()
    assert report["aegis256"] == {"available": available, "allowed": available}
    if available:
        assert report["cipher"] == "aegis256"
        assert report["cipher_fallback"] in ("aes256gcm", "chacha20poly1305")
        assert "preferred by" in report["cipher_reason"]
