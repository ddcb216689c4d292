"""`enclave lab selfcheck`: build a lab with every NAT type, probe it, tear it down, report.

Checks, each with real sockets:
  * every NAT type maps and filters UDP as named (probe.probe_udp against two reflectors);
  * TCP through the port-restricted NAT: same public port to both reflectors, unsolicited dropped;
  * two hosts of one site reach each other directly on the LAN (no translation);
  * a NATed site's LAN is not routable from the internet;
  * IPv6 (V6_SITES): each IPv6 mode maps and filters UDP as named (the same probe over IPv6),
    TCP through the IPv6 firewall is stateful, an IPv6-only host reaches the internet over IPv6
    and has no IPv4, and neither a firewalled nor a NAT66 LAN takes unsolicited IPv6.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from enclave.netlab import probe
from enclave.netlab.lab import Lab
from enclave.netlab.topology import NatType, Site, Topology, V6Mode

# (translated, endpoint-independent mapping, filtering) as probe.UdpObservation reports them
EXPECTED_UDP: dict[NatType, tuple[bool, bool, str]] = {
    NatType.NONE: (False, True, "none"),
    NatType.FULL_CONE: (True, True, "endpoint-independent"),
    NatType.RESTRICTED: (True, True, "address"),
    NatType.PORT_RESTRICTED: (True, True, "address-and-port"),
    NatType.SYMMETRIC: (True, False, "address-and-port"),
    NatType.FIREWALL: (False, True, "address-and-port"),
}

# IPv6 mode -> (site, expected as in EXPECTED_UDP); the sites are the IPv4 ones above, dual-stack
EXPECTED_UDP6: dict[V6Mode, tuple[str, tuple[bool, bool, str]]] = {
    V6Mode.OPEN: ("open", (False, True, "none")),
    V6Mode.FIREWALL: ("port", (False, True, "address-and-port")),
    V6Mode.NAT66: ("sym", (True, True, "address-and-port")),
    V6Mode.NAT66_SYMMETRIC: ("full", (True, False, "address-and-port")),
}
V6_ONLY_SITE = "six"  # an IPv6-only site (firewall)

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
    v6 = {site: mode for mode, (site, _) in EXPECTED_UDP6.items()}
    return Topology(
        sites=[
            *(Site(SITE_NAMES[nat], nat=nat, hosts=2 if nat is NatType.PORT_RESTRICTED else 1,
                   ipv6=v6.get(SITE_NAMES[nat], V6Mode.OFF))
              for nat in NatType),
            Site(V6_ONLY_SITE, ipv6=V6Mode.FIREWALL, ipv4=False),
        ],
        public_hosts=["r1", "r2"],
    )


def _udp_detail(obs: probe.UdpObservation) -> str:
    return (f"{obs.local[0]}:{obs.local[1]} -> r1 sees {obs.mapped_r1[0]}:{obs.mapped_r1[1]},"
            f" r2 sees {obs.mapped_r2[0]}:{obs.mapped_r2[1]}; filtering {obs.filtering}")


def _check_ipv6(lab: Lab, report: Report) -> None:
    r1, r2 = lab.public_host("r1"), lab.public_host("r2")
    v6 = socket.AF_INET6
    for mode, (site, (translated, eim, filtering)) in EXPECTED_UDP6.items():
        host = lab.host(f"{site}1")
        try:
            obs = probe.probe_udp(host, r1, r2, family=v6)
        except (OSError, RuntimeError) as exc:
            report.add(f"udp6 {mode.value}", False, f"probe failed: {exc}")
            continue
        got = (obs.translated, obs.endpoint_independent_mapping, obs.filtering)
        report.add(f"udp6 {mode.value}", got == (translated, eim, filtering) and obs.reply_in,
                   _udp_detail(obs))
    fw = lab.host(f"{EXPECTED_UDP6[V6Mode.FIREWALL][0]}1")
    try:
        tcp = probe.probe_tcp(fw, r1, r2, family=v6)
        report.add("tcp6 firewall", tcp.mapped_r1[0] == str(fw.ip6) and not tcp.unsolicited_in,
                   f"seen as [{tcp.mapped_r1[0]}]:{tcp.mapped_r1[1]}, "
                   f"unsolicited {'in' if tcp.unsolicited_in else 'dropped'}")
    except OSError as exc:
        report.add("tcp6 firewall", False, f"probe failed: {exc}")
    six = lab.host(f"{V6_ONLY_SITE}1")
    seen = probe.udp_reachable(six, r1, r1.ip6)
    v4 = six.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout.strip()
    report.add("IPv6-only host", seen is not None and seen[0] == str(six.ip6) and not v4,
               f"{six.name} -> r1 seen as {seen}; IPv4 on eth0: {v4 or 'none'}")
    nat66 = lab.host(f"{EXPECTED_UDP6[V6Mode.NAT66][0]}1")
    for label, dst in (("firewalled LAN6 closed", fw), ("IPv6-only LAN closed", six),
                       ("NAT66 LAN6 unroutable", nat66)):
        leaked = probe.udp_reachable(r1, dst, dst.ip6)
        report.add(label, leaked is None,
                   f"r1 -> {dst.ip6}: {'delivered' if leaked else 'not delivered'}")


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
            ok = got == (translated, eim, filtering) and obs.reply_in
            report.add(f"udp {nat.value}", ok, _udp_detail(obs))

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
        _check_ipv6(lab, report)
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
