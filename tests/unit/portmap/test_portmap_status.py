"""`enclave status` shows the port mapping: off, the mapped address, or why there is none."""

from __future__ import annotations

import time

from enclave.agent.portmap import Method, PortMapper, PortMapping
from enclave.agent.statusfmt import status_text


def _line(portmap: object) -> str:
    text = status_text({"name": "A", "portmap": portmap}, [], time.time())
    return next(ln for ln in text.splitlines() if ln.startswith("port mapping"))


def test_status_shows_the_mapping_its_absence_and_the_off_switch() -> None:
    pm = PortMapper(51820, lambda: None, gateway=lambda: None)
    assert _line(None) == "port mapping off"
    assert _line(pm.describe()) == "port mapping none (asking)"
    pm.last_error = "no mapping from 198.19.1.1 (pcp, nat-pmp, upnp)"
    assert _line(pm.describe()) == f"port mapping none ({pm.last_error})"
    pm.mapping = PortMapping(Method.NATPMP, "198.18.1.1", 4500, 51820, 3600, time.time())
    assert _line(pm.describe()) == "port mapping 198.18.1.1:4500 -> udp :51820 via nat-pmp"
