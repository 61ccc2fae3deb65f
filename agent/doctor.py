"""``netplumb doctor``: is this host set up so that netplumb can work?

Run on the daemon's host, as root, in the network namespace netplumbd runs
in, and it works whether netplumbd is up or not (that is when people run
it): it reads the daemon's configuration and its recorded state (read-only:
the state file is never written), looks at the host through the agent's own
drivers, and, when the daemon answers, asks it for its view too.

Every check is a ``Check(name, status, detail, fix)``. The decisions are the
``judge_*`` functions and ``forwarding_needs``: pure, over plain values, and
unit-tested; ``diagnose`` gathers the values (the only I/O) and calls them.

The checks, by name:

    config              the configuration file parses (defaults without one)
    state-file          STATE_DIR/state.json is readable and parseable
    socket              the API socket exists and is a socket
    socket-permissions  mode 0660, owner root, group socket_group (which exists)
    socket-connect      the caller may connect to it
    daemon              netplumbd answers Status, with the installed version
    daemon-config       the daemon runs with the configuration doctor read
    bridges             every recorded bridge exists on the host
    endpoints           every recorded endpoint whose guest runs has its interfaces
    ovs                 OVSDB is reachable (a failure only when needed)
    ovs-vswitchd        ovs-vswitchd runs (when OVS bridges are recorded)
    ovs-datapath        each OVS bridge's datapath type is one the kernel runs
    userspace-tunnel    netdev overlays: the tunnel source is on a netdev OVS
                        bridge's internal port and OVS routes each peer there
    tunnels             the daemon's view of every tunnel to every peer
    overlay-mtu         each overlay's bridge and endpoint MTUs fit the underlay
                        MTU minus the encapsulation
    tx-checksum         guest ends on netdev bridges have tx checksum offload off
    forwarding-ipv4/6   IP forwarding is on where the host routes for guests
    docker              dockerd is reachable (a failure only with Docker guests)
    host                (not root: the checks from state-file on are skipped)

"Routing needs it": the host routes a guest's traffic when one of the
guest's gateways or route next hops is an address of the guest's bridge on
this host (``--address`` on the bridge, the network's gateway in cluster
mode): the guest then hands its packets to the host, which forwards them
only with ``net.ipv4.ip_forward=1`` (``net.ipv6.conf.all.forwarding=1`` for
IPv6). Those sysctls belong to a network namespace: doctor reads the ones of
the namespace it runs in.
"""

from __future__ import annotations

import errno
import grp
import ipaddress
import json
import os
import pwd
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import __version__
from . import config as config_mod
from .core import overlay
from .core.model import (
    BridgeKind,
    BridgeRecord,
    EndpointRecord,
    GuestKind,
    LinkKind,
    PeerRecord,
)
from .core.plan import endpoint_routes
from .errors import DependencyUnavailable, InternalError

T = TypeVar("T")

PASS, FAIL, SKIP = "pass", "fail", "skip"
DEFAULT_CONFIG = "/etc/netplumb/netplumbd.toml"
# How long doctor waits for each dependency: it is run when things are broken.
WAIT = 3.0
LISTED = 5  # objects named in one check's detail before "and N more"
IP_FORWARD = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}

RESTART_HINT = (
    "start netplumbd (systemctl start netplumbd; 'journalctl -u netplumbd' says why it stopped)"
)
RECONCILE_HINT = (
    "'netplumb reconcile' repairs it now (netplumbd also does at start); "
    "'netplumb check' lists what it would change"
)


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: ``status`` is pass, fail or skip (not applicable here, or
    not decidable: ``detail`` says why); ``fix`` says what to do about a
    failure."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL


# ------------------------------------------------------------ the daemon's view


@dataclass(frozen=True, slots=True)
class TunnelState:
    peer: str
    bridge: str
    port: str
    state: str  # "up", "down", "missing", "ovs down", "error: ..."


@dataclass(frozen=True, slots=True)
class DaemonView:
    """What a running netplumbd says about itself (Status, ListPeers)."""

    version: str
    state_dir: str
    uptime_seconds: int = 0
    tunnels: tuple[TunnelState, ...] = ()


# Asks the daemon on a socket (path, timeout); raises with a message when it
# does not answer. The CLI passes one built on its client.
AskDaemon = Callable[[str, float], DaemonView]


# ---------------------------------------------------------------- decisions


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f" and {len(items) - LISTED} more" if len(items) > LISTED else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def judge_config(path: str, exists: bool, error: str) -> Check:
    if error:
        return Check(
            "config",
            FAIL,
            error,
            f"fix {path}: netplumbd refuses to start with it unless its command line "
            "supplies what is missing (deploy/config/netplumbd.toml lists every key)",
        )
    if not exists:  # given but missing is an error load() reported
        return Check("config", PASS, f"no {path}: netplumbd's defaults")
    return Check("config", PASS, f"{path} read")


def judge_state(path: str, error: str, counts: tuple[int, int, int] | None) -> Check:
    if error:
        return Check(
            "state-file",
            FAIL,
            f"{path}: {error}",
            "restore it from a backup, or move it away: netplumbd then starts with an empty "
            "state and removes what it had built (its objects carry its tag)",
        )
    if counts is None:
        return Check("state-file", PASS, f"no {path} yet: nothing recorded")
    b, e, p = counts
    return Check(
        "state-file",
        PASS,
        f"{path}: {_plural(b, 'bridge')}, {_plural(e, 'endpoint')}, {_plural(p, 'peer')}",
    )


@dataclass(frozen=True, slots=True)
class SocketStat:
    is_socket: bool
    mode: int  # permission bits
    uid: int
    gid: int


