"""Log output formats shared by the agent (`enclave up`) and the platform (`platform serve`).

    text (default)   2026-12-06 04:31:10,123 INFO enclave.agent: agent V88RY up ...
    json             {"ts": "2026-12-06T04:31:10.123456+00:00", "level": "info",
                      "logger": "enclave.agent", "msg": "agent V88RY up ...",
                      "exception": "Traceback ..."}          (one object per line)

The format comes from `--log-format` or else the environment variable ENCLAVE_LOG_FORMAT.
`use_format()` swaps the formatter of the root logger's handlers (set up by the `enclave`
command's logging.basicConfig), so every logger of the process writes the chosen format.
"""

from __future__ import annotations

import datetime
import json
import logging
import os

LOG_FORMAT_ENV = "ENCLAVE_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO 8601, UTC), level, logger, msg, and `exception` /
    `stack` (formatted traceback) when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def resolve_format(flag: str | None) -> str:
    """The flag if given, else ENCLAVE_LOG_FORMAT, else "text"; ValueError for anything else."""
    raw = flag if flag else os.environ.get(LOG_FORMAT_ENV, "").strip()
    fmt = (raw or "text").lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}; got {raw!r}")
    return fmt


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def use_format(flag: str | None, logger: logging.Logger | None = None) -> str:
    """Give every handler of `logger` (default: the root logger) the resolved format; returns
    the format's name.  A root logger without handlers gets one on stderr."""
    fmt = resolve_format(flag)
    target = logger if logger is not None else logging.getLogger()
    if not target.handlers:
        target.addHandler(logging.StreamHandler())
    for handler in target.handlers:
        handler.setFormatter(formatter(fmt))
    return fmt
