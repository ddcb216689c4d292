from __future__ import annotations

import pytest

from enclave.discovery.candidates import Candidate, CandidateKind, NatBehaviour, PathAddr, Transport
from enclave.discovery.introduction import Introduction, IntroductionError, Withdrawal


def _intro() -> Introduction:
    return Introduction(
        peer="V88RY",
        cert_der=b"\x30\x82der",
        candidates=(
            Candidate(PathAddr(Transport.UDP, "198.19.1.2", 51820), CandidateKind.PRIVATE),
            Candidate(
                PathAddr(Transport.TCP, "198.18.1.1", 40000),
                CandidateKind.PUBLIC,
                NatBehaviour.SYMMETRIC,
            ),
        ),
        nat=NatBehaviour.ENDPOINT_INDEPENDENT,
        punch_at=1764193000.25,
        relay=PathAddr(Transport.RELAY, "198.18.0.2", 3479),
    )


def test_roundtrip() -> None:
    intro = _intro()
    assert Introduction.from_json(intro.to_json()) == intro
    w = Withdrawal("V88RY", "intent")
    assert Withdrawal.from_json(w.to_json()) == w


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(type="withdraw"),
        lambda d: d.update(cert="!!notbase64"),
        lambda d: d.update(peer=""),
        lambda d: d.update(nat="bogus"),
        lambda d: d["candidates"].append({"transport": "udp", "host": "x", "port": 0}),
        lambda d: d["candidates"].append({"transport": "udp", "host": "x", "port": 1, "kind": "?"}),
        lambda d: d.update(candidates="nope"),
        lambda d: d.pop("punch_at"),
        lambda d: d.update(relay=[1, 2]),
    ],
)
def test_malformed_rejected_with_clear_error(mutate: object) -> None:
    d = _intro().to_json()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(IntroductionError):
        Introduction.from_json(d)


def test_malformed_withdrawal() -> None:
    with pytest.raises(IntroductionError):
        Withdrawal.from_json({"type": "withdraw", "peer": 3})