def judge_socket(path: str, st: SocketStat | None) -> Check:
    if st is None:
        return Check(
            "socket",
            FAIL,
            f"no socket at {path}: netplumbd is not running, or serves another path",
            RESTART_HINT + "; or give doctor the daemon's --config (or --socket)",
        )
    if not st.is_socket:
        return Check(
            "socket",
            FAIL,
            f"{path} is not a socket",
            f"move {path} away and restart netplumbd, which creates the socket there",
        )
    return Check("socket", PASS, f"{path} is a socket")


def judge_socket_permissions(
    path: str, st: SocketStat | None, group: str, group_gid: int | None
) -> Check:
    """The socket must be 0660 root:GROUP, as netplumbd makes it: root and
    GROUP's members may call, nobody else. A GROUP that does not exist
    leaves it root's only."""
    name = "socket-permissions"
    if st is None or not st.is_socket:
        return Check(name, SKIP, "no socket")
    if group_gid is None:
        return Check(
            name,
            FAIL,
            f"group {group} (socket_group) does not exist: only root can use {path}",
            f"groupadd --system {group}, add the users who run netplumb "
            f"(usermod -aG {group} USER), and restart netplumbd",
        )
    wrong = []
    if st.mode != 0o660:
        wrong.append(f"mode {st.mode:04o}, expected 0660")
    if st.uid != 0:
        wrong.append(f"owner uid {st.uid}, expected root")
    if st.gid != group_gid:
        wrong.append(f"group {_group_name(st.gid)}, expected {group}")
    if wrong:
        return Check(
            name,
            FAIL,
            f"{path} has {'; '.join(wrong)}",
            f"chown root:{group} {path}; chmod 0660 {path} (netplumbd sets both when it "
            "starts: something changed them since, or it runs with another --socket-group)",
        )
    return Check(name, PASS, f"0660 root:{group}")


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def judge_connect(path: str, error: int | None, user: str, group: str) -> Check:
    """``error``: the errno of connect(2) to the socket, None when it
    connected, -1 when there was no socket to try."""
    name = "socket-connect"
    if error == -1:
        return Check(name, SKIP, "no socket")
    if error is None:
        return Check(name, PASS, f"{user} can connect")
    if error in (errno.EACCES, errno.EPERM):
        return Check(
            name,
            FAIL,
            f"user {user} may not connect to {path} (permission denied)",
            f"run as root, or add {user} to group {group} (usermod -aG {group} {user}; "
            "then log in again)",
        )
    if error == errno.ECONNREFUSED:
        return Check(
            name,
            FAIL,
            f"nothing listens on {path}: a stale socket, netplumbd is not running",
            RESTART_HINT,
        )
    return Check(name, FAIL, f"connecting to {path}: {os.strerror(error)}", RESTART_HINT)


def judge_daemon(path: str, view: DaemonView | None, error: str, installed: str) -> Check:
    if view is None:
        return Check("daemon", FAIL, f"netplumbd does not answer on {path}: {error}", RESTART_HINT)
    if view.version != installed:
        return Check(
            "daemon",
            FAIL,
            f"netplumbd {view.version} answers, but {installed} is installed",
            "restart netplumbd to run the installed version (systemctl restart netplumbd)",
        )
    return Check(
        "daemon", PASS, f"netplumbd {view.version} answers (up {_duration(view.uptime_seconds)})"
    )


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def judge_daemon_config(view: DaemonView | None, state_dir: str, config_path: str) -> Check:
    name = "daemon-config"
    if view is None:
        return Check(name, SKIP, "the daemon does not answer")
    if os.path.normpath(view.state_dir) != os.path.normpath(state_dir):
        return Check(
            name,
            FAIL,
            f"netplumbd keeps its state in {view.state_dir}, the configuration doctor read "
            f"({config_path}) says {state_dir}: the host checks looked at the wrong records",
            "run doctor with the configuration netplumbd runs with: netplumb doctor --config FILE",
        )
    return Check(name, PASS, f"same state directory ({state_dir})")


def judge_bridges(missing: Sequence[str], total: int) -> Check:
    if not total:
        return Check("bridges", SKIP, "no bridge recorded")
    if missing:
        return Check(
            "bridges",
            FAIL,
            f"recorded but absent from the host: {_names(missing)}",
            RECONCILE_HINT + " (a bridge netplumb adopted is not recreated: recreate it "
            "yourself, or 'netplumb bridge del' it)",
        )
    return Check("bridges", PASS, f"{_plural(total, 'bridge')} present")


@dataclass(frozen=True, slots=True)
class EndpointFinding:
    label: str  # "netns:blue eth1"
    running: bool  # the guest (its namespace) exists
    host_end: bool = True  # the host end exists (veth), True where there is none
    guest_end: bool = True  # the guest has the interface


def judge_endpoints(found: Sequence[EndpointFinding], unknown: Sequence[str]) -> Check:
    """``unknown``: endpoints whose guest could not be looked at (Docker
    unreachable)."""
    name = "endpoints"
    if not found and not unknown:
        return Check(name, SKIP, "no endpoint recorded")
    broken = [
        f"{f.label} ({_lost(f)})" for f in found if f.running and not (f.host_end and f.guest_end)
    ]
    stopped = sum(1 for f in found if not f.running)
    note = []
    if stopped:
        note.append(f"{stopped} with the guest not running (plumbed again when it is)")
    if unknown:
        note.append(f"{len(unknown)} not looked at (Docker unreachable)")
    suffix = f"; {'; '.join(note)}" if note else ""
    if broken:
        return Check(
            name,
            FAIL,
            f"interfaces missing: {_names(broken)}{suffix}",
            RECONCILE_HINT + "; if netplumbd is down, start it: it re-plumbs at start",
        )
    ok = sum(1 for f in found if f.running)
    if not ok:
        return Check(name, SKIP, f"no guest to look at{suffix}")
    return Check(name, PASS, f"{_plural(ok, 'endpoint')} plumbed{suffix}")


