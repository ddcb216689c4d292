"""Build a Topology out of real network namespaces, and guarantee it is torn down.

    topo = Topology(sites=[Site("a", nat=NatType.SYMMETRIC, hosts=2)], public_hosts=["platform"])
    with Lab(topo) as lab:
        a1 = lab.host("a1")                    # .name .netns .ip .public_ip .gateway
        a1.run(["ip", "addr"], check=True)     # subprocess.CompletedProcess[str]
        p = a1.popen(["iperf3", "-s"])         # own process group, killed at teardown
        s = lab.public_host("platform").socket(socket.AF_INET, socket.SOCK_DGRAM)

Teardown (close(), the end of the with-block, an exception inside it, Ctrl-C, SIGTERM, atexit)
kills tracked processes, closes tracked sockets, kills anything else left in the namespaces and
deletes them (their veths and bridges go with them), then removes the state file. Leftovers of a
run that died without teardown (SIGKILL, power loss) are removed when the next Lab starts; see
state.py. Interfaces are created directly inside their namespaces (``ip -n A link add X type
veth peer name Y netns B``), so their short names never meet the host's or another run's.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from enclave.netlab import impair, netns, state, upnp
from enclave.netlab import nat as natrules
from enclave.netlab.topology import (
    INTERNET_GW,
    INTERNET_GW6,
    PUBLIC_LAN,
    PUBLIC_LAN6,
    NatType,
    Site,
    SitePlan,
    Topology,
    V6Mode,
    plan_public,
    plan_public6,
    plan_site,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

TERM_GRACE_S = 1.0
_ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv4.conf.all.send_redirects": "0",
}
_HOST_SYSCTLS = {  # explicit: new namespaces may inherit the init namespace's IPv4 settings
    "net.ipv4.ip_forward": "0",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}
# IPv6: off in a namespace that has none in the plan (no link-local side paths); where the plan
# has IPv6, on with a static plan: no duplicate address detection (addresses usable at once), no
# router advertisements or autoconfiguration; routers forward.
_V6_OFF = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
_V6_ON = {
    **{f"net.ipv6.conf.{c}.{k}": v for c in ("all", "default")
       for k, v in (("disable_ipv6", "0"), ("accept_dad", "0"), ("dad_transmits", "0"),
                    ("accept_ra", "0"), ("autoconf", "0"))},
}
_V6_FORWARD = {"net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.default.forwarding": "1"}
# Bridges (inet br0, each site's lan) switch frames like real ones: with br_netfilter loaded
# (docker does that) every bridged frame would also cross iptables/nftables ip hooks, ~15% of
# per-packet CPU. The NAT rules match the routed wan interface only. Per namespace; the files
# exist only while br_netfilter is loaded, so they are checked when a lab is built.
_BRIDGE_NF_OFF = {
    "net.bridge.bridge-nf-call-iptables": "0",
    "net.bridge.bridge-nf-call-ip6tables": "0",
    "net.bridge.bridge-nf-call-arptables": "0",
}


def _lab_sysctls(router: bool, ipv6: bool = False) -> dict[str, str]:
    values = dict(_ROUTER_SYSCTLS if router else _HOST_SYSCTLS)
    if os.path.isdir("/proc/sys/net/ipv6"):
        values.update(_V6_ON if ipv6 else _V6_OFF)
        if ipv6 and router:
            values.update(_V6_FORWARD)
    for key, value in _BRIDGE_NF_OFF.items():
        if os.path.exists("/proc/sys/" + key.replace(".", "/")):
            values[key] = value
    return values


@dataclass
class Host:
    """One lab host: a namespace with ``eth0`` and a default route (one per family it has).

    ``ip`` / ``public_ip`` / ``gateway`` are IPv4 unless the host is IPv6-only (then they are its
    IPv6 ones); ``ip6`` / ``public_ip6`` are its IPv6 ones, None without IPv6."""

    name: str
    netns: str
    ip: IpAddress  # own address (LAN address for site hosts)
    public_ip: IpAddress  # where the internet sees it (NAT's WAN address or own)
    gateway: IpAddress
    site: str | None  # None for public hosts
    nat: NatType  # NONE for public hosts
    _lab: Lab = field(repr=False)
    ip6: ipaddress.IPv6Address | None = None
    public_ip6: ipaddress.IPv6Address | None = None  # the router's wan address behind NAT66

    def argv(self, cmd: Sequence[str]) -> list[str]:
        """The argv that runs ``cmd`` inside this host's namespace."""
        return netns.exec_argv(self.netns, cmd)

    def run(
        self,
        cmd: Sequence[str],
        *,
        check: bool = False,
        timeout: float = 30.0,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """subprocess.run inside the namespace (output captured as text unless overridden)."""
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.argv(cmd), check=check, timeout=timeout, **kwargs)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in the namespace in its own session; the lab kills it at teardown."""
        kwargs["start_new_session"] = True
        proc = subprocess.Popen(self.argv(cmd), **kwargs)
        self._lab._track_process(proc)
        return proc

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
    ) -> socket.socket:
        """A socket living in this host's namespace (usable from any thread); closed at teardown."""
        sock = netns.socket_in_netns(self.netns, family, type, proto)
        self._lab._track_socket(sock)
        return sock

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn()`` in a thread inside this host's namespace and return its result."""
        return netns.call_in_netns(self.netns, fn, timeout)


