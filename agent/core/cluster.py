"""Cluster mode, the pure part: the etcd key layout, how documents map to
model values, address candidates, and what a host registry means for the
peer list. No I/O.

Keys, under the configured prefix (default ``/netplumb``):

    hosts/<host>                 {"name", "underlay", "version", "agent_id", "capabilities"}
                                 under a lease the host keeps alive
    networks/<network>           {"name", "subnet", "vni", "kind", "tunnel", "gateway", "dns"}
    ipam/<network>/<address>     {"host", "endpoint", "guest", "mac"}: one key per allocated address,
                                 created atomically (create-if-absent), so two hosts never
                                 get the same address
    names/<network>/<name>       {"host", "endpoint", "addresses"}: the endpoint registry
                                 that DNS answers from
    vnis/<vni>                   {"network"}: which network holds a VNI (claimed atomically)
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import Any

from .model import (
    BridgeKind,
    BridgeSpec,
    IPAddress,
    IPInterface,
    NetworkSpec,
)

HOSTS = "hosts/"
NETWORKS = "networks/"
IPAM = "ipam/"
NAMES = "names/"
VNIS = "vnis/"

SOURCE_CLUSTER = "cluster"


def host_key(host: str) -> str:
    return f"{HOSTS}{host}"


def network_key(name: str) -> str:
    return f"{NETWORKS}{name}"


def vni_key(vni: int) -> str:
    """Held by the network that carries ``vni``: claimed atomically, so two
    networks created at once on two hosts cannot share it."""
    return f"{VNIS}{vni}"


def ipam_key(network: str, address: IPAddress) -> str:
    return f"{IPAM}{network}/{address}"


def ipam_prefix(network: str) -> str:
    return f"{IPAM}{network}/"


def name_key(network: str, name: str) -> str:
    return f"{NAMES}{network}/{name.lower()}"


# ----------------------------------------------------------- documents


def network_to_doc(n: NetworkSpec) -> dict[str, Any]:
    return {
        "name": n.name,
        "subnet": str(n.subnet),
        "vni": n.vni,
        "kind": n.kind.value,
        "tunnel": n.tunnel,
        "gateway": str(n.gateway) if n.gateway else "",
        "dns": str(n.dns) if n.dns else "",
    }


def network_from_doc(d: Mapping[str, Any]) -> NetworkSpec:
    """Raises ValueError/KeyError/TypeError on a malformed document."""
    return NetworkSpec(
        name=str(d["name"]),
        subnet=ipaddress.ip_network(str(d["subnet"])),
        vni=int(d["vni"]),
        kind=BridgeKind(str(d.get("kind", "linux"))),
        tunnel=str(d.get("tunnel", "vxlan")),
        gateway=ipaddress.ip_address(d["gateway"]) if d.get("gateway") else None,
        dns=ipaddress.ip_address(d["dns"]) if d.get("dns") else None,
    )


def bridge_for(n: NetworkSpec) -> BridgeSpec:
    """The bridge every host builds for a network: the gateway and DNS
    addresses on it (the same on every host)."""
    addrs: list[IPInterface] = []
    for ip in (n.gateway, n.dns):
        if ip is not None:
            a = ipaddress.ip_interface(f"{ip}/{n.subnet.prefixlen}")
            if a not in addrs:
                addrs.append(a)
    return BridgeSpec(name=n.name, kind=n.kind, addresses=tuple(addrs), vni=n.vni, tunnel=n.tunnel)


def network_mac(name: str) -> str:
    """The MAC of a network's bridge on every host: the anycast gateway
    answers with one MAC wherever the guest is, and a bridge drops frames
    that come back over a tunnel with its own address as source."""
    digest = hashlib.sha256(f"netplumb-network\0{name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


# ------------------------------------------------------------------ IPAM


def reserved(n: NetworkSpec) -> set[IPAddress]:
    """Addresses never handed out: the subnet's own, broadcast, gateway, DNS."""
    out: set[IPAddress] = {n.subnet.network_address}
    if n.subnet.version == 4:
        out.add(n.subnet.broadcast_address)
    out.update(ip for ip in (n.gateway, n.dns) if ip is not None)
    return out


