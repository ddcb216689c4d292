"""`enclave lab selfcheck`: build a lab with every NAT type, probe it, tear it down, report.

Checks, each with real sockets:
  * every NAT type maps and filters UDP as named (probe.probe_udp against two reflectors);
  * TCP through the port-restricted NAT: same public port to both reflectors, unsolicited dropped;
  * two hosts of one site reach each other directly on the LAN (no translation);
  * a NATed site's LAN is not routable from the internet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from enclave.netlab import probe
from enclave.netlab.lab import Lab
from enclave.netlab.topology import NatType, Site, Topology

# (translated, endpoint-independent mapping, filtering) as probe.UdpObservation reports them
EXPECTED_UDP: dict[NatType, tuple[bool, bool, str]] = {
    NatType.NONE: (False, True, "none"),
    NatType.FULL_CONE: (True, True, "endpoint-independent"),
    NatType.RESTRICTED: (True, True, "address"),
    NatType.PORT_RESTRICTED: (True, True, "address-and-port"),
    NatType.SYMMETRIC: (True, False, "address-and-port"),
    NatType.FIREWALL: (False, True, "address-and-port"),
}

SITE_NAMES: dict[NatType, str] = {
    NatType.NONE: "open",
    NatType.FULL_CONE: "full",
    NatType.RESTRICTED: "rest",
    NatType.PORT_RESTRICTED: "port",
    NatType.SYMMETRIC: "sym",
    NatType.FIREWALL: "fw",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    build_s: float = 0.0
    total_s: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))


def selfcheck_topology() -> Topology:
    return Topology(
        sites=[
            Site(SITE_NAMES[nat], nat=nat, hosts=2 if nat is NatType.PORT_RESTRICTED else 1)
            for nat in NatType
        ],
        public_hosts=["r1", "r2"],
    )


def run_selfcheck() -> Report:
    report = Report()
    t0 = time.monotonic()
    with Lab(selfcheck_topology()) as lab:
        report.build_s = time.monotonic() - t0
        r1, r2 = lab.public_host("r1"), lab.public_host("r2")
        for nat, (translated, eim, filtering) in EXPECTED_UDP.items():
            host = lab.host(f"{SITE_NAMES[nat]}1")
            try:
                obs = probe.probe_udp(host, r1, r2)
            except (OSError, RuntimeError) as exc:
                report.add(f"udp {nat.value}", False, f"probe failed: {exc}")
                continue
            got = (obs.translated, obs.endpoint_independent_mapping, obs.filtering)
            detail = (
                f"{obs.local[0]}:{obs.local[1]} -> r1 sees {obs.mapped_r1[0]}:{obs.mapped_r1[1]},"
                f" r2 sees {obs.mapped_r2[0]}:{obs.mapped_r2[1]}; filtering {obs.filtering}"
            )
            ok = got == (translated, eim, filtering) and obs.reply_in
            report.add(f"udp {nat.value}", ok, detail)

        port1 = lab.host(f"{SITE_NAMES[NatType.PORT_RESTRICTED]}1")
        port2 = lab.host(f"{SITE_NAMES[NatType.PORT_RESTRICTED]}2")
        try:
            tcp = probe.probe_tcp(port1, r1, r2)
            ok = (
                tcp.endpoint_independent_mapping
                and tcp.mapped_r1[0] == str(port1.public_ip)
                and not tcp.unsolicited_in
                and not tcp.same_addr_other_port_in
            )
            report.add(
                "tcp port-restricted",
                ok,
                f"mapped {tcp.mapped_r1[0]}:{tcp.mapped_r1[1]} / {tcp.mapped_r2[1]}, "
                f"unsolicited {'in' if tcp.unsolicited_in else 'dropped'}",
            )
        except OSError as exc:
            report.add("tcp port-restricted", False, f"probe failed: {exc}")

        seen = probe.udp_reachable(port1, port2)
        report.add(
            "same-LAN direct",
            seen is not None and seen[0] == str(port1.ip),
            f"{port1.name} -> {port2.name}: seen as {seen}",
        )
        leaked = probe.udp_reachable(r1, port2)
        report.add(
            "NATed LAN unroutable",
            leaked is None,
            f"r1 -> {port2.ip}: {'delivered' if leaked else 'not delivered'}",
        )
    report.total_s = time.monotonic() - t0
    return report


def format_report(report: Report) -> str:
    lines = [f"{'PASS' if c.ok else 'FAIL'}  {c.name:<22} {c.detail}" for c in report.checks]
    lines.append(
        f"{'OK' if report.ok else 'FAILED'}: {sum(c.ok for c in report.checks)}/"
        f"{len(report.checks)} checks; lab built in {report.build_s:.2f}s, "
        f"total {report.total_s:.2f}s, torn down"
    )
    return "\n".join(lines)
