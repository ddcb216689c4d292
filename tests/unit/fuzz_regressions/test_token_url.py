"""An enrolment token whose platform URL urlsplit cannot split is a TokenError (found by the
``token`` fuzz target, bench/fuzz: urlsplit's ValueError escaped EnrolmentToken.decode, so
``enclave enrol`` died with a traceback instead of saying what is wrong with the token)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.agent.enrol import enrol
from enclave.agent.errors import AgentError
from enclave.agent.state import StateDir
from enclave.cert.enrolment import EnrolmentToken, TokenError

URLS = [
    "https://198.184.8.4:[03",  # the fuzzer's input: an unbalanced "[" (Invalid IPv6 URL)
    "https://[::1",
    "https://a\u2100b.example",  # a netloc that NFKC normalisation changes
]


def token(url: str) -> str:
    return EnrolmentToken(url, "ab" * 32, "key-1", bytes(32)).encode()


@pytest.mark.parametrize("url", URLS)
def test_unsplittable_platform_url_is_a_token_error(url: str) -> None:
    with pytest.raises(TokenError, match="invalid platform URL"):
        EnrolmentToken.decode(token(url))


def test_enrol_reports_it_as_an_agent_error(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="invalid platform URL"):
        enrol(token(URLS[0]), StateDir(tmp_path / "state"))
    assert not (tmp_path / "state").exists()  # nothing written for a bad token