@dataclass(frozen=True)
class SiteInfo:
    name: str
    nat: NatType
    router_netns: str
    public_ip: ipaddress.IPv4Address  # router's WAN address
    lan: ipaddress.IPv4Network
    hosts: tuple[str, ...]
    ipv6: V6Mode = V6Mode.OFF
    ipv4: bool = True
    public_ip6: ipaddress.IPv6Address | None = None  # router's WAN address (IPv6 sites)
    lan6: ipaddress.IPv6Network | None = None


class _SignalGuard:
    """Turns SIGTERM into SystemExit while labs are open, so with-blocks unwind and tear down."""

    def __init__(self) -> None:
        self.labs: list[Lab] = []
        self.lock = threading.Lock()
        self.previous: Any = None
        self.installed = False
        self.atexit_registered = False

    def add(self, lab: Lab) -> None:
        with self.lock:
            self.labs.append(lab)
            if not self.atexit_registered:
                atexit.register(self.close_all)
                self.atexit_registered = True
            if not self.installed and threading.current_thread() is threading.main_thread():
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)
                    self.installed = True

    def remove(self, lab: Lab) -> None:
        with self.lock:
            if lab in self.labs:
                self.labs.remove(lab)
            if not self.labs and self.installed:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, self.previous or signal.SIG_DFL)
                    self.installed = False

    @staticmethod
    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def close_all(self) -> None:
        for lab in list(self.labs):
            lab.close()


_GUARD = _SignalGuard()