def _lost(f: EndpointFinding) -> str:
    gone = [] if f.guest_end else ["no interface in the guest"]
    return ", ".join(gone + ([] if f.host_end else ["no host end"]))


def ovs_needed_by(bridges: Iterable[BridgeRecord]) -> list[str]:
    return sorted(b.spec.name for b in bridges if b.spec.kind is BridgeKind.OVS)


def judge_ovs(
    endpoint: str, reachable: bool | None, error: str, needed_by: Sequence[str], configured: bool
) -> Check:
    """``reachable`` None: not tried (nothing needs OVS)."""
    if reachable is None:
        return Check("ovs", SKIP, f"no OVS bridge recorded, none configured ({endpoint} not asked)")
    if reachable:
        return Check("ovs", PASS, f"OVSDB answers at {endpoint}")
    why = f"OVSDB does not answer at {endpoint}: {error}"
    if needed_by:
        return Check(
            "ovs",
            FAIL,
            f"{why}; OVS bridges recorded: {_names(needed_by)}",
            "start Open vSwitch (systemctl start openvswitch-switch), or point ovsdb "
            "(--ovsdb) at the right OVSDB socket",
        )
    if configured:
        return Check(
            "ovs",
            FAIL,
            f"{why}; the configuration names OVS (ovsdb or ovs_datapath_type) but it is not there",
            "start Open vSwitch (systemctl start openvswitch-switch), or drop ovsdb and "
            "ovs_datapath_type from the configuration if this host needs no OVS",
        )
    return Check("ovs", SKIP, f"{why}; no OVS bridge recorded, nothing needs it")


def judge_vswitchd(up: bool | None, rundir: str, needed_by: Sequence[str]) -> Check:
    name = "ovs-vswitchd"
    if not needed_by:
        return Check(name, SKIP, "no OVS bridge recorded")
    if up is None:
        return Check(
            name, SKIP, f"cannot tell (no ovs-vswitchd.pid in {rundir or 'a local rundir'})"
        )
    if not up:
        return Check(
            name,
            FAIL,
            f"ovs-vswitchd is not running: OVS bridges {_names(needed_by)} forward nothing",
            "start it (systemctl start openvswitch-switch; its log in /var/log/openvswitch "
            "says why it stopped)",
        )
    return Check(name, PASS, "running")


def judge_datapath(bridge: str, observed: str | None, kernel_system: bool) -> Check:
    """``observed``: the bridge row's datapath type, None when OVSDB has no
    such bridge."""
    name = "ovs-datapath"
    if observed is None:
        return Check(name, FAIL, f"bridge {bridge} is recorded but not in OVSDB", RECONCILE_HINT)
    if observed == "system" and not kernel_system:
        return Check(
            name,
            FAIL,
            f"bridge {bridge} has datapath system, but this kernel has no OVS datapath "
            "(no openvswitch module): it forwards nothing",
            "modprobe openvswitch; or delete the bridge and add it again with "
            'ovs_datapath_type = "netdev" (or auto) in the configuration',
        )
    if observed == "netdev" and kernel_system:
        return Check(
            name,
            PASS,
            f"bridge {bridge}: netdev (userspace; the kernel datapath would be faster: "
            'ovs_datapath_type = "auto")',
        )
    return Check(name, PASS, f"bridge {bridge}: {observed}")


def judge_configured_datapath(wanted: str, kernel_system: bool) -> Check | None:
    if wanted == "system" and not kernel_system:
        return Check(
            "ovs-datapath",
            FAIL,
            "ovs_datapath_type is system, but this kernel has no OVS datapath: new OVS "
            "bridges would forward nothing",
            'modprobe openvswitch, or set ovs_datapath_type = "auto" (netdev here)',
        )
    return None


@dataclass(frozen=True, slots=True)
class TunnelPath:
    """How tunnel packets to one peer would leave, as observed."""

    peer: str
    local: str = ""  # source address ("" when there is no underlay)
    ifname: str = ""  # interface holding it
    iface_type: str | None = None  # its OVS Interface type (None: not in OVS)
    iface_datapath: str = ""  # datapath of the OVS bridge it belongs to
    route_dev: str | None = None  # OVS's own route lookup: output bridge (None: no route)
    route_error: str = ""  # why the lookup could not be made ("" when it was)


