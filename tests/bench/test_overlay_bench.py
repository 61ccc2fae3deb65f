"""Overlay benchmark: what netplumb's overlays move, next to the same
datapath built by hand, next to the underlay; and how fast peers come and go.

Run on demand only (``make bench``, or
``pytest -q -s tests/bench/test_overlay_bench.py --timeout=0``). Nothing here
asserts a timing: the figures are printed as tables, compared with the
targets (MET / MISSED) and written to bench/out/overlay.json. Only functional
failures (an overlay that does not carry packets, an iperf3 run that does not
complete, a peer whose tunnels are missing) fail a test.

Throughput: iperf3, one TCP stream of SECONDS from a guest (a named
namespace) on h1 to a guest on h2, RUNS times per path, the median reported.
The runs are interleaved (run 1 of every path, then run 2 of every path, ...)
so that a change in background load hits every path alike.

- OVS lab (2 hosts, userspace ``netdev`` datapath, underlay on ``br-phy``):
  the underlay (h1 -> h2 underlay addresses), and for each of vxlan, geneve
  and gre an overlay built by netplumb (``bridge add --kind ovs --vni N
  --tunnel T``, ``peer add``, ``attach``) and its hand-built twin
  (``ovs-vsctl add-br`` netdev + a tunnel port with key/remote_ip, veth pairs
  into the guests at the overlay MTU, ``ethtool -K eth1 tx off`` in the guest,
  addresses with ``ip``). Both coexist: distinct bridges, VNIs and subnets.
- No-OVS lab (2 hosts, underlay address on ``eth0``): the underlay, the Linux
  bridge + kernel VXLAN overlay built by netplumb, and its twin (``ip link add
  type bridge``, ``type vxlan id N local A dstport 4789 nolearning``, ``bridge
  fdb append 00:00:00:00:00:00 dev VX dst PEER``, veths at MTU 1450).

For every netplumb/twin pair the configuration of both is snapshotted (guest
and host veth MTU, queue, ``ethtool -k`` features; the OVS bridge, tunnel
interface and port rows; the VXLAN device and bridge attributes) and the
differences are printed and recorded, so a slower netplumb path comes with
the concrete difference that explains it.

Peers: a 1-host OVS lab whose host has 3 overlay bridges (2 OVS: vxlan VNI
301 and geneve VNI 302; 1 Linux + kernel VXLAN VNI 303). PEERS peers
198.18.1.1.. (addresses that need not exist) are added with one ``netplumb
peer add`` each (the CLI run directly with NETPLUMB_SOCKET, as an operator
would), then removed with ``netplumb peer del``; then the same with one
persistent Python Client (``add_peer`` / ``remove_peer``). Each run is
checked (every peer has an "up" tunnel on all 3 bridges, OVS has the ports,
the VXLAN device has the flood entries; and all gone after removal).

Addresses: underlays are the lab's (198.18.0.0/24); guests 198.19.0.0/16.
Everything (guest namespaces, labs) is removed at the end, also on failure.

Environment knobs: NETPLUMB_BENCH_RUNS (default 3), NETPLUMB_BENCH_SECONDS
(default 5), NETPLUMB_BENCH_PEERS (default 100, at most 250).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures.host import NETPLUMB
from fixtures.lab import Lab, assert_gone, lab_up, require_lab

RUNS = int(os.environ.get("NETPLUMB_BENCH_RUNS", "3"))
SECONDS = float(os.environ.get("NETPLUMB_BENCH_SECONDS", "5"))
PEERS = min(int(os.environ.get("NETPLUMB_BENCH_PEERS", "100")), 250)
WINDOW = 10  # first/last window of the peer runs

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "bench" / "out" / "overlay.json"

# Targets (from the issue). Reported, never asserted.
TARGET_TWIN_RATIO = 0.9  # each backend >= 0.9 x its hand-built twin
TARGET_LINUX_UNDERLAY = 0.6  # Linux VXLAN >= 0.6 x the underlay (no-OVS lab)
TARGET_PEERS_S = 5.0  # 100 peers added in <= 5 s

# (tunnel, short name, netplumb VNI, twin VNI, overlay MTU over a 1500 underlay)
OVS_TUNNELS = (
    ("vxlan", "vx", 211, 221, 1450),
    ("geneve", "gn", 212, 222, 1450),
    ("gre", "gr", 213, 223, 1458),
)
LINUX_VNI, LINUX_TWIN_VNI, LINUX_MTU = 214, 224, 1450
PEER_BRIDGES = (  # (name, kind, tunnel, vni)
    ("pbvx", "ovs", "vxlan", 301),
    ("pbgn", "ovs", "geneve", 302),
    ("pblx", "linux", "vxlan", 303),
)
ZERO_MAC = "00:00:00:00:00:00"


def peer_address(k: int) -> str:
    """The k-th benchmark peer (k >= 1): 198.18.1.1, 198.18.1.2, ..."""
    return f"198.18.1.{k}"


# ------------------------------------------------------------- commands


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a program (no shell); a failure names the command and its stderr."""
    res = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and res.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} -> exit {res.returncode}: {(res.stderr or res.stdout).strip()}"
        )
    return res


