"""Cluster mode: this host's agent as a member of an etcd-backed cluster.

- **Hosts find each other.** The agent registers ``hosts/<name>`` under a
  lease it keeps alive and watches ``hosts/``: every other registered host
  is a peer (source "cluster"); a host whose lease expires leaves the mesh.
- **Networks are defined once** (``networks/<name>``) and every agent builds
  the matching bridge, with the network's gateway and DNS addresses on it
  and the same MAC everywhere (an anycast gateway).
- **Addresses never collide.** Each address is one key under
  ``ipam/<network>/``, created atomically; the first host to create it owns
  it.
- **Names resolve across hosts.** ``names/<network>/<name>`` maps an
  endpoint's name to its addresses; the agent's DNS answers from a watched
  copy.

The engine calls ``reserve``/``allocate``/``release``/``publish`` during
attach and detach; the watches call back into the engine
(``sync_cluster_peers``, ``sync_networks``). Nothing here touches the host.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .core import cluster as keys
from .core.model import IPAddress, IPInterface, NetworkSpec
from .errors import Conflict, DependencyUnavailable, PreconditionFailed

log = logging.getLogger("netplumb.cluster")

Snapshot = Mapping[str, Mapping[str, Any]]


class Etcd(Protocol):
    """What cluster mode needs of the etcd driver (drivers/etcd.py)."""

    @property
    def up(self) -> bool: ...
    @property
    def detail(self) -> str: ...
    def get(self, key: str) -> dict[str, Any] | None: ...
    def get_prefix(self, prefix: str) -> tuple[dict[str, dict[str, Any]], int]: ...
    def put(self, key: str, value: dict[str, Any]) -> None: ...
    def create(
        self, key: str, value: dict[str, Any], unchanged: tuple[str, int] | None = None
    ) -> bool: ...
    def delete(self, key: str) -> bool: ...
    def delete_if(self, key: str, value: dict[str, Any]) -> bool: ...
    def keep_registered(self, key: str, value: dict[str, Any], ttl: int) -> None: ...
    def unregister(self, key: str) -> None: ...
    def watch_prefix(
        self,
        prefix: str,
        on_snapshot: Callable[[dict[str, dict[str, Any]]], None],
        first_here: bool = False,
    ) -> bool: ...
    def close(self) -> None: ...


class Members(Protocol):
    """What the cluster calls back into (the engine)."""

    def sync_cluster_peers(self, wanted: dict[IPAddress, str]) -> None: ...
    def sync_networks(self, networks: dict[str, NetworkSpec]) -> None: ...
    def sync_remote_endpoints(self, table: dict[str, tuple[tuple[str, str, str], ...]]) -> None: ...


class Cluster:
    def __init__(
        self,
        etcd: Etcd,
        host: str,
        agent_id: str,
        version: str,
        ttl: int = 10,
    ) -> None:
        self.etcd = etcd
        self.host = host
        self.agent_id = agent_id
        self.version = version
        self.ttl = ttl
        self.underlay = ""
        self._mu = threading.Lock()
        self._networks: dict[str, NetworkSpec] = {}
        self._names: dict[tuple[str, str], list[str]] = {}
        self._hosts: dict[str, dict[str, Any]] = {}
        self._ipam: dict[str, dict[str, Any]] = {}
        self._ipam_read = False  # ipam/ delivered at least once
        self.on_names: list[Callable[[], None]] = []

    # ------------------------------------------------------------ joining

    def start(self, members: Members, underlay: str) -> None:
        """Register this host and follow the registry, the networks and the
        names (background threads of the etcd driver; they retry while etcd
        is away and resynchronise when it is back)."""
        self.underlay = underlay
        doc = keys.host_doc(self.host, underlay, self.agent_id, self.version)
        self.etcd.keep_registered(keys.host_key(self.host), doc, self.ttl)

        # Snapshots come keyed as stored, relative to the cluster's prefix
        # ("hosts/h1", "networks/web", "names/web/db").
        def on_hosts(snapshot: dict[str, dict[str, Any]]) -> None:
            with self._mu:
                self._hosts = {k.removeprefix(keys.HOSTS): v for k, v in snapshot.items()}
            members.sync_cluster_peers(keys.peers_from_hosts(snapshot, self.host, underlay))

        def on_networks(snapshot: dict[str, dict[str, Any]]) -> None:
            nets: dict[str, NetworkSpec] = {}
            for key, d in snapshot.items():
                name = key.removeprefix(keys.NETWORKS)
                try:
                    nets[name] = keys.network_from_doc(d)
                except (KeyError, TypeError, ValueError) as e:
                    log.error("network %s in etcd is malformed, ignored: %s", name, e)
            with self._mu:
                self._networks = nets
            members.sync_networks(nets)

        def on_names(snapshot: dict[str, dict[str, Any]]) -> None:
            table = keys.names_table(snapshot)
            with self._mu:
                self._names = table
            for cb in self.on_names:
                cb()

        def on_ipam(snapshot: dict[str, dict[str, Any]]) -> None:
            with self._mu:
                self._ipam = dict(snapshot)
                self._ipam_read = True
            members.sync_remote_endpoints(self._remote_table())

        def on_hosts_too(snapshot: dict[str, dict[str, Any]]) -> None:
            on_hosts(snapshot)
            with self._mu:
                ipam_read = self._ipam_read
            # VTEPs may have moved. Not before ipam/ was read: an empty table
            # would take every programmed endpoint away (after a restart,
            # hundreds of entries) only to put them back a moment later.
            if ipam_read:
                members.sync_remote_endpoints(self._remote_table())

        # The first snapshot of each is read and applied here, before the
        # daemon serves: its networks (with their tunnels, DNS and known
        # endpoints) are built when a first attach comes. The watch threads
        # follow from those reads, so each snapshot is applied once, in
        # order. If etcd does not answer, the rest is left to the threads
        # (one wait for etcd at start, not four).
        answered = True
        for prefix, callback in (
            (keys.HOSTS, on_hosts_too),
            (keys.NETWORKS, on_networks),
            (keys.NAMES, on_names),
            (keys.IPAM, on_ipam),
        ):
            answered = self.etcd.watch_prefix(prefix, callback, first_here=answered)
        log.info(
            "cluster: host %s registered (underlay %s, ttl %d s)", self.host, underlay, self.ttl
        )

    def leave(self) -> None:
        """Graceful stop: unregister at once (peers drop this host now, not
        after the lease's TTL)."""
        try:
            self.etcd.unregister(keys.host_key(self.host))
        except DependencyUnavailable as e:
            log.warning("cluster: could not unregister: %s", e)

    @property
    def up(self) -> bool:
        return self.etcd.up

    def _remote_table(self) -> dict[str, tuple[tuple[str, str, str], ...]]:
        """Other hosts' endpoints by network: (ip, mac, that host's underlay)."""
        with self._mu:
            ipam, hosts = dict(self._ipam), dict(self._hosts)
        return keys.remote_endpoints(ipam, hosts, self.host)

    # ----------------------------------------------------------- networks

    def networks(self) -> dict[str, NetworkSpec]:
        with self._mu:
            return dict(self._networks)

    def create_network(self, net: NetworkSpec) -> tuple[NetworkSpec, bool]:
        """Define a network (idempotent for the same spec). Returns it and
        whether it was created now."""
        doc = keys.network_to_doc(net)
        have = self.etcd.get(keys.network_key(net.name))
        if have == doc:
            return net, False
        if have is not None:
            raise Conflict(
                f"network {net.name} exists with another definition",
                field="spec",
                hint=f"delete it first: netplumb network del {net.name}",
            )
        # The VNI is claimed atomically first: two hosts creating networks at
        # once cannot both get it.
        vni = {"network": net.name}
        vni_key = keys.vni_key(net.vni)
        if not self._claim(vni_key, vni):
            holder = (self.etcd.get(vni_key) or {}).get("network", "?")
            if holder != net.name:
                raise Conflict(
                    f"VNI {net.vni} is already carried by network {holder}", field="spec.vni"
                )
        try:
            for _ in range(20):
                # Checked against a snapshot, written only if no network was
                # defined since: two overlapping subnets created at once on
                # two hosts cannot both pass.
                snapshot, revision = self.etcd.get_prefix(keys.NETWORKS)
                self.check_vni(net, self._decode_networks(snapshot))
                if self.etcd.create(keys.network_key(net.name), doc, (keys.NETWORKS, revision)):
                    break
                have = self.etcd.get(keys.network_key(net.name))
                if have == doc:
                    return net, False
                if have is not None:
                    raise Conflict(f"network {net.name} was just defined differently", field="spec")
            else:
                raise DependencyUnavailable(
                    "networks are being defined too fast to check this one against them",
                    hint="try again",
                )
        except BaseException:
            self.etcd.delete_if(vni_key, vni)
            raise
        with self._mu:
            self._networks[net.name] = net
        log.info("cluster: network %s defined (%s, vni %d)", net.name, net.subnet, net.vni)
        return net, True

    def check_vni(self, net: NetworkSpec, networks: list[NetworkSpec] | None = None) -> None:
        """Refuse a network that would share a VNI or overlap the subnet of
        another one (every host carries all networks)."""
        for other in self.network_list() if networks is None else networks:
            if other.name == net.name:
                continue
            if other.vni == net.vni:
                raise Conflict(
                    f"VNI {net.vni} is already carried by network {other.name}", field="spec.vni"
                )
            if other.subnet.version == net.subnet.version and other.subnet.overlaps(net.subnet):
                raise Conflict(
                    f"subnet {net.subnet} overlaps {other.subnet} of network {other.name}",
                    field="spec.subnet",
                )

    def network_list(self) -> list[NetworkSpec]:
        snapshot, _ = self.etcd.get_prefix(keys.NETWORKS)
        return self._decode_networks(snapshot)

    def _decode_networks(self, snapshot: dict[str, Any]) -> list[NetworkSpec]:
        out = []
        for key, d in sorted(snapshot.items()):
            try:
                out.append(keys.network_from_doc(d))
            except (KeyError, TypeError, ValueError):
                log.error("network %s in etcd is malformed, ignored", key)
        return out

    def delete_network(self, name: str) -> bool:
        """Remove a network's definition; refused while addresses of it are
        allocated anywhere (endpoints use it)."""
        used, _ = self.etcd.get_prefix(keys.ipam_prefix(name))
        if used:
            hosts = sorted({str(d.get("host", "?")) for d in used.values()})
            raise PreconditionFailed(
                f"network {name} still has {len(used)} endpoint address(es), on {', '.join(hosts)}",
                field="name",
                hint="detach its endpoints first",
            )
        have = self.etcd.get(keys.network_key(name))
        existed = self.etcd.delete(keys.network_key(name))
        if have is not None and "vni" in have:
            self.etcd.delete_if(keys.vni_key(int(have["vni"])), {"network": name})
        with self._mu:
            self._networks.pop(name, None)
        return existed

    def allocated_count(self, name: str) -> int:
        used, _ = self.etcd.get_prefix(keys.ipam_prefix(name))
        return len(used)

    # --------------------------------------------------------------- IPAM

    def _owner_doc(self, eid: str, guest: str, mac: str) -> dict[str, Any]:
        return {"host": self.host, "endpoint": eid, "guest": guest, "mac": mac}

    def reserve(self, net: NetworkSpec, ip: IPAddress, eid: str, guest: str, mac: str) -> None:
        """Claim a static address for an endpoint; Conflict when another
        endpoint (on any host) holds it. Idempotent for the same endpoint."""
        if ip in keys.reserved(net):
            raise Conflict(
                f"{ip} is the subnet's, the gateway's or the DNS address of network {net.name}",
                field="spec.addresses",
            )
        key = keys.ipam_key(net.name, ip)
        mine = self._owner_doc(eid, guest, mac)
        if self._claim(key, mine):
            return
        have = self.etcd.get(key)
        if have is not None and keys.endpoint_owner(have, self.host) == eid:
            if have != mine:
                self.etcd.put(key, mine)  # ours from an earlier attach: its MAC may differ
            return
        if have is None and self._claim(key, mine):  # released in between
            return
        where = (
            f"{have.get('guest', '?')} on host {have.get('host', '?')}"
            if have
            else "another endpoint"
        )
        raise Conflict(
            f"{ip} is already taken in network {net.name} (by {where})",
            field="spec.addresses",
            hint="leave the address out to get a free one",
        )

    def allocate(self, net: NetworkSpec, eid: str, guest: str, mac: str) -> IPInterface:
        """A free address of the network for an endpoint, claimed atomically:
        concurrent attaches on several hosts never get the same one."""
        used, _ = self.etcd.get_prefix(keys.ipam_prefix(net.name))
        taken: set[IPAddress] = set()
        for k, d in used.items():
            ip_text = k.rsplit("/", 1)[-1]
            if keys.endpoint_owner(d, self.host) == eid:  # ours already (a retried attach)
                if d != self._owner_doc(eid, guest, mac):
                    self.etcd.put(k, self._owner_doc(eid, guest, mac))
                return ipaddress.ip_interface(f"{ip_text}/{net.subnet.prefixlen}")
            try:
                taken.add(ipaddress.ip_address(ip_text))
            except ValueError:
                continue
        mine = self._owner_doc(eid, guest, mac)
        tries = 0
        for ip in keys.candidates(net, taken, eid):
            tries += 1
            if self._claim(keys.ipam_key(net.name, ip), mine):
                log.info("cluster: %s allocated to endpoint %s (%d tries)", ip, eid, tries)
                return ipaddress.ip_interface(f"{ip}/{net.subnet.prefixlen}")
        raise PreconditionFailed(
            f"network {net.name} has no free address left in {net.subnet}",
            field="spec.addresses",
            hint="detach endpoints, or create a network with a larger subnet",
        )

    def _claim(self, key: str, mine: dict[str, Any]) -> bool:
        """create-if-absent, surviving one timed-out write: etcd may have
        applied it, so look before trying again (a busy etcd under many
        concurrent attaches answers slowly, it has not failed)."""
        try:
            return self.etcd.create(key, mine)
        except DependencyUnavailable:
            have = self.etcd.get(key)
            if have == mine:
                return True
            if have is not None:
                return False
            return self.etcd.create(key, mine)

    def release(
        self, network: str, addresses: Iterable[IPAddress], eid: str, guest: str, mac: str
    ) -> None:
        """Give back an endpoint's addresses (only those it holds). Failures
        are logged: the garbage collection of a later reconcile retries."""
        mine = self._owner_doc(eid, guest, mac)
        for ip in addresses:
            try:
                self.etcd.delete_if(keys.ipam_key(network, ip), mine)
            except DependencyUnavailable as e:
                log.warning("cluster: releasing %s of %s failed (retried later): %s", ip, eid, e)

    # -------------------------------------------------------------- names

    def publish(
        self, network: str, name: str, addresses: Iterable[IPInterface], eid: str, strict: bool
    ) -> bool:
        """Publish an endpoint's name. ``strict``: a name another endpoint
        holds is a Conflict; otherwise (Docker's container names) the name is
        skipped with a warning. Returns whether it is published."""
        doc = {
            "host": self.host,
            "endpoint": eid,
            "addresses": [str(a.ip) for a in addresses],
        }
        key = keys.name_key(network, name)
        if self.etcd.create(key, doc):
            return True
        have = self.etcd.get(key)
        if have is not None and keys.endpoint_owner(have, self.host) == eid:
            if have != doc:
                self.etcd.put(key, doc)
            return True
        if strict:
            raise Conflict(
                f"the name {name} is already taken in network {network}"
                + (f" (on host {have.get('host', '?')})" if have else ""),
                field="spec.name",
            )
        log.warning(
            "cluster: name %s in %s is taken by another endpoint; not published", name, network
        )
        return False

    def unpublish(self, network: str, name: str, eid: str) -> None:
        key = keys.name_key(network, name)
        try:
            have = self.etcd.get(key)
            if have is not None and keys.endpoint_owner(have, self.host) == eid:
                self.etcd.delete_if(key, have)
        except DependencyUnavailable as e:
            log.warning("cluster: unpublishing %s failed (retried later): %s", name, e)

    def lookup(self, network: str, name: str) -> list[str]:
        """Addresses of ``name`` in ``network`` (DNS)."""
        with self._mu:
            return list(self._names.get((network, name.lower()), []))

    # ---------------------------------------------------- garbage collection

    def collect(self, alive: Callable[[], set[str]]) -> list[str]:
        """Release the addresses and names this host holds for endpoints that
        no longer exist (a crash between releasing and forgetting, a wiped
        state). ``alive()`` -- the endpoints recorded or being attached -- is
        asked only after etcd was read: an attach that claims an address
        meanwhile is then in it. Returns what was released."""
        snapshots = [self.etcd.get_prefix(prefix)[0] for prefix in (keys.IPAM, keys.NAMES)]
        endpoints = alive()
        out: list[str] = []
        for snapshot in snapshots:
            for k, d in snapshot.items():
                eid = keys.endpoint_owner(d, self.host)
                if eid is not None and eid not in endpoints:
                    if self.etcd.delete_if(k, d):
                        out.append(k)
        if out:
            log.info("cluster: released %d leftover key(s): %s", len(out), ", ".join(out))
        return out
