"""Fixtures for the end-to-end tier (network namespaces: root, iproute2, nft)."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def netlab_required() -> None:
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root (network namespaces)")
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            pytest.skip(f"e2e tests need {tool!r} (iproute2 / nftables)")