def np_json(lab: Lab, host: str, *args: str) -> Any:
    """``netplumb --json ARGS`` in the host, through the lab (as the
    multihost tests do); a failure fails the test."""
    res = lab.netplumb(host, "--json", *args)
    assert res.returncode == 0, f"{host}: netplumb {' '.join(args)}: {res.stderr or res.stdout}"
    return json.loads(res.stdout) if res.stdout.strip() else {}


def ping_until(netns: str, address: str, tries: int = 10) -> bool:
    """The userspace datapath drops the first packets towards a peer whose
    underlay MAC it has not learnt yet: try a few times."""
    for _ in range(tries):
        res = sh(
            "ip",
            "netns",
            "exec",
            netns,
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "1",
            address,
            check=False,
        )
        if res.returncode == 0:
            return True
        time.sleep(0.2)
    return False


def iperf(client_ns: str, server_ns: str, address: str, seconds: float = SECONDS) -> dict[str, Any]:
    """One TCP stream from ``client_ns`` to an iperf3 server on ``address``
    in ``server_ns``: {"gbps", "retransmits", "mss"}."""
    port = "5201"
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", address, "-p", port],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        argv = ["ip", "netns", "exec", client_ns, "iperf3", "-J", "-c", address, "-p", port]
        argv += ["-t", f"{seconds:g}", "--connect-timeout", "2000"]
        deadline = time.monotonic() + 5
        while True:
            res = sh(*argv, check=False, timeout=seconds + 60)
            try:
                doc = json.loads(res.stdout)
            except ValueError:
                doc = {"error": res.stderr.strip() or "no JSON output"}
            # iperf3 3.12 -J exits 0 even when it could not connect.
            error = doc.get("error") or ("" if res.returncode == 0 else "failed")
            refused = "connection refused" in str(error).lower()
            if not refused or time.monotonic() >= deadline or srv.poll() is not None:
                break
            time.sleep(0.1)  # the server was not listening yet
        end = doc.get("end", {})
        if error or "sum_received" not in end or "sum_sent" not in end:
            raise AssertionError(
                f"iperf3 {client_ns} -> {address} ({server_ns}) failed: {error or 'no result'}\n"
                f"{res.stdout[-1500:]}{res.stderr}"
            )
        return {
            "gbps": end["sum_received"]["bits_per_second"] / 1e9,
            "retransmits": int(end["sum_sent"].get("retransmits", 0)),
            "mss": int(doc.get("start", {}).get("tcp_mss_default", 0)),
        }
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()
        if srv.stderr:
            srv.stderr.close()


# ------------------------------------------------------------ test beds


def list_netns() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line]


