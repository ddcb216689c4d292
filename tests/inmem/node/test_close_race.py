"""Both sides close at once (the platform withdraws a pair from both agents in the same
instant): each receives the other's authenticated CLOSE while its own CLOSE keys linger.
Found end to end; reproduced here on the in-memory router.  Must not raise, both end closed."""

from __future__ import annotations

from enclave.proto.events import SessionClosed
from tests.support.peers import A, B, connect, pair
from tests.support.router import events_of


def test_simultaneous_close_from_both_sides() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    a.node.close(B, r.now)
    b.node.close(A, r.now)
    r.run(2)  # the CLOSE resends cross: each hits the other's closing keys
    assert events_of(a, SessionClosed) and events_of(b, SessionClosed)
    assert a.node.session(B) is None and b.node.session(A) is None
    assert a.node.peers() == [] and b.node.peers() == []
    # and they can meet again afterwards
    connect(r, a, b)
    assert a.node.session(B) is not None and b.node.session(A) is not None
