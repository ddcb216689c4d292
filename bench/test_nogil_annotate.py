"""The GIL-free fast-path code shows no Python interaction in a Cython annotate build."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def test_no_yellow_lines_in_nogil_code(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).with_name("annotate_check.py")
    spec = importlib.util.spec_from_file_location("annotate_check", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # the parser must find the known nogil bodies, or the check would pass vacuously
    aead = (path.parents[1] / "enclave" / "_fp_aead.pxi").read_text()
    assert len(mod.nogil_lines(aead)) >= 20
    rc = mod.main()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert " 0 with Python interaction" in out