class Guests:
    """Named guest namespaces (``<lab prefix>-<tag>``), deleted at the end."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []

    def new(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}"
        self.names.append(name)  # before creating: cleanup also covers a half-made one
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def cleanup(self) -> None:
        for name in self.names:
            sh("ip", "netns", "del", name, check=False)
        left = [n for n in self.names if n in list_netns()]
        self.names = left
        assert not left, f"guest namespaces left behind: {left}"


@dataclass
class Bed:
    lab: Lab
    guests: Guests


@contextmanager
def bed(hosts: int, ovs: bool) -> Iterator[Bed]:
    """A lab with a unique prefix plus its guests; the guests are deleted,
    then the lab torn down, whatever happens, and both checked gone."""
    require_lab(ovs=ovs)
    with lab_up(hosts, ovs=ovs) as lab:
        guests = Guests(lab.prefix)
        try:
            yield Bed(lab, guests)
        finally:
            guests.cleanup()
    assert_gone(lab)


@pytest.fixture
def ovs_lab2() -> Iterator[Bed]:
    with bed(2, ovs=True) as b:
        yield b


@pytest.fixture
def plain_lab2() -> Iterator[Bed]:
    with bed(2, ovs=False) as b:
        yield b


@pytest.fixture
def ovs_lab1() -> Iterator[Bed]:
    with bed(1, ovs=True) as b:
        yield b


# ------------------------------------------------------------- datapaths


@dataclass
class Path_:
    """One measured datapath: iperf3 from ``client_ns`` to ``address`` in
    ``server_ns``; ``ends`` says, per host, what to snapshot."""

    key: str  # "ovs-vxlan/netplumb", "ovs/underlay", ...
    client_ns: str
    server_ns: str
    address: str
    ends: list[dict[str, str]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        g = [s["gbps"] for s in self.samples]
        return {
            "median_gbps": statistics.median(g) if g else None,
            "min_gbps": min(g) if g else None,
            "max_gbps": max(g) if g else None,
            "retransmits_median": statistics.median(s["retransmits"] for s in self.samples)
            if self.samples
            else None,
            "mss": self.samples[0]["mss"] if self.samples else None,
            "samples": [
                {**s, "gbps": round(s["gbps"], 4)} for s in self.samples
            ],  # in the order run
        }


def underlay_path(b: Bed, lab_kind: str) -> Path_:
    h1, h2 = b.lab.hosts
    return Path_(f"{lab_kind}/underlay", h1.netns, h2.netns, h2.underlay_address)


def netplumb_ovs_overlay(b: Bed, tunnel: str, short: str, vni: int) -> Path_:
    lab = b.lab
    br = f"b{short}"
    for h in lab.hosts:
        np_json(
            lab, h.name, "bridge", "add", br, "--kind", "ovs", "--vni", str(vni), "--tunnel", tunnel
        )
    return _netplumb_guests(b, f"ovs-{tunnel}", br, vni, ovs_bridge=br)


def netplumb_linux_overlay(b: Bed) -> Path_:
    lab = b.lab
    br = "blx"
    for h in lab.hosts:
        np_json(lab, h.name, "bridge", "add", br, "--kind", "linux", "--vni", str(LINUX_VNI))
    return _netplumb_guests(
        b, "linux-vxlan", br, LINUX_VNI, linux_bridge=br, vxlan=f"npvx{LINUX_VNI}"
    )


def _netplumb_guests(b: Bed, backend: str, br: str, vni: int, **end: str) -> Path_:
    nss, ends = [], []
    for i, h in enumerate(b.lab.hosts, start=1):
        ns = b.guests.new(f"{br}{i}")
        ep = np_json(b.lab, h.name, "attach", br, f"netns:{ns}", f"198.19.{vni}.{i}/24")
        nss.append(ns)
        ends.append(
            {
                "host": h.name,
                "hostns": h.netns,
                "guest": ns,
                "guest_if": ep["ifname"],
                "host_if": ep["host_ifname"],
                **end,
            }
        )
    return Path_(f"{backend}/netplumb", nss[0], nss[1], f"198.19.{vni}.2", ends)


def mesh(b: Bed) -> None:
    """Every host peers with every other (by netplumb)."""
    lab = b.lab
    for h in lab.hosts:
        for other in lab.hosts:
            if other is not h:
                np_json(lab, h.name, "peer", "add", other.underlay_address, "--name", other.name)


def _twin_guest(
    b: Bed, h: Any, i: int, br: str, vni: int, mtu: int, tx_off: bool
) -> dict[str, str]:
    """A veth pair at ``mtu`` from the host into a new guest, addressed with
    ``ip``; the host end is returned for plugging into the bridge."""
    ns = b.guests.new(f"{br}{i}")
    hif = f"{br}-p{i}"
    sh(
        "ip",
        "-n",
        h.netns,
        "link",
        "add",
        hif,
        "mtu",
        str(mtu),
        "type",
        "veth",
        "peer",
        "name",
        "eth1",
        "mtu",
        str(mtu),
        "netns",
        ns,
    )
    sh("ip", "-n", ns, "addr", "add", f"198.19.{vni}.{i}/24", "dev", "eth1")
    sh("ip", "-n", ns, "link", "set", "eth1", "up")
    if tx_off:
        sh("ip", "netns", "exec", ns, "ethtool", "-K", "eth1", "tx", "off")
    return {"host": h.name, "hostns": h.netns, "guest": ns, "guest_if": "eth1", "host_if": hif}


def twin_ovs_overlay(b: Bed, tunnel: str, short: str, vni: int, mtu: int) -> Path_:
    """The hand-built twin of an OVS overlay (the recipe of ENVIRONMENT.md)."""
    lab = b.lab
    br, tun = f"tw{short}", f"tw{short}-tun"
    ends = []
    for i, h in enumerate(lab.hosts, start=1):
        peer = lab.hosts[2 - i].underlay_address
        lab.vsctl(
            h,
            "--",
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
            "--",
            "add-port",
            br,
            tun,
            "--",
            "set",
            "interface",
            tun,
            f"type={tunnel}",
            f"options:key={vni}",
            f"options:remote_ip={peer}",
        )
        end = _twin_guest(b, h, i, br, vni, mtu, tx_off=True)
        lab.vsctl(h, "add-port", br, end["host_if"])
        sh("ip", "-n", h.netns, "link", "set", end["host_if"], "up")
        ends.append({**end, "ovs_bridge": br})
    return Path_(f"ovs-{tunnel}/twin", ends[0]["guest"], ends[1]["guest"], f"198.19.{vni}.2", ends)


def twin_linux_overlay(b: Bed) -> Path_:
    """The hand-built twin of a Linux bridge + kernel VXLAN overlay."""
    lab = b.lab
    br, vx, vni = "twlx", "twlx-vx", LINUX_TWIN_VNI
    ends = []
    for i, h in enumerate(lab.hosts, start=1):
        peer = lab.hosts[2 - i].underlay_address
        ns = h.netns
        sh("ip", "-n", ns, "link", "add", br, "type", "bridge")
        sh("ip", "-n", ns, "link", "set", br, "up")
        sh(
            "ip",
            "-n",
            ns,
            "link",
            "add",
            vx,
            "mtu",
            str(LINUX_MTU),
            "type",
            "vxlan",
            "id",
            str(vni),
            "local",
            h.underlay_address,
            "dstport",
            "4789",
            "nolearning",
        )
        sh("ip", "-n", ns, "link", "set", vx, "master", br, "up")
        sh("bridge", "-n", ns, "fdb", "append", ZERO_MAC, "dev", vx, "dst", peer)
        end = _twin_guest(b, h, i, br, vni, LINUX_MTU, tx_off=False)
        sh("ip", "-n", ns, "link", "set", end["host_if"], "master", br, "up")
        ends.append({**end, "linux_bridge": br, "vxlan": vx})
    return Path_("linux-vxlan/twin", ends[0]["guest"], ends[1]["guest"], f"198.19.{vni}.2", ends)


def measure(paths: list[Path_]) -> None:
    """RUNS interleaved rounds over ``paths`` (each first checked to carry
    packets), printing every sample as it comes."""
    for p in paths:
        assert ping_until(p.client_ns, p.address), f"{p.key}: {p.address} unreachable"
    for r in range(1, RUNS + 1):
        for p in paths:
            s = iperf(p.client_ns, p.server_ns, p.address)
            p.samples.append(s)
            print(
                f"  run {r}/{RUNS}  {p.key:<22} {s['gbps']:7.3f} Gbit/s  "
                f"{s['retransmits']:6d} retr  MSS {s['mss']}"
            )


# ------------------------------------------------------------- snapshots


def _ethtool_k(ns: str, ifname: str) -> dict[str, str]:
    out = sh("ip", "netns", "exec", ns, "ethtool", "-k", ifname).stdout
    feats = {}
    for line in out.splitlines()[1:]:
        name, sep, value = line.strip().partition(":")
        if sep:
            feats[name.strip()] = value.strip()
    return feats


LINK_KEYS = (
    "mtu",
    "txqlen",
    "qdisc",
    "operstate",
    "gso_max_size",
    "gso_max_segs",
    "gro_max_size",
    "tso_max_size",
    "num_tx_queues",
    "num_rx_queues",
)


def _link(ns: str, ifname: str) -> dict[str, Any]:
    out = sh("ip", "-j", "-d", "-n", ns, "link", "show", "dev", ifname).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def _link_facts(ns: str, ifname: str, label: str) -> dict[str, Any]:
    d = _link(ns, ifname)
    facts: dict[str, Any] = {f"{label} {k}": d.get(k) for k in LINK_KEYS}
    for k, v in _ethtool_k(ns, ifname).items():
        facts[f"{label} ethtool {k}"] = v
    return facts


def _ovs_get(lab: Lab, host: str, table: str, record: str, column: str) -> str:
    res = sh(*lab_vsctl_argv(lab, host), "--if-exists", "get", table, record, column, check=False)
    return res.stdout.strip() if res.returncode == 0 else f"(error: {res.stderr.strip()})"


def lab_vsctl_argv(lab: Lab, host: str) -> list[str]:
    h = lab.host(host)
    return ["ovs-vsctl", f"--db=unix:{h.db_socket}", "--timeout=30"]


def _ovs_map(text: str) -> dict[str, str]:
    """``{key="211", local_ip="198.18.0.11"}`` -> a dict."""
    return {k: v.strip('"') for k, v in re.findall(r'([\w:-]+)=("[^"]*"|[^,}\s]+)', text)}


def _tunnel_port(lab: Lab, host: str, bridge: str) -> str:
    for port in lab.vsctl(host, "list-ports", bridge).stdout.split():
        if _ovs_get(lab, host, "Interface", port, "type") in ("vxlan", "geneve", "gre"):
            return port
    return ""


def snapshot(lab: Lab, end: dict[str, str]) -> dict[str, Any]:
    """What decides a datapath's speed, without names and addresses: the
    guest and host ends of the veth, and the bridge and tunnel."""
    host, hostns = end["host"], end["hostns"]
    facts = _link_facts(end["guest"], end["guest_if"], "guest veth")
    facts.update(_link_facts(hostns, end["host_if"], "host veth"))
    if "ovs_bridge" in end:
        br = end["ovs_bridge"]
        for col in ("datapath_type", "fail_mode", "other_config", "protocols"):
            facts[f"ovs bridge {col}"] = _ovs_get(lab, host, "Bridge", br, col)
        facts["ovs bridge internal mtu"] = _ovs_get(lab, host, "Interface", br, "mtu")
        tun = _tunnel_port(lab, host, br)
        facts["ovs tunnel type"] = _ovs_get(lab, host, "Interface", tun, "type")
        opts = _ovs_map(_ovs_get(lab, host, "Interface", tun, "options"))
        opts.pop("key", None)  # the VNI: differs by design
        peer = opts.pop("remote_ip", "")
        facts["ovs tunnel remote_ip is the peer"] = peer.startswith("198.18.0.")
        for k, v in sorted(opts.items()):
            facts[f"ovs tunnel options:{k}"] = (
                "(this host's underlay)" if v == lab.host(host).underlay_address else v
            )
        for col in ("other_config", "mtu_request", "ingress_policing_rate", "bfd"):
            facts[f"ovs tunnel iface {col}"] = _ovs_get(lab, host, "Interface", tun, col)
        facts["ovs tunnel port protected"] = _ovs_get(lab, host, "Port", tun, "protected")
        for col in ("mtu_request", "mtu", "other_config", "ingress_policing_rate"):
            facts[f"ovs veth iface {col}"] = _ovs_get(lab, host, "Interface", end["host_if"], col)
        facts["ovs veth port tag"] = _ovs_get(lab, host, "Port", end["host_if"], "tag")
        facts["ovs veth port qos"] = _ovs_get(lab, host, "Port", end["host_if"], "qos")
    if "vxlan" in end:
        vx = _link(hostns, end["vxlan"])
        data = vx.get("linkinfo", {}).get("info_data", {})
        for k, v in sorted(data.items()):
            if k in ("id", "local", "link"):
                continue
            facts[f"vxlan {k}"] = v
        for k in LINK_KEYS:
            facts[f"vxlan link {k}"] = vx.get(k)
        for k, v in _ethtool_k(hostns, end["vxlan"]).items():
            facts[f"vxlan ethtool {k}"] = v
        fdb = json.loads(
            sh("bridge", "-j", "-n", hostns, "fdb", "show", "dev", end["vxlan"]).stdout
        )
        facts["vxlan flood entries"] = sum(1 for e in fdb if e.get("mac") == ZERO_MAC)
        br = _link(hostns, end["linux_bridge"])
        facts["linux bridge mtu"] = br.get("mtu")
        bdata = br.get("linkinfo", {}).get("info_data", {})
        for k in (
            "stp_state",
            "vlan_filtering",
            "multicast_snooping",
            "nf_call_iptables",
            "nf_call_ip6tables",
            "nf_call_arptables",
            "ageing_time",
        ):
            facts[f"linux bridge {k}"] = bdata.get(k)
        port = _link(hostns, end["host_if"]).get("linkinfo", {}).get("info_slave_data", {})
        for k in ("learning", "flood", "isolated", "neigh_suppress", "proxy_arp"):
            facts[f"linux bridge port (veth) {k}"] = port.get(k)
    return facts


def differences(np_path: Path_, twin: Path_, lab: Lab) -> dict[str, Any]:
    """Per host, the facts where netplumb's path and its twin differ."""
    out: dict[str, Any] = {}
    for a, b in zip(np_path.ends, twin.ends, strict=True):
        fa, fb = snapshot(lab, a), snapshot(lab, b)
        diff = {
            k: {"netplumb": fa.get(k), "twin": fb.get(k)}
            for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k)
        }
        out[a["host"]] = {"differences": diff, "netplumb": fa, "twin": fb}
    return out


