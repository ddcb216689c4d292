"""The identity tests' platform: one real `enclave platform serve` on loopback per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.platform import Platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform.loopback(tmp_path_factory.mktemp("plat"))
    try:
        yield p
    finally:
        p.stop()
