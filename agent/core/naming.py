"""Deterministic names, MACs and ownership tags. Pure.

Names derive from the endpoint identity (guest key, ifname) so that a restart,
a reconcile or a human can recompute them; all fit IFNAMSIZ (15 bytes).
"""

from __future__ import annotations

import hashlib

from .model import GuestRef

# Every link netplumb creates carries an alias starting with this tag; the
# agent never changes or deletes a link whose alias does not.
TAG = "netplumb"
HOST_IFNAME_PREFIX = "np"

# Route protocol number that marks the routes netplumb adds inside guests
# (see /etc/iproute2/rt_protos: 0-4 kernel, 8-18 and 42, 186-192 are taken).
RTPROT_NETPLUMB = 151


def endpoint_id(guest: GuestRef, ifname: str) -> str:
    """A 16-hex-digit id, stable for (guest, ifname)."""
    return hashlib.sha256(f"{guest.key}\0{ifname}".encode()).hexdigest()[:16]


def host_ifname(endpoint_id: str) -> str:
    """Host-side veth name: "np" + 12 hex digits (14 bytes)."""
    return HOST_IFNAME_PREFIX + endpoint_id[:12]


def stable_mac(endpoint_id: str) -> str:
    """A locally administered unicast MAC derived from the endpoint id, so an
    endpoint re-plumbed after a restart keeps its MAC (and its DHCP lease)."""
    digest = hashlib.sha256(f"netplumb-mac\0{endpoint_id}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def bridge_mac(name: str, agent_id: str) -> str:
    """The MAC of a bridge netplumb creates (for OVS, other_config:hwaddr):
    fixed, so ports coming and going never change it (a Linux bridge
    otherwise takes its lowest port's), and the same every time the bridge is
    made again (after a reboot, or the OVS database was wiped), so guests'
    neighbour entries for its address stay right; unique per agent, so
    same-named bridges on hosts joined by an overlay differ."""
    digest = hashlib.sha256(f"netplumb-bridge\0{agent_id}\0{name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def endpoint_alias(endpoint_id: str, agent_id: str) -> str:
    """Alias put on both veth ends of an endpoint: the endpoint and the agent
    that owns it (several agents may share a host namespace, e.g. in tests;
    each collects only its own leftovers)."""
    return f"{TAG}:ep:{endpoint_id}:{agent_id}"


def vlan_alias(agent_id: str) -> str:
    """Tag of an 802.1Q sub-interface made for macvlan endpoints: it belongs
    to this agent, not to one endpoint (several may share it)."""
    return f"{TAG}:vl:{agent_id}"


def bridge_alias(agent_id: str) -> str:
    """Alias put on a bridge netplumb created (adopted bridges keep theirs)."""
    return f"{TAG}:br:{agent_id}"


def parse_endpoint_alias(alias: str) -> tuple[str, str] | None:
    """(endpoint id, agent id) of an alias made by ``endpoint_alias``."""
    parts = alias.split(":")
    if len(parts) == 4 and parts[0] == TAG and parts[1] == "ep" and len(parts[2]) == 16:
        return parts[2], parts[3]
    return None


def new_agent_id() -> str:
    """A random id for a new agent's state (8 hex digits)."""
    import secrets

    return secrets.token_hex(4)


def is_ours(alias: str) -> bool:
    return alias.startswith(f"{TAG}:")
