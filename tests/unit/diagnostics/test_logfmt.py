"""The log formats of `enclave up` / `enclave platform serve` (enclave.logfmt)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from enclave.cli import build_parser
from enclave.logfmt import LOG_FORMAT_ENV, JsonFormatter, resolve_format, use_format


def _logger(stream: io.StringIO, fmt: str) -> logging.Logger:
    log = logging.getLogger(f"enclave.test.logfmt.{fmt}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(logging.StreamHandler(stream))
    use_format(fmt, log)
    return log


def test_json_lines_carry_ts_level_logger_msg() -> None:
    out = io.StringIO()
    log = _logger(out, "json")
    log.info("agent %s up on port %d", "V88RY", 51820)
    log.warning("second line\nwith a newline")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # one object per line, newlines inside msg are escaped
    first = json.loads(lines[0])
    assert first["level"] == "info"
    assert first["logger"] == "enclave.test.logfmt.json"
    assert first["msg"] == "agent V88RY up on port 51820"
    assert first["ts"].endswith("+00:00") and "T" in first["ts"]
    assert "exception" not in first
    assert json.loads(lines[1])["msg"] == "second line\nwith a newline"


def test_json_exception_is_one_field() -> None:
    out = io.StringIO()
    log = _logger(out, "json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("timer failed")
    rec = json.loads(out.getvalue())
    assert rec["level"] == "error" and rec["msg"] == "timer failed"
    assert "RuntimeError: boom" in rec["exception"] and "Traceback" in rec["exception"]


def test_text_is_default_and_not_json() -> None:
    out = io.StringIO()
    log = _logger(out, "text")
    log.info("hello")
    line = out.getvalue().strip()
    assert line.endswith("INFO enclave.test.logfmt.text: hello")
    with pytest.raises(ValueError):
        json.loads(line)


def test_resolve_flag_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOG_FORMAT_ENV, raising=False)
    assert resolve_format(None) == "text"
    monkeypatch.setenv(LOG_FORMAT_ENV, "JSON")
    assert resolve_format(None) == "json"
    assert resolve_format("text") == "text"  # the flag wins over the environment
    monkeypatch.setenv(LOG_FORMAT_ENV, "yaml")
    with pytest.raises(ValueError, match="log format"):
        resolve_format(None)


def test_formatter_survives_unserialisable_args() -> None:
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "obj %r", (object(),), None)
    assert json.loads(JsonFormatter().format(rec))["msg"].startswith("obj <object")


def test_up_refuses_a_bad_env_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`enclave up` with ENCLAVE_LOG_FORMAT=yaml: a clear error, exit 1, before any set-up."""
    monkeypatch.setenv(LOG_FORMAT_ENV, "yaml")
    args = build_parser().parse_args(["up", "--state", str(tmp_path)])
    assert args.func(args) == 1
    assert "log format must be one of text, json" in capsys.readouterr().err


def test_up_and_serve_take_the_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["up", "--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit):
        parser.parse_args(["up", "--log-format", "yaml"])


def test_serve_takes_the_flag_and_refuses_a_bad_env_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    args = parser.parse_args(["platform", "serve", "--log-format", "json"])
    assert args.log_format == "json"
    monkeypatch.setenv(LOG_FORMAT_ENV, "yaml")
    args = parser.parse_args(["platform", "serve", "--data", str(tmp_path)])
    assert args.func(args) == 1
    assert "log format must be one of text, json" in capsys.readouterr().err
