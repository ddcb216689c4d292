"""A site router that grants port mappings: Debian's miniupnpd (UPnP-IGD, NAT-PMP, PCP).

``Site(..., upnp=True)`` runs, inside the site's router namespace, for the lab's lifetime::

    stund -h WAN_IP -a LAN_IP          Debian's stun-server, answering on the router itself
    miniupnpd -d -f CONF -P PIDFILE    Debian's miniupnpd (the nftables build), listening on
                                       "lan" (SSDP/HTTP for UPnP-IGD, UDP 5351 for NAT-PMP and
                                       PCP), mapping on "wan"

Why the STUN server: miniupnpd refuses to map while its external address is in a reserved block
("Port forwarding is impossible"), and the lab's internet is 198.18.0.0/15 (RFC 2544). With
``ext_perform_stun`` it asks a STUN server instead, and a STUN server on the router's own
addresses reports the WAN address unchanged, each of the four tests answered (no NAT, no
filtering in front of it), so miniupnpd takes the address as public and maps.

miniupnpd's nftables backend adds its rules to chains that must exist: table ``inet miniupnpd``
(TABLE) below holds them; its base chains jump to the chains miniupnpd fills (``forward`` for
the accept rules, ``prerouting`` for the DNAT of each mapping). The lab's own NAT table drops
new inbound flows in its forward chain, so one rule is put in front of it: forward what a
mapping translated (``ct status dnat``), as a home router with UPnP does.

Configuration (CONFIG below): secure mode (a host maps only to itself), an allow rule for the
site's LAN and ports 1024-65535, deny everything else; the config, PID file and log live in
netlab's state directory under the lab's prefix (state.run_files), removed at teardown and by
the reaper after a crash. The processes die with the namespace (netns.delete_netns kills what
runs inside), and the namespace takes the nftables tables with it.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

from enclave.netlab import nat as natrules
from enclave.netlab import netns, state

TABLE = "miniupnpd"
FORWARD_CHAIN = "forward_miniupnpd"
PREROUTING_CHAIN = "prerouting_miniupnpd"
POSTROUTING_CHAIN = "postrouting_miniupnpd"
STUN_PORT = 3478
PCP_PORT = 5351
MINIUPNPD = "miniupnpd"
STUND = "stund"
START_TIMEOUT_S = 20.0  # miniupnpd's STUN test alone can take up to 3 x 3 s


def ruleset() -> str:
    """The nft script making the chains miniupnpd's nftables backend writes to."""
    return (f"table inet {TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter - 5; policy accept;\n"
            f"    jump {FORWARD_CHAIN};\n"
            "  }\n"
            f"  chain {FORWARD_CHAIN} {{\n  }}\n"
            "  chain prerouting {\n"
            "    type nat hook prerouting priority dstnat - 5; policy accept;\n"
            f"    jump {PREROUTING_CHAIN};\n"
            "  }\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat - 5; policy accept;\n"
            f"    jump {POSTROUTING_CHAIN};\n"
            "  }\n"
            f"  chain {PREROUTING_CHAIN} {{\n  }}\n"
            f"  chain {POSTROUTING_CHAIN} {{\n  }}\n"
            "}\n")


def config(wan_ip: ipaddress.IPv4Address, lan: ipaddress.IPv4Network) -> str:
    """miniupnpd.conf for a router whose WAN address is `wan_ip` and LAN `lan`."""
    return "\n".join([
        f"ext_ifname={natrules.WAN}",
        f"listening_ip={natrules.LAN}",
        "http_port=0",  # any free port; SSDP announces it
        "enable_upnp=yes",
        "enable_natpmp=yes",  # NAT-PMP and PCP (one switch in miniupnpd 2.3)
        "secure_mode=yes",
        "system_uptime=no",
        "ext_perform_stun=yes",
        f"ext_stun_host={wan_ip}",
        f"ext_stun_port={STUN_PORT}",
        f"upnp_table_name={TABLE}",
        f"upnp_nat_table_name={TABLE}",
        f"upnp_forward_chain={FORWARD_CHAIN}",
        f"upnp_nat_chain={PREROUTING_CHAIN}",
        f"upnp_nat_postrouting_chain={POSTROUTING_CHAIN}",
        "min_lifetime=30",
        "max_lifetime=86400",
        f"uuid={uuid.uuid4()}",
        f"allow 1024-65535 {lan} 1024-65535",
        "deny 0-65535 0.0.0.0/0 0-65535",
        "",
    ])


def _listening(router: str, port: int) -> bool:
    out = netns.run(netns.exec_argv(router, ["ss", "-Hlun", f"sport = :{port}"])).stdout
    return bool(out.strip())


def _wait_listening(router: str, port: int, proc: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _listening(router, port):
        if proc.poll() is not None:
            raise netns.NetlabError(f"{what} in {router} exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise netns.NetlabError(f"{what} in {router} not listening on udp {port} "
                                    f"after {START_TIMEOUT_S}s")
        time.sleep(0.1)


def start(prefix: str, site: str, router: str, wan_ip: ipaddress.IPv4Address,
          lan_ip: ipaddress.IPv4Address, lan: ipaddress.IPv4Network,
          track: Callable[[subprocess.Popen[Any]], None]) -> None:
    """Make `router` grant port mappings; `track(proc)` hands each process to the lab (stopped
    at teardown). Returns once miniupnpd answers on UDP 5351; NetlabError if it cannot."""
    netns.run(netns.exec_argv(router, ["nft", "-f", "-"]), input=ruleset())
    netns.run(netns.exec_argv(router, ["nft", "insert", "rule", "ip", natrules.TABLE, "forward",
                                       "iifname", natrules.WAN, "ct", "status", "dnat",
                                       "accept"]))
    files = state.run_files(prefix)
    conf = files / f"miniupnpd-{site}.conf"
    conf.write_text(config(wan_ip, lan))
    stund = subprocess.Popen(netns.exec_argv(router, [STUND, "-h", str(wan_ip), "-a",
                                                      str(lan_ip), "-p", str(STUN_PORT)]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    track(stund)
    _wait_listening(router, STUN_PORT, stund, STUND)
    with open(files / f"miniupnpd-{site}.log", "wb") as log:
        daemon = subprocess.Popen(
            netns.exec_argv(router, [MINIUPNPD, "-d", "-f", str(conf), "-P",
                                     str(files / f"miniupnpd-{site}.pid")]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    track(daemon)
    _wait_listening(router, PCP_PORT, daemon, MINIUPNPD)


def log_text(prefix: str, site: str) -> str:
    """What miniupnpd of `site` logged (its -d output), for a failing test's message."""
    path = state.run_files(prefix) / f"miniupnpd-{site}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def rules(router: str) -> str:
    """The router's miniupnpd table as `nft list` prints it ("" when it is gone)."""
    proc = subprocess.run(netns.exec_argv(router, ["nft", "list", "table", "inet", TABLE]),
                          capture_output=True, text=True, timeout=netns.CMD_TIMEOUT_S,
                          check=False)
    return proc.stdout if proc.returncode == 0 else ""