def judge_tunnel_path(p: TunnelPath) -> Check:
    """The userspace datapath builds tunnel packets itself and sends them
    out of an OVS bridge only: the source address must be on an internal
    port of a netdev bridge (br-phy), and OVS's route table (learned from
    the kernel's routes on its internal ports) must lead to the peer."""
    name = "userspace-tunnel"
    setup = (
        "ovs-vsctl add-br br-phy -- set bridge br-phy datapath_type=netdev "
        "fail_mode=standalone; ovs-vsctl add-port br-phy {dev}; ip addr del ADDRESS dev "
        "{dev}; ip addr add ADDRESS dev br-phy; ip link set br-phy up"
    )
    if not p.ifname:
        return Check(
            name,
            FAIL,
            f"peer {p.peer}: no underlay (no route towards it, or underlay_address is on no "
            "interface)",
            "add a route towards the peer hosts through br-phy, or fix underlay_address",
        )
    if p.iface_type != "internal" or p.iface_datapath != "netdev":
        where = (
            "not an OVS interface"
            if p.iface_type is None
            else (
                f"an OVS {p.iface_type} interface"
                if p.iface_type != "internal"
                else f"a {p.iface_datapath or '?'} bridge's internal port"
            )
        )
        return Check(
            name,
            FAIL,
            f"peer {p.peer}: the tunnel source {p.local or '?'} is on {p.ifname}, {where}: "
            "the userspace datapath cannot send tunnel packets from it",
            "move the underlay address onto a netdev OVS bridge holding the NIC: "
            + setup.format(dev=p.ifname),
        )
    if p.route_error:
        return Check(name, SKIP, f"peer {p.peer}: OVS's route table not read: {p.route_error}")
    if p.route_dev is None:
        return Check(
            name,
            FAIL,
            f"peer {p.peer}: OVS has no route to it (ovs-appctl ovs/route/lookup {p.peer}: "
            "Not found); tunnel packets to it are dropped",
            f"add a kernel route to {p.peer} through {p.ifname} (OVS learns routes on its "
            f"internal ports), e.g. ip route add {p.peer} via GATEWAY dev {p.ifname}; or "
            f"ovs-appctl ovs/route/add {p.peer}/32 {p.ifname} [GATEWAY]",
        )
    if p.route_dev != p.ifname:
        return Check(
            name,
            FAIL,
            f"peer {p.peer}: OVS routes it out of {p.route_dev}, not {p.ifname} where the "
            f"tunnel source {p.local} is",
            f"route {p.peer} through {p.ifname} (ip route replace {p.peer} via GATEWAY dev "
            f"{p.ifname})",
        )
    return Check(
        name, PASS, f"peer {p.peer}: from {p.local} on {p.ifname} (netdev), OVS routes it there"
    )


def judge_tunnels(view: DaemonView | None, peers: int) -> Check:
    name = "tunnels"
    if view is None:
        return Check(name, SKIP, "the daemon does not answer")
    if not view.tunnels:
        return Check(name, SKIP, "no overlay tunnel" + ("" if peers else " (no peer)"))
    bad = [t for t in view.tunnels if t.state not in ("up", "ovs down")]
    if bad:
        return Check(
            name,
            FAIL,
            "not up: " + _names([f"{t.bridge} -> {t.peer} ({t.port}: {t.state})" for t in bad]),
            RECONCILE_HINT + "; an 'error:' comes from OVS ('ovs-vsctl list interface PORT')",
        )
    return Check(name, PASS, f"{_plural(len(view.tunnels), 'tunnel')} up")


@dataclass(frozen=True, slots=True)
class Underlay:
    local: str
    ifname: str
    mtu: int


def judge_overlay_mtu(
    bridge: str,
    tunnel: str,
    underlay: Underlay | None,
    bridge_mtu: int,
    others: Sequence[tuple[str, int]],
) -> Check:
    """The bridge's MTU and every other MTU along the overlay (its VXLAN
    device, its endpoints' ends: ``others`` as (what, mtu)) must leave room
    for the encapsulation within the underlay's MTU -- the computation the
    agent uses for the endpoints it makes."""
    name = "overlay-mtu"
    if underlay is None:
        return Check(
            name,
            FAIL,
            f"bridge {bridge}: cannot find the underlay (no route towards the peers, or "
            "underlay_address on no interface): its MTU cannot fit it",
            "give underlay_address (--underlay-address), or add a route towards the peer hosts",
        )
    limit = overlay.overlay_mtu(underlay.mtu, tunnel, ":" in underlay.local)
    overhead = underlay.mtu - limit
    too_big = [(what, mtu) for what, mtu in (("bridge", bridge_mtu), *others) if mtu > limit]
    where = f"underlay {underlay.ifname} MTU {underlay.mtu} - {tunnel} {overhead} = {limit}"
    if too_big:
        largest = max(mtu for _, mtu in too_big)
        return Check(
            name,
            FAIL,
            f"bridge {bridge}: {_names([f'{w} {m}' for w, m in too_big])} > {limit} ({where}): "
            "encapsulated frames exceed the underlay, large packets are dropped (TCP stalls)",
            f"recreate the bridge without --mtu (netplumb then gives {limit}) or with "
            f"--mtu {limit} or less, and re-attach its endpoints; or raise the underlay MTU "
            f"to {largest + overhead} or more",
        )
    return Check(name, PASS, f"bridge {bridge}: all <= {limit} ({where})")


def judge_tx_checksum(on: Sequence[str], checked: int, unknown: Sequence[str]) -> Check:
    """Guest ends on a netdev (userspace) OVS bridge need tx checksum offload
    off: a veth hands OVS frames with unfinished checksums, so ping works
    and TCP hangs."""
    name = "tx-checksum"
    if on:
        return Check(
            name,
            FAIL,
            f"tx checksum offload is on in the guest on a userspace (netdev) OVS bridge: "
            f"{_names(on)}: ping works but TCP hangs",
            RECONCILE_HINT.replace("repairs it now", "turns it off again")
            + "; by hand: ethtool -K IFNAME tx off inside the guest",
        )
    if not checked:
        why = "no endpoint on a netdev OVS bridge with its guest running"
        if unknown:
            why = f"not looked at: {_names(unknown)}"
        return Check(name, SKIP, why)
    return Check(name, PASS, f"off on {_plural(checked, 'guest end')} on netdev bridges")


def _bridge_addresses(b: BridgeRecord) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = {a.ip for a in b.spec.addresses}
    if b.network is not None and b.network.gateway is not None:
        out.add(b.network.gateway)
    return out