# ----------------------------------------------------------------- report


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(cells)
        )

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


PATH_LABELS = {
    "ovs/underlay": "underlay h1->h2 (br-phy, OVS lab)",
    "plain/underlay": "underlay h1->h2 (eth0, no-OVS lab)",
}


def throughput_table(tp: dict[str, Any]) -> str:
    rows = []
    for key, s in tp.items():
        runs = " ".join(fmt(x["gbps"], ".2f") for x in s["samples"])
        rows.append(
            [
                key,
                PATH_LABELS.get(key, key.split("/")[1]),
                fmt(s["median_gbps"]),
                runs,
                fmt(s["retransmits_median"], ".0f"),
                str(s["mss"]),
            ]
        )
    head = ["path", "what", "median Gbit/s", "runs", "retr/run", "MSS"]
    return table(head, rows)


def ratios(tp: dict[str, Any]) -> list[dict[str, Any]]:
    """netplumb/twin per backend; Linux VXLAN/underlay; OVS overlay/underlay
    (informational)."""

    def med(key: str) -> float | None:
        s = tp.get(key)
        return s["median_gbps"] if s else None

    out = []
    for backend in ("ovs-vxlan", "ovs-geneve", "ovs-gre", "linux-vxlan"):
        a, b = med(f"{backend}/netplumb"), med(f"{backend}/twin")
        if a is not None and b:
            out.append(
                {
                    "target": f"{backend}: netplumb >= {TARGET_TWIN_RATIO:g} x hand-built twin",
                    "value": a / b,
                    "numerator": a,
                    "denominator": b,
                    "limit": TARGET_TWIN_RATIO,
                    "met": a / b >= TARGET_TWIN_RATIO,
                }
            )
    a, b = med("linux-vxlan/netplumb"), med("plain/underlay")
    if a is not None and b:
        out.append(
            {
                "target": f"linux-vxlan (netplumb) >= {TARGET_LINUX_UNDERLAY:g} x underlay "
                "(no-OVS lab)",
                "value": a / b,
                "numerator": a,
                "denominator": b,
                "limit": TARGET_LINUX_UNDERLAY,
                "met": a / b >= TARGET_LINUX_UNDERLAY,
            }
        )
    for backend in ("ovs-vxlan", "ovs-geneve", "ovs-gre"):
        a, b = med(f"{backend}/netplumb"), med("ovs/underlay")
        if a is not None and b:
            out.append(
                {
                    "target": f"{backend} (netplumb) / underlay through br-phy (info)",
                    "value": a / b,
                    "numerator": a,
                    "denominator": b,
                    "limit": None,
                    "met": None,
                }
            )
    return out


