"""Lab lifecycle: teardown on success, exception, signals and SIGKILL (reaped at the next start);
MTU and impairments applied; the `enclave lab` commands."""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from enclave.cli import main as enclave_main
from enclave.netlab import Lab, NatType, Netem, NetlabError, Site, Topology, netns
from enclave.netlab.probe import udp_reachable
from enclave.netlab.state import STATE_DIR, prefix_for
from enclave.netlab.topology import SitePlan
from tests.support.lab import LabFactory
from tests.support.proc import REPO

pytestmark = [pytest.mark.netlab, pytest.mark.root]

ROOT = REPO
SMALL = Topology(sites=[Site("a", nat=NatType.PORT_RESTRICTED)], public_hosts=["p"])
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14


def root_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def assert_gone(namespaces: list[str], prefix: str) -> None:
    present = netns.list_netns()
    assert not [n for n in namespaces if n in present]
    assert not [n for n in present if n.startswith(prefix)]
    assert prefix not in root_links()


def pid_gone(pid: int, wait_s: float = 3.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie awaiting its reaper)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat[stat.rindex(")") + 2] in "ZX":
            return True
        time.sleep(0.02)
    return False


def test_with_block_builds_and_tears_down(netlab_required: None) -> None:
    with Lab(SMALL) as lab:
        names = lab.namespaces
        assert all(n.startswith(lab.prefix) for n in names)
        assert set(names) <= set(netns.list_netns())
        assert lab.state_file.exists()
        state = json.loads(lab.state_file.read_text())
        assert state["pid"] == os.getpid() and state["namespaces"] == names
        assert state["hosts"]["a1"]["public_ip"] == "198.18.1.1"
        a1, p = lab.host("a1"), lab.public_host("p")
        assert (a1.netns, str(a1.ip), str(a1.gateway)) == (
            f"{lab.prefix}a1",
            "198.19.1.11",
            "198.19.1.1",
        )
        out = a1.run(["ip", "-j", "addr", "show", "dev", "eth0"], check=True)
        assert "198.19.1.11" in out.stdout
        assert a1.run(["ip", "-6", "addr", "show", "dev", "eth0"], check=True).stdout == ""
        assert a1.run(["sh", "-c", "exit 3"]).returncode == 3
        assert a1.call(lambda: Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()) == "0"
        router = lab.site("a").router_netns
        assert (
            netns.call_in_netns(
                router, lambda: Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
            )
            == "1"
        )
        seen = udp_reachable(a1, p)
        assert seen is not None and seen[0] == str(a1.public_ip)
        with pytest.raises(KeyError):
            lab.host("nope")
        with pytest.raises(KeyError):
            lab.public_host("a1")
    assert_gone(names, lab.prefix)
    assert not lab.state_file.exists()
    lab.close()  # idempotent


