"""Sans-I/O peer discovery: candidate addresses, hole-punch schedules and path choice."""

from enclave.discovery.candidates import (
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    Transport,
    path_rank,
)
from enclave.discovery.paths import PathManager
from enclave.discovery.punch import PunchSchedule

__all__ = [
    "Candidate",
    "CandidateKind",
    "NatBehaviour",
    "PathAddr",
    "PathManager",
    "PunchSchedule",
    "Transport",
    "path_rank",
]