def peers_table(runs: dict[str, Any]) -> str:
    rows = [
        [
            key,
            PEER_LABELS[key],
            str(s["count"]),
            fmt(s["total_s"], ".2f"),
            fmt(s["p50_ms"], ".1f"),
            fmt(s["p90_ms"], ".1f"),
            fmt(s["max_ms"], ".1f"),
            fmt(s["mean_first_ms"], ".1f"),
            fmt(s["mean_last_ms"], ".1f"),
        ]
        for key, s in runs.items()
    ]
    head = [
        "run",
        "how",
        "peers",
        "total s",
        "p50 ms",
        "p90 ms",
        "max ms",
        f"first{WINDOW} ms",
        f"last{WINDOW} ms",
    ]
    return table(head, rows)


PEER_LABELS = {
    "cli_add": "netplumb peer add (one process per peer)",
    "cli_del": "netplumb peer del (one process per peer)",
    "client_add": "Client.add_peer (one persistent gRPC channel)",
    "client_del": "Client.remove_peer (one persistent gRPC channel)",
}


def peer_verdicts(runs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in ("cli_add", "client_add"):
        if key in runs:
            v = runs[key]["total_s"]
            out.append(
                {
                    "target": f"{PEERS} peers added via {key.split('_')[0]} in <= "
                    f"{TARGET_PEERS_S:g} s",
                    "value": v,
                    "limit": TARGET_PEERS_S,
                    "met": v <= TARGET_PEERS_S,
                }
            )
    return out


def diff_lines(diffs: dict[str, Any]) -> list[str]:
    lines = []
    for backend, per_host in diffs.items():
        found = False
        for host, d in per_host.items():
            for k, v in d["differences"].items():
                found = True
                lines.append(
                    f"  {backend} {host}: {k}: netplumb {v['netplumb']!r}, twin {v['twin']!r}"
                )
        if not found:
            lines.append(
                f"  {backend}: no difference (guest/host veth, ethtool -k, bridge, tunnel)"
            )
    return lines


def git(*argv: str) -> str:
    res = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True)
    return res.stdout.strip()


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    doc: dict[str, Any] = {"throughput": {}, "differences": {}, "peers": {}, "labs": {}}
    yield doc
    if not any(doc[k] for k in ("throughput", "peers")):
        return
    tp, peers = doc["throughput"], doc["peers"]
    targets = [t for t in ratios(tp) if t["met"] is not None] + peer_verdicts(peers)
    out = {
        "benchmark": "overlay",
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "host": {
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "ovs": sh("ovs-vswitchd", "--version").stdout.split("\n")[0],
            "iperf3": sh("iperf3", "--version").stdout.split("\n")[0],
        },
        "config": {
            "runs": RUNS,
            "seconds": SECONDS,
            "iperf": "iperf3 -c, one TCP stream, guest on h1 -> guest on h2; median of runs",
            "ovs_tunnels": [
                {"tunnel": t, "netplumb_vni": v, "twin_vni": tv, "mtu": m}
                for t, _, v, tv, m in OVS_TUNNELS
            ],
            "linux": {"netplumb_vni": LINUX_VNI, "twin_vni": LINUX_TWIN_VNI, "mtu": LINUX_MTU},
            "peers": PEERS,
            "peer_addresses": f"{peer_address(1)}..{peer_address(PEERS)}",
            "peer_bridges": [
                {"name": n, "kind": k, "tunnel": t, "vni": v} for n, k, t, v in PEER_BRIDGES
            ],
            "labs": doc["labs"],
        },
        "throughput": tp,
        "ratios": ratios(tp),
        "differences": doc["differences"],
        "peers": peers,
        "targets": targets,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, default=str) + "\n")

    print("\n\n=== netplumb overlay benchmark ===")
    if tp:
        print(
            f"\nthroughput: iperf3, one TCP stream, {SECONDS:g} s, guest h1 -> guest h2, "
            f"{RUNS} interleaved runs per path, median"
        )
        print(throughput_table(tp))
        print("\nratios (medians)")
        for r in out["ratios"]:
            mark = "" if r["met"] is None else ("MET    " if r["met"] else "MISSED ")
            print(
                f"  {mark}{r['target']}: {r['numerator']:.3f} / {r['denominator']:.3f} "
                f"= {r['value']:.2f}"
            )
    if doc["differences"]:
        print("\nconfiguration differences, netplumb vs hand-built twin (per host):")
        print("\n".join(diff_lines(doc["differences"])))
    if peers:
        print(
            f"\npeers: {PEERS} peers on one host with 3 overlay bridges "
            "(OVS vxlan 301, OVS geneve 302, Linux+kernel VXLAN 303)"
        )
        print(peers_table(peers))
    print("\ntargets")
    for t in targets:
        mark = "MET   " if t["met"] else "MISSED"
        print(f"  {mark} {t['target']}: {t['value']:.2f}")
    print(f"\nfigures written to {OUT.relative_to(REPO)}")


