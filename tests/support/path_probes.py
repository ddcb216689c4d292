"""A PathManager driven on a simulated clock, as the Node drives it, for the discovery tests.

    pm = PathManager([PUB], 0.0, random.Random(1)); pm.add_candidate(REL)
    probes(pm, 0.0, 100.0)      every (time, address) it asked to probe, following its deadlines
"""

from __future__ import annotations

from enclave.discovery import Candidate, CandidateKind, PathAddr, PathManager, Transport

PUB = Candidate(PathAddr(Transport.UDP, "198.18.0.2", 1), CandidateKind.PUBLIC)
REL = Candidate(PathAddr(Transport.RELAY, "198.18.9.9", 1), CandidateKind.RELAY)
TLS = Candidate(PathAddr(Transport.RELAY_TLS, "198.18.9.9", 7), CandidateKind.RELAY)


def probes(pm: PathManager, start: float, end: float) -> list[tuple[float, PathAddr]]:
    """Every probe due() asks for between start and end, following next_deadline() (and
    calling relay_due() each round, as the Node does: the punch's give-up is a deadline)."""
    out: list[tuple[float, PathAddr]] = []
    t = start
    while t <= end:
        pm.relay_due(t)
        out.extend((t, a) for a in pm.due(t))
        d = pm.next_deadline()
        if d is None:
            break
        t = max(d, t + 1e-6)
    return out
