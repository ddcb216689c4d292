"""When a peer row (enclave.proto.peerstate) next needs its Node: Node.get_timer takes the
earliest of every peer's peer_deadlines, and Node.handle_timer acts on what is due.

    row field         deadline
    out_next          our next INIT (a retry with backoff, or the first after the punch rounds)
    paths             punch rounds, path probes and re-probes (PathManager.next_deadline)
    inbound           an unconfirmed incoming handshake is forgotten (in_deadline)
    pending           the next CONFIRM resend; the keys' hard age limit
    previous          the end of the old keys' overlap
    current           the keys' hard age limit; the rekey (rekey_at, while no handshake is in
                      flight); keepalive; dead peer; the path watch; the dead-peer ping
"""

from __future__ import annotations

from enclave.proto import timing as T
from enclave.proto.peerstate import PeerState
from enclave.proto.session import Keyset


def rekey_at(ks: Keyset, our_cert: bytes) -> float:
    """When the session of `ks` is due for a new handshake: REKEY_AFTER_TIME after its keys
    were made (the responder REKEY_RESPONDER_LAG later, so the initiator usually starts it),
    or at once when they were made with a certificate of ours other than `our_cert` (renewed
    since: Node.rehandshake)."""
    if ks.our_cert != our_cert:
        return ks.created
    lag = 0.0 if ks.initiator else T.REKEY_RESPONDER_LAG
    return ks.created + T.REKEY_AFTER_TIME + lag


def peer_deadlines(p: PeerState, our_cert: bytes) -> list[float]:
    """Every time at which `p` needs the Node (the table above); `our_cert` is our current
    certificate (rekey_at)."""
    out: list[float] = []
    if p.out_next is not None:
        out.append(p.out_next)
    if p.paths is not None:
        d = p.paths.next_deadline()
        if d is not None:
            out.append(d)
    if p.inbound is not None:
        out.append(p.in_deadline)
    if p.pending is not None and p.pending.confirm_next is not None:
        out.append(p.pending.confirm_next)
        out.append(p.pending.created + T.REJECT_AFTER_TIME)
    if p.previous is not None:
        out.append(p.previous_until)
    ks = p.current
    if ks is not None:
        out.append(ks.created + T.REJECT_AFTER_TIME)
        if p.outbound is None and p.inbound is None and p.pending is None:
            out.append(rekey_at(ks, our_cert))
        out.append(p.last_tx + p.keepalive_after)
        out.append(p.last_rx + T.DEAD_PEER_TIMEOUT)
        out.extend(t for t in (p.watch.deadline(p.path_rx, p.last_tx),) if t is not None)
        if p.last_ping > p.last_rx:  # pinging: the next ping
            out.append(max(p.last_ping + T.PING_INTERVAL, p.last_rx + T.DEAD_PEER_PING_AFTER))
        else:
            out.append(p.last_rx + T.DEAD_PEER_PING_AFTER)
    return out