def candidates(n: NetworkSpec, taken: set[IPAddress], seed: str) -> Iterator[IPAddress]:
    """Free addresses of the subnet in the order to try them: from a point
    that depends on ``seed`` (the endpoint id), so hosts allocating at once
    start far apart instead of racing for the same first address, then
    wrapping around."""
    size = n.subnet.num_addresses
    if size <= 2:
        return
    first = int(n.subnet.network_address)
    start = int(hashlib.sha256(seed.encode()).hexdigest()[:12], 16) % size
    skip = reserved(n) | taken
    for i in range(size):
        ip = ipaddress.ip_address(first + (start + i) % size)
        if ip not in skip:
            yield ip


def free_count(n: NetworkSpec, allocated: int) -> int:
    return max(0, n.subnet.num_addresses - len(reserved(n)) - allocated)


# ----------------------------------------------------------------- hosts


def host_doc(name: str, underlay: str, agent_id: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "underlay": underlay,
        "agent_id": agent_id,
        "version": version,
        "capabilities": ["linux-overlay", "ovs-overlay", "dns"],
    }


def peers_from_hosts(
    hosts: Mapping[str, Mapping[str, Any]], me: str, my_underlay: str
) -> dict[IPAddress, str]:
    """The peer list a host registry means for host ``me``: every other
    registered host's underlay address, by its name. Malformed entries are
    skipped; so is anything claiming this host's own underlay address."""
    out: dict[IPAddress, str] = {}
    for key, doc in hosts.items():
        name = key.removeprefix(HOSTS)
        if name == me or "/" in name:
            continue
        try:
            ip = ipaddress.ip_address(str(doc.get("underlay", "")))
        except ValueError:
            continue
        if str(ip) == my_underlay:
            continue
        out[ip] = name
    return out


def names_table(names: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(network, name) -> addresses, from the names/ snapshot."""
    out: dict[tuple[str, str], list[str]] = {}
    for key, doc in names.items():
        rest = key.removeprefix(NAMES)
        network, sep, name = rest.partition("/")
        if not sep or not name:
            continue
        addrs = doc.get("addresses", [])
        if isinstance(addrs, list):
            out[(network, name.lower())] = [str(a).split("/")[0] for a in addrs]
    return out


def endpoint_owner(doc: Mapping[str, Any], host: str) -> str | None:
    """The endpoint id of an ipam/ or names/ document when ``host`` owns it."""
    if doc.get("host") == host and isinstance(doc.get("endpoint"), str):
        return str(doc["endpoint"])
    return None


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def remote_endpoints(
    ipam: Mapping[str, Mapping[str, Any]], hosts: Mapping[str, Mapping[str, Any]], me: str
) -> dict[str, tuple[tuple[str, str, str], ...]]:
    """From the ipam/ snapshot and the host registry (names without the
    ``hosts/`` prefix): the endpoints of every network on hosts other than
    ``me``, as sorted (ip, mac, vtep) -- what this host programs so that
    their MACs are not flooded for. Entries of unknown hosts or without a
    MAC are left out (traffic to them is flooded and learnt as usual)."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for key, doc in ipam.items():
        rest = key.removeprefix(IPAM)
        network, sep, ip = rest.partition("/")
        host = str(doc.get("host", ""))
        mac = str(doc.get("mac", "")).lower()
        if not sep or host == me or not _MAC.fullmatch(mac):
            continue  # (a malformed MAC must not reach netlink or OpenFlow)
        vtep = str(hosts.get(host, {}).get("underlay", ""))
        if not vtep:
            continue
        try:
            ipaddress.ip_address(ip)
            ipaddress.ip_address(vtep)
        except ValueError:
            continue
        out.setdefault(network, []).append((ip, mac, vtep))
    return {n: tuple(sorted(v)) for n, v in out.items()}
