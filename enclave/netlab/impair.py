"""Uplink impairments: tc netem when the kernel has it, else tbf (rate) + nft (loss).

Both directions of a site's uplink are impaired alike::

    site router netns                    inet netns
    [wan] --egress: impairment-->  <--egress: impairment-- [s<k>]

Backends, chosen per site at build time:
  "netem"    ``tc qdisc add dev X root netem delay .. loss .. reorder .. rate ..`` on both ends.
  "tbf+nft"  for kernels built without sch_netem (CONFIG_NET_SCH_NETEM unset): rate through a
             tbf qdisc on both ends; loss through ``numgen random`` drop rules in the router's
             table ``ip enclave_lab_impair`` (prerouting iif wan, postrouting oif wan). Delay,
             jitter and reorder have no equivalent; asking for them raises NetlabError.
"""

from __future__ import annotations

from enclave.netlab import netns
from enclave.netlab.topology import Netem

IMPAIR_TABLE = "enclave_lab_impair"
LOSS_SCALE = 1_000_000  # numgen modulus: loss resolution 0.0001 %
_NO_NETEM_MARKERS = ("qdisc kind is unknown", "Unknown qdisc")


def _netem_missing(exc: netns.NetlabError) -> bool:
    return any(marker in str(exc) for marker in _NO_NETEM_MARKERS)


def tbf_args(rate_mbit: float) -> list[str]:
    """tbf arguments for ``rate_mbit``: a burst of ~4 ms of traffic (at least 32 KiB)."""
    rate_bps = rate_mbit * 1_000_000
    burst = max(32 * 1024, int(rate_bps / 8 * 0.004))
    return ["rate", f"{rate_mbit * 1000:g}kbit", "burst", str(burst), "latency", "50ms"]


def loss_ruleset(loss_pct: float, wan: str = "wan") -> str:
    threshold = round(loss_pct / 100 * LOSS_SCALE)
    drop = (
        "drop" if threshold >= LOSS_SCALE else f"numgen random mod {LOSS_SCALE} < {threshold} drop"
    )
    return (
        f"table ip {IMPAIR_TABLE} {{\n"
        "  chain down {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        f'    iifname "{wan}" {drop}\n'
        "  }\n"
        "  chain up {\n"
        "    type filter hook postrouting priority 300; policy accept;\n"
        f'    oifname "{wan}" {drop}\n'
        "  }\n"
        "}\n"
    )


def apply(router_ns: str, inet_ns: str, inet_dev: str, netem: Netem) -> str | None:
    """Impair the uplink (router_ns:wan <-> inet_ns:inet_dev). Returns the backend used."""
    args = netem.tc_args()
    if not args:
        return None
    ends = ((router_ns, "wan"), (inet_ns, inet_dev))
    try:
        for ns, dev in ends:
            netns.run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", *args])
        return "netem"
    except netns.NetlabError as exc:
        if not _netem_missing(exc):
            raise
    if netem.delay_ms > 0 or netem.jitter_ms > 0 or netem.reorder_pct > 0:
        raise netns.NetlabError(
            "netem delay/jitter/reorder need the sch_netem qdisc, which this kernel lacks "
            "(CONFIG_NET_SCH_NETEM); rate and loss work without it"
        )
    if netem.rate_mbit is not None:
        for ns, dev in ends:
            netns.run(
                ["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf",
                 *tbf_args(netem.rate_mbit)]
            )  # fmt: skip
    if netem.loss_pct > 0:
        netns.run(
            netns.exec_argv(router_ns, ["nft", "-f", "-"]), input=loss_ruleset(netem.loss_pct)
        )
    return "tbf+nft"