def forwarding_needs(
    bridges: Mapping[str, BridgeRecord], endpoints: Iterable[EndpointRecord]
) -> dict[int, list[str]]:
    """For IP version 4 and 6: the endpoints ("guest ifname via address on
    bridge") whose gateway or route next hop is an address of their own
    bridge on this host -- the host routes their traffic."""
    need: dict[int, list[str]] = {4: [], 6: []}
    for e in endpoints:
        b = bridges.get(e.spec.bridge)
        if b is None or e.spec.kind is not LinkKind.VETH:
            continue
        mine = _bridge_addresses(b)
        for via in sorted({r.via for r in endpoint_routes(e) if r.via is not None}, key=str):
            if via in mine:
                need[via.version].append(f"{e.guest} {e.ifname} via {via} on {b.spec.name}")
    return need


def judge_forwarding(version: int, needed_by: Sequence[str], enabled: bool | None) -> Check:
    name = f"forwarding-ipv{version}"
    sysctl = "net.ipv4.ip_forward" if version == 4 else "net.ipv6.conf.all.forwarding"
    if not needed_by:
        return Check(name, SKIP, f"no guest routes through this host over IPv{version}")
    if enabled is None:
        return Check(name, SKIP, f"{sysctl} cannot be read")
    if not enabled:
        return Check(
            name,
            FAIL,
            f"{sysctl} = 0, but guests route through this host: {_names(needed_by)}: "
            "their traffic beyond the bridge is dropped",
            f"sysctl -w {sysctl}=1, and keep it in /etc/sysctl.d/ (e.g. "
            f"echo {sysctl}=1 > /etc/sysctl.d/60-netplumb.conf)",
        )
    return Check(name, PASS, f"{sysctl} = 1, needed by {_names(needed_by)}")


def judge_docker(url: str, reachable: bool | None, error: str, guests: Sequence[str]) -> Check:
    """``reachable`` None: not tried (no Docker guest recorded)."""
    if reachable is None:
        return Check("docker", SKIP, f"no Docker guest recorded ({url} not asked)")
    if reachable:
        return Check("docker", PASS, f"dockerd answers at {url}")
    why = f"dockerd does not answer at {url}: {error}"
    if guests:
        return Check(
            "docker",
            FAIL,
            f"{why}; Docker guests recorded: {_names(guests)}: their restarts are not "
            "followed (interfaces are not put back)",
            "start dockerd (systemctl start docker), or point docker_url (--docker-url) at "
            "its socket",
        )
    return Check("docker", SKIP, f"{why}; no Docker guest recorded, nothing needs it")


def failed(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if c.failed]


# ------------------------------------------------------------------ output