def record(doc: dict[str, Any], paths: list[Path_]) -> None:
    for p in paths:
        doc["throughput"][p.key] = p.summary()


# ------------------------------------------------------------------ tests
# `report` comes first in every test: it is set up first and torn down last,
# after every lab is gone, and prints the summary.


def test_linux_vxlan_vs_twin_and_underlay(report: dict[str, Any], plain_lab2: Bed) -> None:
    b = plain_lab2
    report["labs"]["plain"] = f"{b.lab.prefix}: 2 hosts, --no-ovs (underlay on eth0)"
    netplumb = netplumb_linux_overlay(b)
    mesh(b)
    twin = twin_linux_overlay(b)
    paths = [underlay_path(b, "plain"), netplumb, twin]
    print(f"\nno-OVS lab {b.lab.prefix}: underlay, Linux VXLAN by netplumb, hand-built twin")
    try:
        measure(paths)
    finally:
        record(report, paths)
    report["differences"]["linux-vxlan"] = differences(netplumb, twin, b.lab)
    print(throughput_table({p.key: p.summary() for p in paths}))


def test_ovs_overlays_vs_twins_and_underlay(report: dict[str, Any], ovs_lab2: Bed) -> None:
    b = ovs_lab2
    report["labs"]["ovs"] = f"{b.lab.prefix}: 2 hosts, OVS netdev, underlay on br-phy"
    mesh(b)
    pairs = []
    for tunnel, short, vni, twin_vni, mtu in OVS_TUNNELS:
        netplumb = netplumb_ovs_overlay(b, tunnel, short, vni)
        twin = twin_ovs_overlay(b, tunnel, short, twin_vni, mtu)
        pairs.append((tunnel, netplumb, twin))
    paths = [underlay_path(b, "ovs")] + [p for _, n, t in pairs for p in (n, t)]
    print(f"\nOVS lab {b.lab.prefix}: underlay, OVS overlays by netplumb, hand-built twins")
    try:
        measure(paths)
    finally:
        record(report, paths)
    for tunnel, netplumb, twin in pairs:
        report["differences"][f"ovs-{tunnel}"] = differences(netplumb, twin, b.lab)
    print(throughput_table({p.key: p.summary() for p in paths}))


