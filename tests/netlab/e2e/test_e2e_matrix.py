"""The NAT matrix (issue 5) with the real product: a platform process and 12 `enclave up` agents.

    plat 198.18.0.11: enclave platform serve (API, control WebSocket, reflector, relay)
          |
    +-----+------------------------- inet ----------------------------------+
    | row sites  r<type>: rnone rfull rrest rport rsym rfw    one host each  |
    | col sites  c<type>: cnone cfull crest cport csym cfw    (`<site>1`)    |
    +-----------------------------------------------------------------------+

    cell (row r, column c) = the session between agent r<r>1 (behind NAT r) and c<c>1 (NAT c)

Each row agent states intent (`enclave intent add`) with all six column agents and each column
agent with all six rows: 36 sessions, introduced by the platform, punched or relayed by the
agents' own ConnectionManagers, carried by their compiled data planes (TAP enclave0).  Every
cell must come up on the expected path class (D: lan / direct-udp / direct-tcp, R: relay), show
its set-up time (introduction -> first authenticated packet, the agent's setup_ms) and carry one
authenticated ICMP echo over the overlay.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.discovery.paths import GIVE_UP_AFTER
from enclave.netlab import NatType, Site, Topology
from tests.support.lab import Agent, parallel, platform_lab, start_all
from tests.support.traffic import ping

pytestmark = [pytest.mark.netlab, pytest.mark.root]

N, F, R_, P, S, W = (NatType.NONE, NatType.FULL_CONE, NatType.RESTRICTED,
                     NatType.PORT_RESTRICTED, NatType.SYMMETRIC, NatType.FIREWALL)
TYPES = [N, F, R_, P, S, W]
SHORT = {N: "none", F: "full", R_: "rest", P: "port", S: "sym", W: "fw"}
# port-restricted <-> symmetric: D since birthday probing (enclave/discovery/birthday.py)
RELAYED = {(S, S), (S, W), (W, S)}
DIRECT_PATHS = {"lan", "direct-udp", "direct-tcp"}
SHORT_PATH: dict[Any, str] = {"lan": "D/lan", "direct-udp": "D/udp", "direct-tcp": "D/tcp",
                              "relay": "R"}
CONNECT_DEADLINE = 30.0  # after the last intent: relay cells give up on direct after ~5 s


def row_host(t: NatType) -> str:
    return f"r{SHORT[t]}1"


def col_host(t: NatType) -> str:
    return f"c{SHORT[t]}1"


def expected(r: NatType, c: NatType) -> str:
    return "R" if (r, c) in RELAYED else "D"


def path_class(path: str | None) -> str | None:
    if path in ("relay-udp", "relay-tls"):
        return "R"
    return "D" if path in DIRECT_PATHS else None


Cells = dict[tuple[NatType, NatType], dict[str, Any]]


def _collect(rows: dict[NatType, Agent], cols: dict[NatType, Agent]) -> Cells:
    cells: Cells = {}
    for r, a in rows.items():
        by_name = {p["name"]: p for p in a.peers()}
        for c, b in cols.items():
            cells[(r, c)] = by_name.get(b.name, {"state": "unknown"})
    return cells


def _table(cells: Cells, ok: dict[tuple[NatType, NatType], int]) -> str:
    head = "row \\ col".ljust(10) + "".join(SHORT[c].rjust(16) for c in TYPES)
    lines = [head]
    for r in TYPES:
        row = SHORT[r].ljust(10)
        for c in TYPES:
            p = cells[(r, c)]
            path = SHORT_PATH.get(p.get("path"), "-")
            ms = p.get("setup_ms")
            txt = f"{path} {ms:.0f}ms" if ms is not None and p.get("state") == "connected" \
                else p.get("state", "?")
            if (r, c) in ok and not ok[(r, c)]:
                txt += "!"
            row += txt.rjust(16)
        lines.append(row)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def matrix(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Cells, dict[tuple[NatType, NatType], int], dict[str, float]]]:
    sites = [Site(f"{side}{SHORT[t]}", nat=t) for side in "rc" for t in TYPES]
    topo = Topology(sites=sites, public_hosts=["plat"])
    tmp = tmp_path_factory.mktemp("matrix")
    names = [row_host(t) for t in TYPES] + [col_host(t) for t in TYPES]
    timing: dict[str, float] = {}
    t0 = time.monotonic()
    with platform_lab(topo, tmp, names) as (_lab, _plat, agents):
        timing["lab_enrol_s"] = time.monotonic() - t0
        rows = {t: agents[row_host(t)] for t in TYPES}
        cols = {t: agents[col_host(t)] for t in TYPES}
        t1 = time.monotonic()
        start_all(agents.values())
        timing["up_s"] = time.monotonic() - t1
        t2 = time.monotonic()
        # every row agent with all six columns, every column agent with all six rows
        wants = [(a, [b.name for b in cols.values()]) for a in rows.values()]
        wants += [(b, [a.name for a in rows.values()]) for b in cols.values()]
        parallel(lambda w: w[0].intent("add", *w[1]), wants, workers=12)
        timing["intents_s"] = time.monotonic() - t2
        t3 = time.monotonic()
        deadline = t3 + CONNECT_DEADLINE
        cells = _collect(rows, cols)
        while time.monotonic() < deadline:
            if all(p.get("state") == "connected" and path_class(p.get("path")) == expected(*k)
                   for k, p in cells.items()):  # a birthday pair moves off the relay later
                break
            time.sleep(0.2)
            cells = _collect(rows, cols)
        timing["connect_s"] = time.monotonic() - t3
        # one authenticated exchange per cell over the compiled data plane: ICMP echo row -> col
        # (the first echo may race the other side's key install: a few tries)
        keys = [k for k, p in cells.items() if p.get("state") == "connected"]

        def echo(key: tuple[NatType, NatType]) -> int:
            a, b = rows[key[0]], cols[key[1]]
            for _ in range(4):
                if ping(a.host, b.overlay_ip, count=1, timeout=0.5):
                    return 1
            return 0

        t4 = time.monotonic()
        ok = dict(zip(keys, parallel(echo, keys, workers=12), strict=True))
        timing["ping_s"] = time.monotonic() - t4
        cells = _collect(rows, cols)  # counters after the echo
        print("\n" + _table(cells, ok))
        print("timing: " + ", ".join(f"{k}={v:.1f}" for k, v in timing.items()))
        yield cells, ok, timing


@pytest.mark.parametrize(("row", "col"), [(r, c) for r in TYPES for c in TYPES],
                         ids=[f"{SHORT[r]}-{SHORT[c]}" for r in TYPES for c in TYPES])
def test_nat_cell(matrix: tuple[Cells, dict[tuple[NatType, NatType], int], dict[str, float]],
                  row: NatType, col: NatType, record_property: Any) -> None:
    cells, ok, _timing = matrix
    p = cells[(row, col)]
    record_property("path", p.get("path"))
    record_property("setup_ms", p.get("setup_ms"))
    assert p.get("state") == "connected", p
    want = expected(row, col)
    assert path_class(p["path"]) == want, (want, p)
    assert p["setup_ms"] is not None and p["setup_ms"] > 0, p
    if want == "R":  # relay first: up over the relay while the punch was still trying
        assert p["punch_ms"] < GIVE_UP_AFTER * 1000, p
    assert ok.get((row, col)) == 1, f"no ICMP echo over the overlay: {p}"
    assert p["rx_frames"] > 0 and p["tx_frames"] > 0, p
    assert p["drops"] == 0, p.get("dataplane")
