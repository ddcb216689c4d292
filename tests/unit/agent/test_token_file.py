"""`enclave enrol --token-file FILE|-`: the token need not sit in argv or shell history."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from enclave.agent.cli import MAX_TOKEN_FILE_BYTES, main, read_token_file
from enclave.agent.errors import AgentError


def test_token_from_file_and_stdin(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("  enclave1-abc\n")
    assert read_token_file(str(f)) == "enclave1-abc"
    assert read_token_file("-", io.StringIO("enclave1-def\n")) == "enclave1-def"


@pytest.mark.parametrize(
    ("case", "content", "message"),
    [
        (1, b"", "empty"),
        (2, b" \n\t\n", "empty"),
        (3, b"x" * (MAX_TOKEN_FILE_BYTES + 1), "too large"),
        (4, b"\xff\xfe\x00token", "not text"),
    ],
)
def test_bad_token_files(case: int, content: bytes, message: str, tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_bytes(content)
    with pytest.raises(AgentError, match=message):
        read_token_file(str(f))


def test_cli_refuses_token_and_token_file_together(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "token"
    f.write_text("enclave1-abc\n")
    rc = main(["enrol", "enclave1-xyz", "--token-file", str(f), "--state", str(tmp_path / "s")])
    assert rc == 1 and "either TOKEN or --token-file" in capsys.readouterr().err
    rc = main(["enrol", "--token-file", str(tmp_path / "missing"), "--state",
               str(tmp_path / "s")])
    assert rc == 1 and "missing" in capsys.readouterr().err