def test_exception_inside_with_block_tears_down_processes_and_sockets(
    netlab_required: None,
) -> None:
    with pytest.raises(RuntimeError, match="boom"), Lab(SMALL) as lab:
        names = lab.namespaces
        a1 = lab.host("a1")
        # a process group with a grandchild: both must die
        proc = a1.popen(
            ["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        grandchild = int(proc.stdout.readline())
        sock = a1.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raise RuntimeError("boom")
    assert_gone(names, lab.prefix)
    assert proc.poll() is not None
    assert pid_gone(grandchild)
    assert sock.fileno() == -1
    assert not lab.state_file.exists()


def test_failed_build_leaves_nothing(netlab_required: None) -> None:
    class FailingLab(Lab):
        def _build_site(self, plan: SitePlan) -> None:
            super()._build_site(plan)
            raise NetlabError("injected failure after the site was built")

    lab = FailingLab(SMALL)
    with pytest.raises(NetlabError, match="injected"):
        lab.start()
    assert_gone(lab.namespaces, lab.prefix)
    assert not lab.state_file.exists()


CHILD = """
import json, signal, sys, time
from enclave.netlab import Lab, NatType, Site, Topology
# Ctrl-C as in a terminal, whatever this child inherited: a suite started in the background by a
# non-interactive shell (`bash .ci/run &`) runs with SIGINT ignored, and so would this child
signal.signal(signal.SIGINT, signal.default_int_handler)
topo = Topology(sites=[Site("a", nat=NatType.SYMMETRIC)], public_hosts=["p"])
with Lab(topo) as lab:
    sleeper = lab.host("a1").popen(["sleep", "300"])
    print(json.dumps({"prefix": lab.prefix, "namespaces": lab.namespaces,
                      "state": str(lab.state_file), "sleeper": sleeper.pid}), flush=True)
    time.sleep(300)
"""


def start_child() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert child.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(child.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=20):
            child.kill()
            pytest.fail(f"child lab did not come up: {child.communicate()[1]}")
    line = child.stdout.readline()
    if not line:
        pytest.fail(f"child lab failed: {child.communicate()[1]}")
    return child, json.loads(line)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_tears_down(netlab_required: None, sig: signal.Signals) -> None:
    child, info = start_child()
    try:
        assert set(info["namespaces"]) <= set(netns.list_netns())
        child.send_signal(sig)
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    assert_gone(info["namespaces"], info["prefix"])
    assert pid_gone(info["sleeper"])
    assert not Path(info["state"]).exists()


def test_sigkilled_run_is_reaped_by_the_next_lab(lab_factory: LabFactory) -> None:
    live = lab_factory(SMALL)  # a lab of a live owner must survive the reaping
    child, info = start_child()
    child.kill()
    child.wait(timeout=10)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    child.stderr.close()
    # the dead run left everything behind
    assert set(info["namespaces"]) <= set(netns.list_netns())
    assert Path(info["state"]).exists()
    assert not pid_gone(info["sleeper"], wait_s=0.1)
    # plus an unclaimed namespace, as a crash between teardown steps would leave
    stray = prefix_for("0ff1ce") + "x"
    netns.add_netns(stray)
    try:
        lab = lab_factory(SMALL)
        assert set(info["namespaces"]) | {stray} <= set(lab.reaped)
        assert_gone(info["namespaces"], info["prefix"])
        assert stray not in netns.list_netns()
        assert pid_gone(info["sleeper"])
        assert not Path(info["state"]).exists()
        assert set(live.namespaces) <= set(netns.list_netns())
        assert live.state_file.exists()
        assert not set(live.namespaces) & set(lab.reaped)
        assert lab.prefix != live.prefix
        for each in (live, lab):  # both labs work side by side
            assert udp_reachable(each.host("a1"), each.public_host("p")) is not None
    finally:
        netns.delete_netns(stray)


def test_corrupt_state_file_is_dropped(lab_factory: LabFactory) -> None:
    bad = STATE_DIR / "pytest-corrupt.json"
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    bad.write_text('{"run_id": "abc')
    try:
        lab_factory(SMALL)
        assert not bad.exists()
    finally:
        bad.unlink(missing_ok=True)


def test_mtu_is_applied_and_enforced(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology(sites=[Site("m", mtu=1280, lan_mtu=1400)], public_hosts=["p"]))
    m1, p = lab.host("m1"), lab.public_host("p")

    def mtu(ns: str, dev: str) -> int:
        out = netns.run(["ip", "-j", "-n", ns, "link", "show", "dev", dev]).stdout
        return int(json.loads(out)[0]["mtu"])

    assert mtu(lab.site("m").router_netns, "wan") == 1280
    assert mtu(lab.inet_netns, "s1") == 1280
    assert mtu(lab.site("m").router_netns, "h1") == 1400
    assert mtu(m1.netns, "eth0") == 1400
    assert mtu(p.netns, "eth0") == 1500

    rx = p.socket()
    rx.bind(("0.0.0.0", 0))
    rx.settimeout(2)
    tx = m1.socket()
    tx.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    tx.connect((str(p.ip), rx.getsockname()[1]))
    tx.send(b"x" * 1240)  # 1268 bytes on the wire: fits 1280
    assert len(rx.recv(2000)) == 1240
    # 1300 + 28 fits the LAN (1400) but not the uplink: the router answers "fragmentation needed"
    deadline = time.monotonic() + 2
    while True:
        try:
            tx.send(b"y" * 1300)
        except OSError as exc:
            assert exc.errno == errno.EMSGSIZE
            break
        assert time.monotonic() < deadline, "no path-MTU error from the 1280-byte uplink"
        time.sleep(0.05)
    assert tx.getsockopt(socket.IPPROTO_IP, IP_MTU) == 1280


def test_impairments(lab_factory: LabFactory) -> None:
    lab = lab_factory(
        Topology(
            sites=[
                Site("lossy", netem=Netem(loss_pct=100)),
                Site("slow", netem=Netem(rate_mbit=50, loss_pct=0.5)),
                Site("clean"),
            ],
            public_hosts=["p"],
        )
    )
    p = lab.public_host("p")
    assert udp_reachable(lab.host("clean1"), p) is not None
    assert udp_reachable(lab.host("lossy1"), p) is None  # every packet lost, both directions
    assert udp_reachable(p, lab.host("lossy1"), lab.host("lossy1").public_ip) is None
    assert "clean" not in lab.impairments
    backend = lab.impairments["slow"]
    router = lab.site("slow").router_netns
    for ns, dev in ((router, "wan"), (lab.inet_netns, "s2")):
        shown = netns.run(["tc", "-n", ns, "qdisc", "show", "dev", dev]).stdout
        assert "rate 50Mbit" in shown
        if backend == "netem":
            assert "netem" in shown and "loss 0.5%" in shown
        else:
            assert backend == "tbf+nft" and "tbf" in shown
    if backend == "tbf+nft":
        rules = netns.run(netns.exec_argv(router, ["nft", "list", "ruleset"])).stdout
        assert rules.count("numgen random mod 1000000 < 5000 drop") == 2


def test_netem_delay(lab_factory: LabFactory) -> None:
    topo = Topology(sites=[Site("d", netem=Netem(delay_ms=20, jitter_ms=2, reorder_pct=5))])
    try:
        lab = lab_factory(topo)
    except NetlabError as exc:
        # kernels without sch_netem: a clear error, and nothing left behind
        assert "sch_netem" in str(exc)
        assert not [n for n in netns.list_netns() if n.endswith("-nat-d")]
        pytest.skip("this kernel has no sch_netem (CONFIG_NET_SCH_NETEM); fallback covered")
    shown = netns.run(["tc", "-n", lab.site("d").router_netns, "qdisc", "show"]).stdout
    assert "netem" in shown and "delay 20ms" in shown and "reorder 5%" in shown


def test_cli_up_status_exec_down(
    netlab_required: None, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = "pytest-cli"
    try:
        assert (
            enclave_main(["lab", "up", "--name", name, "--nat", "full-cone", "--hosts", "2"]) == 0
        )
        out = capfd.readouterr().out
        assert "a1" in out and "a2" in out and "platform" in out
        data = json.loads((STATE_DIR / f"{name}.json").read_text())
        assert data["persistent"] and data["sites"]["a"]["nat"] == "full-cone"
        assert set(data["namespaces"]) <= set(netns.list_netns())

        assert enclave_main(["lab", "up", "--name", name]) == 1  # already up
        assert "already up" in capfd.readouterr().err
        assert enclave_main(["lab", "status"]) == 0
        assert f"lab '{name}' (persistent" in capfd.readouterr().out
        assert enclave_main(["lab", "exec", "--name", name, "a2", "--", "ip", "-br", "addr"]) == 0
        assert "198.19.1.12/24" in capfd.readouterr().out
        assert enclave_main(["lab", "exec", "--name", name, "a2", "--", "false"]) == 1
        assert enclave_main(["lab", "exec", "--name", name, "zz", "--", "true"]) == 1
        assert "no host 'zz'" in capfd.readouterr().err

        # a persistent lab survives other labs' leftover reaping
        with Lab(SMALL) as other:
            assert not set(data["namespaces"]) & set(other.reaped)

        assert enclave_main(["lab", "down", "--name", name]) == 0
        assert_gone(data["namespaces"], data["prefix"])
        assert enclave_main(["lab", "down", "--name", name]) == 1
        assert enclave_main(["lab", "exec", "--name", name, "a1", "--", "true"]) == 1

        bad = tmp_path / "topo.json"
        bad.write_text(json.dumps({"sites": [{"name": "a", "nat": "carrier-grade"}]}))
        assert enclave_main(["lab", "up", "--name", name, "--topology", str(bad)]) == 1
        assert "bad topology" in capfd.readouterr().err
        bad.write_text("[1, 2")
        assert enclave_main(["lab", "up", "--name", name, "--topology", str(bad)]) == 1
        assert not (STATE_DIR / f"{name}.json").exists()
    finally:
        if (STATE_DIR / f"{name}.json").exists():
            enclave_main(["lab", "down", "--name", name])


def test_cli_selfcheck(netlab_required: None, capfd: pytest.CaptureFixture[str]) -> None:
    assert enclave_main(["lab", "selfcheck"]) == 0
    out = capfd.readouterr().out
    assert "OK: 18/18 checks" in out and "FAIL" not in out
    for v6 in ("udp6 open", "udp6 firewall", "udp6 nat66", "udp6 nat66-symmetric",
               "tcp6 firewall", "IPv6-only host",
               "firewalled LAN6 closed", "NAT66 LAN6 unroutable"):
        assert f"PASS  {v6}" in out
    assert not [n for n in netns.list_netns() if n.startswith("enl-") and "-nat-sym" in n]


def test_a_forked_child_exiting_leaves_the_lab_alone(netlab_required: None) -> None:
    """pyroute2 forks to reach a namespace (IPRoute(netns=...)); the child inherits the lab and
    the atexit hook. Its exit must not tear down the parent's lab (it once did, at random)."""
    import atexit

    with Lab(SMALL) as lab:
        pid = os.fork()
        if pid == 0:  # the child: run the exit handlers a normal interpreter exit runs
            try:
                atexit._run_exitfuncs()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert set(lab.namespaces) <= set(netns.list_netns())
        assert lab.state_file.exists()
    assert_gone(lab.namespaces, lab.prefix)