@contextlib.contextmanager
def _sigint_deferred() -> Any:
    """Keep Ctrl-C from interrupting teardown half-way (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Lab:
    """A running topology. Use as a context manager, or start() / close()."""

    def __init__(
        self,
        topology: Topology,
        *,
        name: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.topology = topology
        self.run_id = state.new_run_id()
        self.prefix = state.prefix_for(self.run_id)
        self.name = name or self.run_id
        self.persistent = persistent
        self.state_file: Path = state.state_path(name if persistent and name else self.run_id)
        self.inet_netns = f"{self.prefix}inet"
        self._plans = [plan_site(i, s) for i, s in enumerate(topology.sites, start=1)]
        self._hosts: dict[str, Host] = {}
        self._sites: dict[str, SiteInfo] = {}
        self._namespaces: list[str] = []  # creation order
        self._procs: list[subprocess.Popen[Any]] = []
        self._socks: list[socket.socket] = []
        self._res_lock = threading.Lock()
        self._started = False
        self._closed = False
        # The process that owns the lab; a forked child (pyroute2 forks to reach a namespace)
        # inherits this object and the atexit hook, and must never tear the lab down.
        self._owner_pid = os.getpid()
        self.reaped: list[str] = []  # leftovers of dead runs removed at start
        self.impairments: dict[str, str] = {}  # site -> impairment backend ("netem", "tbf+nft")
        self._build_namespaces()

    # ---- public API ------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        """A site host or public host by name."""
        try:
            return self._hosts[name]
        except KeyError:
            raise KeyError(f"no host {name!r} in this lab (have: {sorted(self._hosts)})") from None

    def public_host(self, name: str) -> Host:
        host = self.host(name)
        if host.site is not None:
            raise KeyError(f"{name!r} is a site host, not a public host")
        return host

    def block_udp(self, site: str, block: bool) -> None:
        """Make `site`'s router drop all forwarded UDP (True) or let it pass again (False)."""
        router = self.site(site).router_netns
        if block:
            netns.run(netns.exec_argv(router, ["nft", "-f", "-"]),
                      input=natrules.block_udp_ruleset())
        else:
            netns.run(netns.exec_argv(router, ["nft", "delete", "table", "inet",
                                               natrules.BLOCK_TABLE]))

    def site(self, name: str) -> SiteInfo:
        return self._sites[name]

    @property
    def hosts(self) -> list[Host]:
        return list(self._hosts.values())

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (what the state file holds)."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "prefix": self.prefix,
            "persistent": self.persistent,
            "pid": os.getpid(),
            "pid_start": state.process_start_time(os.getpid()),
            "created": time.time(),
            "namespaces": self.namespaces,
            "topology": self.topology.to_dict(),
            "hosts": {
                h.name: {
                    "netns": h.netns,
                    "ip": str(h.ip),
                    "public_ip": str(h.public_ip),
                    "gateway": str(h.gateway),
                    "site": h.site,
                    "nat": h.nat.value,
                    "ip6": None if h.ip6 is None else str(h.ip6),
                    "public_ip6": None if h.public_ip6 is None else str(h.public_ip6),
                }
                for h in self._hosts.values()
            },
            "sites": {
                s.name: {
                    "router_netns": s.router_netns,
                    "nat": s.nat.value,
                    "public_ip": str(s.public_ip),
                    "lan": str(s.lan),
                    "ipv6": s.ipv6.value,
                    "ipv4": s.ipv4,
                    "public_ip6": None if s.public_ip6 is None else str(s.public_ip6),
                    "lan6": None if s.lan6 is None else str(s.lan6),
                }
                for s in self._sites.values()
            },
        }

    def start(self) -> Lab:
        if self._started:
            raise RuntimeError("lab already started")
        self._started = True
        with state.locked():
            if self.persistent and self.state_file.exists():
                raise netns.NetlabError(
                    f"a lab named {self.name!r} is already up ({self.state_file}); "
                    "take it down first"
                )
            self.reaped = state.reap_leftovers()
            state.write_state(self.state_file, self.describe())
        if not self.persistent:
            _GUARD.add(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Tear everything down. Idempotent; safe after a failed start."""
        if self._closed or not self._started or os.getpid() != self._owner_pid:
            return
        self._closed = True
        _GUARD.remove(self)
        with _sigint_deferred():
            self._teardown()

    def detach(self) -> None:
        """Leave a persistent lab running (``enclave lab up``); `destroy` removes it later."""
        if not self.persistent:
            raise RuntimeError("only persistent labs can be detached")
        self._closed = True

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- resources -------------------------------------------------------------------------

    def _track_process(self, proc: subprocess.Popen[Any]) -> None:
        with self._res_lock:
            self._procs.append(proc)

    def _track_socket(self, sock: socket.socket) -> None:
        with self._res_lock:
            self._socks.append(sock)

    def _teardown(self) -> None:
        with self._res_lock:
            procs, self._procs = self._procs, []
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()
        _stop_processes(procs)
        errors: list[str] = []
        # hosts first, routers and the internet last
        for name in reversed(self._namespaces):
            try:
                netns.delete_netns(name)
            except netns.NetlabError as exc:
                errors.append(str(exc))
        state.remove_run_files(self.prefix)
        if errors:
            log.error("netlab: teardown of %s incomplete: %s", self.run_id, "; ".join(errors))
            return  # keep the state file: the next start retries
        self.state_file.unlink(missing_ok=True)

    # ---- build -----------------------------------------------------------------------------

    def _build_namespaces(self) -> None:
        """Fill in hosts/sites/namespace names (no system calls)."""
        self._namespaces.append(self.inet_netns)
        v6 = self.topology.ipv6_internet
        public6 = plan_public6(self.topology)
        for name, iface in plan_public(self.topology).items():
            ns = f"{self.prefix}{name}"
            self._namespaces.append(ns)
            self._hosts[name] = Host(
                name=name,
                netns=ns,
                ip=iface.ip,
                public_ip=iface.ip,
                gateway=INTERNET_GW,
                site=None,
                nat=NatType.NONE,
                _lab=self,
                ip6=public6[name].ip if v6 else None,
                public_ip6=public6[name].ip if v6 else None,
            )
        for plan in self._plans:
            site = plan.site
            has6 = site.ipv6 is not V6Mode.OFF
            router = f"{self.prefix}nat-{site.name}"
            self._namespaces.append(router)
            self._sites[site.name] = SiteInfo(
                name=site.name,
                nat=site.nat,
                router_netns=router,
                public_ip=plan.uplink_router.ip,
                lan=plan.lan,
                hosts=tuple(plan.hosts),
                ipv6=site.ipv6,
                ipv4=site.ipv4,
                public_ip6=plan.uplink_router6.ip if has6 else None,
                lan6=plan.lan6 if has6 else None,
            )
            for hname, iface in plan.hosts.items():
                ns = f"{self.prefix}{hname}"
                self._namespaces.append(ns)
                ip6 = plan.hosts6[hname].ip if has6 else None
                pub6 = plan.uplink_router6.ip if site.ipv6.translates else ip6
                ip: IpAddress = iface.ip
                public: IpAddress = plan.uplink_router.ip if site.nat.translates else iface.ip
                gateway: IpAddress = plan.lan_gw.ip
                if not site.ipv4:
                    assert ip6 is not None and pub6 is not None
                    ip, public, gateway = ip6, pub6, plan.lan_gw6.ip
                self._hosts[hname] = Host(
                    name=hname,
                    netns=ns,
                    ip=ip,
                    public_ip=public,
                    gateway=gateway,
                    site=site.name,
                    nat=site.nat,
                    _lab=self,
                    ip6=ip6,
                    public_ip6=pub6,
                )

    def _build(self) -> None:
        t0 = time.monotonic()
        routers = {self.inet_netns, *(s.router_netns for s in self._sites.values())}
        v6 = self.topology.ipv6_internet
        with_v6 = {self.inet_netns} if v6 else set()
        if v6:
            with_v6.update(h.netns for h in self._hosts.values() if h.site is None)
        for s in self._sites.values():
            if s.ipv6 is not V6Mode.OFF:
                with_v6.add(s.router_netns)
                with_v6.update(self._hosts[h].netns for h in s.hosts)
        for ns in self._namespaces:
            netns.add_netns(ns)
            # before any link exists, so "default" settings reach every interface
            netns.write_sysctls(ns, _lab_sysctls(ns in routers, ns in with_v6))
        inet = self.inet_netns
        inet_cmds = [
            "link set lo up",
            "link add br0 type bridge",
            f"addr add {INTERNET_GW}/{PUBLIC_LAN.prefixlen} dev br0",
            "link set br0 up",
        ]
        if v6:
            inet_cmds.insert(3, f"addr add {INTERNET_GW6}/{PUBLIC_LAN6.prefixlen} dev br0 nodad")
        # public hosts on br0
        for i, name in enumerate(plan_public(self.topology), start=1):
            ns = self._hosts[name].netns
            inet_cmds += [
                _veth(f"p{i}", "eth0", ns, 1500),
                f"link set p{i} master br0",
                f"link set p{i} up",
            ]
        # site uplinks
        for plan in self._plans:
            k = plan.index
            router = self._sites[plan.site.name].router_netns
            inet_cmds.append(_veth(f"s{k}", "wan", router, plan.site.mtu))
            if plan.site.ipv4:
                inet_cmds.append(f"addr add {plan.uplink_inet} dev s{k}")
            if plan.site.ipv6 is not V6Mode.OFF:
                inet_cmds.append(f"addr add {plan.uplink_inet6} dev s{k} nodad")
            inet_cmds.append(f"link set s{k} up")
            if plan.site.ipv4 and not plan.site.nat.translates:
                inet_cmds.append(f"route add {plan.lan} via {plan.uplink_router.ip}")
            if plan.site.ipv6 in (V6Mode.OPEN, V6Mode.FIREWALL):
                inet_cmds.append(f"route add {plan.lan6} via {plan.uplink_router6.ip}")
        netns.ip_batch(inet, inet_cmds)  # in order: links and addresses before routes

        public6 = plan_public6(self.topology)
        for name, iface in plan_public(self.topology).items():
            host = self._hosts[name]
            cmds = ["link set lo up", f"addr add {iface} dev eth0"]
            if v6:
                cmds.append(f"addr add {public6[name]} dev eth0 nodad")
            cmds += ["link set eth0 up", f"route add default via {INTERNET_GW}"]
            if v6:
                cmds.append(f"route add ::/0 via {INTERNET_GW6}")
            netns.ip_batch(host.netns, cmds)

        for plan in self._plans:
            self._build_site(plan)
        log.info(
            "netlab: lab %s up: %d namespaces in %.2fs",
            self.run_id,
            len(self._namespaces),
            time.monotonic() - t0,
        )

    def _build_site(self, plan: SitePlan) -> None:
        site: Site = plan.site
        info = self._sites[site.name]
        router = info.router_netns
        has6 = site.ipv6 is not V6Mode.OFF
        cmds = ["link set lo up", f"link set wan mtu {site.mtu}"]
        if site.ipv4:
            cmds.append(f"addr add {plan.uplink_router} dev wan")
        if has6:
            cmds.append(f"addr add {plan.uplink_router6} dev wan nodad")
        cmds += ["link set wan up", f"link add lan mtu {site.lan_mtu} type bridge"]
        if site.ipv4:
            cmds.append(f"addr add {plan.lan_gw} dev lan")
        if has6:
            cmds.append(f"addr add {plan.lan_gw6} dev lan nodad")
        cmds.append("link set lan up")
        for i, hname in enumerate(plan.hosts, start=1):
            host_ns = self._hosts[hname].netns
            cmds += [
                _veth(f"h{i}", "eth0", host_ns, site.lan_mtu),
                f"link set h{i} master lan",
                f"link set h{i} up",
            ]
        if site.ipv4:
            cmds.append(f"route add default via {plan.uplink_inet.ip}")
        if has6:
            cmds.append(f"route add ::/0 via {plan.uplink_inet6.ip}")
        netns.ip_batch(router, cmds)
        rules = natrules.ruleset(site.nat, plan.uplink_router.ip) if site.ipv4 else ""
        rules += natrules.ruleset6(site.ipv6)
        if rules:
            netns.run(netns.exec_argv(router, ["nft", "-f", "-"]), input=rules)
        if site.block_udp:
            self.block_udp(site.name, True)
        if site.netem is not None:
            backend = impair.apply(router, self.inet_netns, f"s{plan.index}", site.netem)
            if backend is not None:
                self.impairments[site.name] = backend
        for hname, iface in plan.hosts.items():
            host = self._hosts[hname]
            hcmds = ["link set lo up"]
            if site.ipv4:
                hcmds.append(f"addr add {iface} dev eth0")
            if has6:
                hcmds.append(f"addr add {plan.hosts6[hname]} dev eth0 nodad")
            hcmds.append("link set eth0 up")
            if site.ipv4:
                hcmds.append(f"route add default via {plan.lan_gw.ip}")
            if has6:
                hcmds.append(f"route add ::/0 via {plan.lan_gw6.ip}")
            netns.ip_batch(host.netns, hcmds)
        if site.upnp:
            upnp.start(self.prefix, site.name, router, plan.uplink_router.ip, plan.lan_gw.ip,
                       plan.lan, self._track_process)


def _veth(name: str, peer: str, peer_netns: str, mtu: int) -> str:
    """ip command: a veth pair, this end here, the peer created directly in ``peer_netns``."""
    return f"link add {name} mtu {mtu} type veth peer name {peer} mtu {mtu} netns {peer_netns}"


def _stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM each process group, wait a little, then SIGKILL what is left."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE_S
    for proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def destroy(description: dict[str, Any]) -> None:
    """Tear down a lab from its state description (``enclave lab down``), state file included."""
    run_id = str(description["run_id"])
    prefix = state.prefix_for(run_id)
    names = [n for n in description.get("namespaces", []) if str(n).startswith(prefix)]
    state.destroy_namespaces(list(reversed(names)))
    state.remove_run_files(prefix)