def _summarize_calls(samples_s: list[float]) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in samples_s)
    raw = [x * 1000 for x in samples_s]
    w = min(WINDOW, len(raw) // 2) or 1

    def pct(p: float) -> float:
        pos = (len(ms) - 1) * p / 100
        lo, hi = int(pos), min(int(pos) + 1, len(ms) - 1)
        return ms[lo] + (ms[hi] - ms[lo]) * (pos - lo)

    return {
        "count": len(raw),
        "total_s": sum(samples_s),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "max_ms": max(raw),
        "mean_first_ms": statistics.fmean(raw[:w]),
        "mean_last_ms": statistics.fmean(raw[-w:]),
        "samples_ms": [round(x, 2) for x in raw],
    }


def check_peers(b: Bed, client: Any, present: bool) -> None:
    """Every benchmark peer has an "up" tunnel on all 3 bridges (OVS ports
    and VXLAN flood entries really there), or none is left."""
    lab, h = b.lab, b.lab.hosts[0]
    want = {peer_address(k) for k in range(1, PEERS + 1)}
    peers = {p.address: p for p in client.list_peers()}
    if not present:
        assert not want & set(peers), f"peers left: {sorted(want & set(peers))[:5]} ..."
    else:
        assert want <= set(peers), f"missing peers: {sorted(want - set(peers))[:5]} ..."
        bad = [
            f"{a}: {[(t.bridge, t.state) for t in peers[a].tunnels]}"
            for a in sorted(want)
            if sorted(t.bridge for t in peers[a].tunnels) != sorted(n for n, *_ in PEER_BRIDGES)
            or {t.state for t in peers[a].tunnels} != {"up"}
        ]
        assert not bad, f"peers without all tunnels up: {bad[:3]}"
    n = PEERS if present else 0
    for name, kind, _, vni in PEER_BRIDGES:
        if kind == "ovs":
            remotes = set()
            for port in lab.vsctl(h, "list-ports", name).stdout.split():
                opts = _ovs_map(_ovs_get(lab, h.name, "Interface", port, "options"))
                if opts.get("remote_ip") in want:
                    remotes.add(opts["remote_ip"])
            assert len(remotes) == n, f"{name}: {len(remotes)} tunnel ports to the peers, not {n}"
        else:
            out = sh("bridge", "-j", "-n", h.netns, "fdb", "show", "dev", f"npvx{vni}").stdout
            dsts = {e.get("dst") for e in json.loads(out) if e.get("mac") == ZERO_MAC}
            assert len(dsts & want) == n, f"npvx{vni}: {len(dsts & want)} flood entries, not {n}"


def test_peers_add_remove(report: dict[str, Any], ovs_lab1: Bed) -> None:
    b = ovs_lab1
    lab, h = b.lab, b.lab.hosts[0]
    report["labs"]["peers"] = f"{lab.prefix}: 1 host, OVS netdev"
    for name, kind, tunnel, vni in PEER_BRIDGES:
        np_json(
            lab,
            h.name,
            "bridge",
            "add",
            name,
            "--kind",
            kind,
            "--vni",
            str(vni),
            "--tunnel",
            tunnel,
        )
    addrs = [peer_address(k) for k in range(1, PEERS + 1)]
    env = dict(os.environ, NETPLUMB_SOCKET=h.socket)
    runs = report["peers"]

    def cli(*args: str) -> float:
        t0 = time.perf_counter()
        res = subprocess.run([NETPLUMB, *args], env=env, capture_output=True, text=True, timeout=60)
        dt = time.perf_counter() - t0
        assert res.returncode == 0, f"netplumb {' '.join(args)} -> {res.returncode}: {res.stderr}"
        return dt

    with lab.client(h) as client:
        client.status()  # connected before anything is timed
        print(f"\n1-host OVS lab {lab.prefix}: {PEERS} peers on 3 overlay bridges")

        runs["cli_add"] = _summarize_calls([cli("peer", "add", a) for a in addrs])
        check_peers(b, client, present=True)
        runs["cli_del"] = _summarize_calls([cli("peer", "del", a) for a in addrs])
        check_peers(b, client, present=False)

        def timed_client(fn: Any, a: str) -> float:
            t0 = time.perf_counter()
            fn(a)
            return time.perf_counter() - t0

        runs["client_add"] = _summarize_calls([timed_client(client.add_peer, a) for a in addrs])
        check_peers(b, client, present=True)
        gone = []
        for a in addrs:
            t0 = time.perf_counter()
            assert client.remove_peer(a).existed, f"remove_peer({a}) removed nothing"
            gone.append(time.perf_counter() - t0)
        runs["client_del"] = _summarize_calls(gone)
        check_peers(b, client, present=False)
    print(peers_table(runs))