def as_dict(checks: Sequence[Check]) -> dict[str, Any]:
    return {
        "ok": not failed(checks),
        "failed": len(failed(checks)),
        "checks": [
            {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks
        ],
    }


def as_text(checks: Sequence[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status.upper():4}  {c.name.ljust(width)}  {c.detail}")
        if c.failed and c.fix:
            lines.append(f"{'':4}  {'':{width}}  fix: {c.fix}")
    bad = len(failed(checks))
    lines.append(f"{bad} of {_plural(len(checks), 'check')} failed" if bad else "no problem found")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------- gathering


@dataclass
class State:
    bridges: dict[str, BridgeRecord] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    peers: dict[str, PeerRecord] = field(default_factory=dict)


def read_state(path: str) -> State | None:
    """The recorded state, read-only (None when there is no state file).
    Raises ValueError saying what is wrong with the file."""
    from .store import CODECS, SCHEMA_VERSION

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"cannot read it: {e.strerror}") from None
    except ValueError as e:
        raise ValueError(f"not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("the document is not a JSON object")
    if doc.get("version") != SCHEMA_VERSION:
        raise ValueError(
            f"schema version {doc.get('version')!r}; this netplumb understands {SCHEMA_VERSION} "
            "(run the netplumbd version that wrote it)"
        )
    tables: dict[str, dict[str, Any]] = {}
    for table, (_, decode, key) in CODECS.items():
        items = doc.get(table, [])
        if not isinstance(items, list):
            raise ValueError(f"{table} is not an array")
        try:
            records = [decode(item) for item in items]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"a record in {table} is malformed: {e!r}") from None
        tables[table] = {key(r): r for r in records}
    return State(tables["bridges"], tables["endpoints"], tables["peers"])


def stat_socket(path: str) -> SocketStat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return SocketStat(stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def try_connect(path: str) -> int | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(WAIT)
    try:
        s.connect(path)
    except OSError as e:
        return e.errno if e.errno is not None else errno.EIO
    finally:
        s.close()
    return None


def _refused(path: str) -> str:
    """Why a unix socket cannot be connected to ("" when it can): found at
    once, where a client library would retry until its timeout."""
    if not os.path.exists(path):
        return f"no socket at {path}"
    code = try_connect(path)
    return f"{path}: {os.strerror(code)}" if code is not None else ""


def _read_flag(path: str) -> bool | None:
    try:
        with open(path) as f:
            return f.read().strip() == "1"
    except OSError:
        return None


def within(seconds: float, fn: Callable[[], T], what: str) -> T:
    """``fn()``, or TimeoutError when it takes longer than ``seconds`` (it
    goes on in a daemon thread, abandoned)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, name=f"doctor-{what}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TimeoutError(f"{what} did not answer within {seconds:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def ovs_route_lookup(rundir: str, peer: str) -> str | None:
    """ovs-vswitchd's own route to ``peer`` (``ovs-appctl ovs/route/lookup``),
    over its control socket: the output bridge, or None when it has no route.
    Raises OSError when ovs-vswitchd cannot be asked."""
    from .drivers.ovs import appctl

    try:
        return route_dev(appctl(rundir, "ovs/route/lookup", peer))
    except InternalError as e:  # ovs-vswitchd's own answer
        if "not found" in e.message.lower():
            return None
        raise OSError(errno.EIO, e.message) from None
    except DependencyUnavailable as e:
        raise OSError(e.message) from None


def route_dev(lookup: str) -> str | None:
    """The output bridge in the reply to ``ovs/route/lookup`` ("src A\n
    gateway G\ndev BRIDGE\n"), None without one."""
    for line in lookup.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "dev" and value.strip():
            return value.strip()
    return None


def load_config(path: str | None) -> tuple[str, bool, config_mod.Config, str]:
    """(path, exists, config, error): the file given, else the default one
    if it exists, else the defaults."""
    given = path is not None
    path = path or DEFAULT_CONFIG
    exists = os.path.exists(path)
    if not exists and not given:
        return path, False, config_mod.Config(), ""
    try:
        cfg = config_mod.load(path, check=False)  # unknown keys and wrong types: refused
    except config_mod.ConfigError as e:
        return path, exists, config_mod.Config(), str(e)
    except OSError as e:
        return path, exists, config_mod.Config(), f"cannot read {path}: {e.strerror}"
    try:
        config_mod.validate(cfg, path)
    except config_mod.ConfigError as e:
        # The other checks still go by what the file says (a command line
        # may supply the rest, e.g. TLS files for its listen).
        return path, exists, cfg, str(e)
    return path, exists, cfg, ""


def socket_for(cfg: config_mod.Config, explicit: str | None, env: Mapping[str, str]) -> str:
    """The socket to check: --socket, else the configuration's when it names
    one, else $NETPLUMB_SOCKET (what the netplumb command would use), else
    the default."""
    if explicit:
        return explicit
    if cfg.socket != config_mod.DEFAULT_SOCKET:
        return cfg.socket
    return env.get("NETPLUMB_SOCKET") or cfg.socket


def diagnose(
    config_path: str | None = None,
    socket_path: str | None = None,
    ask: AskDaemon | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = WAIT,
) -> list[Check]:
    """Every check, in order. ``ask`` queries a running daemon (skipped
    when None)."""
    env = os.environ if env is None else env
    path, exists, cfg, error = load_config(config_path)
    checks = [judge_config(path, exists, error)]
    if error:
        return checks
    sock = socket_for(cfg, socket_path, env)
    st = stat_socket(sock)
    checks.append(judge_socket(sock, st))
    try:
        gid: int | None = grp.getgrnam(cfg.socket_group).gr_gid
    except KeyError:
        gid = None
    checks.append(judge_socket_permissions(sock, st, cfg.socket_group, gid))
    conn = try_connect(sock) if st is not None and st.is_socket else -1
    checks.append(judge_connect(sock, conn, _user(), cfg.socket_group))
    view: DaemonView | None = None
    why = "no socket" if st is None else "cannot connect" if conn is not None else "not asked"
    if conn is None and ask is not None:
        try:
            view = ask(sock, timeout)
        except Exception as e:
            why = str(e) or type(e).__name__
    if conn in (errno.EACCES, errno.EPERM):
        checks.append(Check("daemon", SKIP, "not asked: the socket refuses this user"))
    else:
        checks.append(judge_daemon(sock, view, why, __version__))
    checks.append(judge_daemon_config(view, cfg.state_dir, path))

    if os.geteuid() != 0:
        checks.append(
            Check(
                "host",
                SKIP,
                "the state file, namespaces, OVS and Docker are root's: host checks skipped",
                "run as root: sudo netplumb doctor",
            )
        )
        return checks
    state_path = os.path.join(cfg.state_dir, "state.json")
    try:
        state = read_state(state_path)
        checks.append(
            judge_state(
                state_path,
                "",
                None
                if state is None
                else (len(state.bridges), len(state.endpoints), len(state.peers)),
            )
        )
    except (ValueError, OSError) as e:
        checks.append(judge_state(state_path, str(e), None))
        state = None
    Host(cfg, state or State(), view, timeout).check(checks)
    return checks


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


class Host:
    """The host-side checks over the recorded state, through the agent's
    drivers (netlink, OVSDB, Docker). Nothing is changed."""

    def __init__(
        self, cfg: config_mod.Config, state: State, view: DaemonView | None, timeout: float
    ) -> None:
        from .drivers.netlink import NetlinkDriver

        self.cfg = cfg
        self.state = state
        self.view = view
        self.timeout = timeout
        self.netlink = NetlinkDriver()
        self.ovs: Any = None  # OvsDriver once connected
        self.docker: Any = None  # DockerDriver once reachable
        self.datapath: dict[str, str | None] = {}  # OVS bridge -> its datapath type
        self.unknown: list[str] = []  # endpoints the last _each_guest could not look at

    def check(self, out: list[Check]) -> None:
        try:
            self._check(out)
        finally:
            if self.ovs is not None:
                self.ovs.close()
            self.netlink.close()

    def _check(self, out: list[Check]) -> None:
        st = self.state
        needs = forwarding_needs(st.bridges, st.endpoints.values())
        steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
            ("bridges", self._bridges),
            ("ovs", self._ovs),
            ("docker", self._docker),
            ("endpoints", self._endpoints),
            ("userspace-tunnel", self._tunnel_paths),
            ("tunnels", lambda: judge_tunnels(self.view, len(st.peers))),
            ("overlay-mtu", self._mtu),
            ("tx-checksum", self._tx_checksum),
            ("forwarding-ipv4", lambda: judge_forwarding(4, needs[4], _read_flag(IP_FORWARD[4]))),
            ("forwarding-ipv6", lambda: judge_forwarding(6, needs[6], _read_flag(IP_FORWARD[6]))),
        ]
        for name, step in steps:
            try:
                found = step()
            except Exception as e:  # a dependency that went away mid-way, a host error
                found = Check(
                    name,
                    FAIL,
                    f"could not be checked: {type(e).__name__}: {e}",
                    "the error says what failed; run netplumb doctor again once it is fixed",
                )
            out.extend(found if isinstance(found, list) else [found])

    # -- bridges and endpoints

    def _bridges(self) -> Check:
        missing = [name for name in sorted(self.state.bridges) if not self.netlink.link_index(name)]
        return judge_bridges(missing, len(self.state.bridges))

    def _guest_path(self, e: EndpointRecord) -> str | None:
        """The guest's namespace file now; None when the guest is not
        running; raises LookupError when it cannot be told (Docker down)."""
        g = e.guest
        if g.kind is GuestKind.DOCKER:
            if self.docker is None:
                raise LookupError("docker")
            c = self.docker.inspect(g.value)
            return f"/proc/{c.pid}/ns/net" if c is not None and c.running and c.pid else None
        from .engine import guest_path

        return guest_path(g)

    def _open(self, e: EndpointRecord) -> Any:
        """The guest's namespace, open (a NetnsHandle), or None when it is
        not running (a pid guest: its process's namespace is another)."""
        from .drivers.netns import open_netns

        path = self._guest_path(e)
        if path is None:
            return None
        try:
            handle = open_netns(path)
        except Exception:
            return None
        if e.guest.kind is GuestKind.PID and e.netns_id and handle.ident != e.netns_id:
            handle.close()
            return None
        return handle

    def _each_guest(
        self, records: Iterable[EndpointRecord]
    ) -> Iterator[tuple[EndpointRecord, Any]]:
        """(endpoint, its guest's open handle or None when the guest is not
        running) for each of ``records`` that can be looked at; those that
        cannot (Docker down) go to self.unknown."""
        self.unknown = []
        for e in sorted(records, key=lambda e: (e.guest.key, e.ifname)):
            try:
                handle = self._open(e)
            except LookupError:
                self.unknown.append(_label(e))
                continue
            try:
                yield e, handle
            finally:
                if handle is not None:
                    handle.close()

    def _endpoints(self) -> Check:
        found = []
        for e, handle in self._each_guest(self.state.endpoints.values()):
            if handle is None:
                found.append(EndpointFinding(_label(e), running=False))
                continue
            veth = e.spec.kind is LinkKind.VETH
            seen = self.netlink.observe_endpoint(e.host_ifname if veth else "", e.ifname, handle)
            found.append(
                EndpointFinding(
                    _label(e),
                    running=True,
                    host_end=seen.host is not None or not veth,
                    guest_end=seen.guest is not None,
                )
            )
        return judge_endpoints(found, self.unknown)

    # -- OVS

    def _ovs(self) -> list[Check]:
        from .drivers.ovs import OvsDriver, kernel_datapath_available

        cfg = self.cfg
        needed = ovs_needed_by(self.state.bridges.values())
        configured = cfg.ovsdb != config_mod.DEFAULT_OVSDB or cfg.ovs_datapath_type != "auto"
        out: list[Check] = []
        endpoint = cfg.ovsdb
        local = endpoint.startswith("unix:")
        reachable: bool | None
        if not needed and not configured:
            reachable, error = None, ""
        elif local and (refused := _refused(endpoint[5:])):
            reachable, error = False, refused
        else:
            ovs = OvsDriver(endpoint, cfg.ovs_datapath_type)
            reachable = ovs.wait_connected(self.timeout)
            error = "" if reachable else ovs.detail
            if reachable:
                self.ovs = ovs
            else:
                ovs.close()
        out.append(judge_ovs(endpoint, reachable, error, needed, configured))
        rundir = os.path.dirname(endpoint[5:]) if local else ""
        up: bool | None = None
        if local:
            up = _vswitchd_up(rundir)
        out.append(judge_vswitchd(up, rundir, needed))
        kernel = kernel_datapath_available()
        wanted = judge_configured_datapath(cfg.ovs_datapath_type, kernel)
        if wanted is not None:
            out.append(wanted)
        if not needed:
            return out
        if self.ovs is None:
            out.append(Check("ovs-datapath", SKIP, "OVSDB does not answer"))
            return out
        for name in needed:
            row = self.ovs.observe_bridge(name)
            self.datapath[name] = row.datapath_type if row is not None else None
            out.append(judge_datapath(name, self.datapath[name], kernel))
        return out

    def _tunnel_paths(self) -> list[Check]:
        name = "userspace-tunnel"
        overlays = [
            b.spec.name
            for b in self.state.bridges.values()
            if b.spec.vni and b.spec.kind is BridgeKind.OVS
        ]
        if not overlays:
            return [Check(name, SKIP, "no OVS overlay bridge")]
        if self.ovs is None:
            return [Check(name, SKIP, "OVSDB does not answer")]
        if not any(self.datapath.get(b) == "netdev" for b in overlays):
            return [Check(name, SKIP, "no overlay on a netdev (userspace) OVS bridge")]
        if not self.state.peers:
            return [Check(name, SKIP, "no peer")]
        rundir = os.path.dirname(self.cfg.ovsdb[5:]) if self.cfg.ovsdb.startswith("unix:") else ""
        out = []
        for peer in sorted(self.state.peers, key=ipaddress.ip_address):
            out.append(judge_tunnel_path(self._tunnel_path(peer, rundir)))
        return out

    def _tunnel_path(self, peer: str, rundir: str) -> TunnelPath:
        found = self.netlink.underlay(self.cfg.underlay_address, peer)
        if found is None:
            return TunnelPath(peer)
        local, ifname, _ = found
        itype = self.ovs.interface_type(ifname)
        datapath = ""
        if itype == "internal":
            port = self.ovs.observe_port(ifname)
            row = self.ovs.observe_bridge(port.bridge if port is not None else ifname)
            datapath = row.datapath_type if row is not None else ""
        dev: str | None = None
        why = ""
        if not rundir:
            why = "OVSDB is not a local unix socket (ovs-appctl ovs/route/lookup PEER shows it)"
        else:
            try:
                dev = within(self.timeout, lambda: ovs_route_lookup(rundir, peer), "ovs-vswitchd")
            except (OSError, TimeoutError) as e:
                why = str(e)
        return TunnelPath(peer, local, ifname, itype, datapath, dev, why)

    # -- Docker

    def _docker(self) -> Check:
        from .drivers.docker import DockerDriver

        url = self.cfg.docker_url
        guests = sorted(
            e.guest_name or e.guest.value[:12]
            for e in self.state.endpoints.values()
            if e.guest.kind is GuestKind.DOCKER
        )
        if not guests:
            return judge_docker(url, None, "", guests)
        sock = url[len("unix://") :] if url.startswith("unix://") else ""
        refused = _refused(sock) if sock else ""
        if refused:
            return judge_docker(url, False, refused, guests)
        docker = DockerDriver(url, timeout=self.timeout)
        try:
            reachable = within(self.timeout + 1, docker.available, "dockerd")
        except TimeoutError as e:
            reachable, docker.detail = False, str(e)
        if reachable:
            self.docker = docker
        error = "" if reachable else docker.detail.rpartition(f"{url}: ")[2]
        return judge_docker(url, reachable, error, guests)

    # -- overlays, offloads

    def _underlay(self) -> Underlay | None:
        peers = sorted(self.state.peers, key=ipaddress.ip_address)
        # as the agent finds it (Engine._underlay): towards the first peer
        found = self.netlink.underlay(self.cfg.underlay_address, peers[0] if peers else "")
        return Underlay(*found) if found is not None else None

    def _mtu(self) -> list[Check]:
        overlays = sorted(
            (b for b in self.state.bridges.values() if b.spec.vni), key=lambda b: b.spec.name
        )
        if not overlays:
            return [Check("overlay-mtu", SKIP, "no overlay bridge")]
        under = self._underlay()
        out = []
        for b in overlays:
            name = b.spec.name
            bridge_mtu = self.netlink.observe_bridge(name, addresses=False).mtu
            others: list[tuple[str, int]] = []
            if b.spec.kind is BridgeKind.LINUX:
                vx = self.netlink.observe_vxlan(overlay.vxlan_name(b.spec.vni))
                if vx is not None:
                    others.append((vx.name, vx.mtu))
            for e in sorted(self.state.endpoints.values(), key=lambda e: e.id):
                if e.spec.bridge != name:
                    continue
                others.append((f"endpoint {_label(e)}", e.mtu))
                host = self.netlink.observe_host_link(e.host_ifname) if e.host_ifname else None
                if host is not None and host.mtu != e.mtu:
                    others.append((f"host end {e.host_ifname}", host.mtu))
            out.append(judge_overlay_mtu(name, b.spec.tunnel or "vxlan", under, bridge_mtu, others))
        return out

    def _tx_checksum(self) -> Check:
        from .drivers.netlink import get_tx_checksum

        netdev = {n for n, dp in self.datapath.items() if dp == "netdev"}
        unknown = [
            n
            for n, b in self.state.bridges.items()
            if b.spec.kind is BridgeKind.OVS and n not in self.datapath
        ]
        on: list[str] = []
        checked = 0
        candidates = [
            e
            for e in self.state.endpoints.values()
            if e.spec.bridge in netdev and e.spec.kind is LinkKind.VETH
        ]
        for e, handle in self._each_guest(candidates):
            if handle is None:
                continue
            try:
                if get_tx_checksum(handle, e.ifname):
                    on.append(f"{_label(e)}")
                checked += 1
            except OSError:
                pass  # no such interface: the endpoints check names it
        why = [f"bridge {n} (OVS unreachable)" for n in sorted(unknown)] + self.unknown
        return judge_tx_checksum(on, checked, why)


def _label(e: EndpointRecord) -> str:
    guest = e.guest_name if e.guest.kind is GuestKind.DOCKER and e.guest_name else e.guest.key
    return f"{guest} {e.ifname}"


def _vswitchd_up(rundir: str) -> bool | None:
    """ovs-vswitchd runs: its pidfile in ``rundir`` (where the OVSDB socket
    is, as OVS lays its files out) names a live ovs-vswitchd. Without that
    pidfile: False when ovsdb-server keeps its own there (OVS runs from this
    directory: ovs-vswitchd stopped and removed its file), else None (OVS
    keeps its files elsewhere: cannot tell)."""
    from .drivers.ovs import vswitchd_pid

    try:
        return bool(vswitchd_pid(rundir))
    except FileNotFoundError:
        return False if os.path.exists(os.path.join(rundir, "ovsdb-server.pid")) else None
