"""The engine: every verb is the same loop -- observe, plan, apply, record.

It owns the locks (one per guest, and a reader/writer lock per bridge so
attaches to one bridge run in parallel while a bridge delete excludes them),
the rollback of half-done attaches, and the order "plumb, then record": the
store never holds an endpoint that was not fully built, and a crash between
the two leaves only a tagged orphan that the next reconcile collects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import TypeVar

from .cluster import Cluster
from .core import cluster as cluster_keys
from .core import naming, overlay, plan, spec
from .core.model import (
    BridgeKind,
    BridgeRecord,
    BridgeSpec,
    DesiredEndpoint,
    EndpointRecord,
    EndpointSpec,
    GuestKind,
    GuestRef,
    HostFeatures,
    IPAddress,
    IPInterface,
    LinkKind,
    NetworkSpec,
    ObservedEndpoint,
    PeerRecord,
    RouteSpec,
)
from .core.ops import (
    AddOvsBridge,
    AddRule,
    CreateDummy,
    CreateMacvlan,
    CreateVeth,
    DeleteLink,
    DelOvsBridge,
    DelOvsPort,
    DelRule,
    MoveToGuest,
    Op,
    OvsOp,
    Where,
    undo,
)
from .drivers.dhcp import DhcpDriver
from .drivers.docker import DockerDriver
from .drivers.netlink import NetlinkDriver
from .drivers.netns import NetnsHandle, host_ident, netns_ident, open_netns
from .drivers.ovs import OvsDriver, wait_for_link
from .errors import (
    Conflict,
    DependencyUnavailable,
    InternalError,
    InvalidSpec,
    NetplumbError,
    NotFound,
    PreconditionFailed,
)
from .store import Store

log = logging.getLogger("netplumb.engine")

T = TypeVar("T")

READY, GUEST_MISSING, DEGRADED = "ready", "guest-missing", "degraded"


@dataclass(frozen=True, slots=True)
class EndpointView:
    record: EndpointRecord
    state: str = READY
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BridgeView:
    record: BridgeRecord
    present: bool
    mtu: int
    endpoint_count: int
    endpoint_mtu: int = 0
    datapath_type: str = ""
    created: bool = False  # create_bridge: made by this call


@dataclass(frozen=True, slots=True)
class TunnelView:
    bridge: str
    vni: int
    type: str
    port: str
    state: str


@dataclass(frozen=True, slots=True)
class PeerView:
    record: PeerRecord
    tunnels: tuple[TunnelView, ...] = ()


@dataclass(frozen=True, slots=True)
class Drift:
    object: str
    name: str
    detail: str
    repair: tuple[str, ...] = ()


class _RWLock:
    """Many readers or one writer; writers do not starve (new readers wait
    while a writer waits)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _Locks:
    """Named locks created on demand."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._guest: dict[str, threading.Lock] = {}
        self._bridge: dict[str, _RWLock] = {}

    def guest(self, key: str) -> threading.Lock:
        with self._mu:
            return self._guest.setdefault(key, threading.Lock())

    def bridge(self, name: str) -> _RWLock:
        with self._mu:
            return self._bridge.setdefault(name, _RWLock())


def guest_path(guest: GuestRef) -> str:
    """The namespace file of a netns, pid or path guest (Docker guests need
    the Docker API: see Engine._guest_path)."""
    if guest.kind is GuestKind.NETNS:
        return f"/run/netns/{guest.value}"
    if guest.kind is GuestKind.PID:
        return f"/proc/{guest.value}/ns/net"
    if guest.kind is GuestKind.PATH:
        return guest.value
    raise InternalError(f"no namespace path for {guest}")  # pragma: no cover


class Engine:
    def __init__(
        self,
        store: Store,
        netlink: NetlinkDriver,
        ovs: OvsDriver | None = None,
        underlay_address: str = "",
        docker: DockerDriver | None = None,
        dhcp: DhcpDriver | None = None,
        tc: Callable[[NetnsHandle, tuple[str, ...]], None] | None = None,
    ) -> None:
        self.store = store
        self.netlink = netlink
        self.ovs = ovs
        self.docker = docker
        self.dhcp = dhcp
        if dhcp is not None:
            dhcp.on_exit = self._dhcp_restart
        self.tc = tc
        self.cluster: Cluster | None = None  # cluster mode (set by the daemon)
        # Cluster: other hosts' endpoints by network, (ip, mac, vtep).
        self._remote: dict[str, tuple[tuple[str, str, str], ...]] = {}
        # False until the first registry snapshot: a reconcile before it must
        # not take the entries it cannot know about away.
        self._remote_ready = False
        self._remote_mu = threading.Lock()
        self.underlay_address = underlay_address
        self._peer_lock = threading.Lock()
        self._memo = threading.local()
        self._locks = _Locks()
        self._vlan_links = _RWLock()  # 802.1Q sub-interfaces shared by macvlans
        self._inflight: set[str] = set()
        self._inflight_mu = threading.Lock()
        self.started = time.time()
        # Observers of convergence (metrics): each is called with the cause
        # ("reconcile", "container-start") and the numbers of objects
        # repaired, that could not be repaired and orphans collected.
        self.on_converged: list[Callable[[str, int, int, int], None]] = []

    @property
    def features(self) -> HostFeatures:
        return self.netlink.features()

    # ------------------------------------------------------------ bridges

    def create_bridge(self, want: BridgeSpec) -> BridgeView:
        if want.kind is BridgeKind.AUTO:
            want = replace(want, kind=self._existing_kind(want.name))
        if want.kind is BridgeKind.LINUX:
            overlay.check_linux_tunnel(want, self.features)
        with self._locks.bridge(want.name).write():
            existing = self.store.bridges().get(want.name)
            if existing is not None and existing.spec != want:
                raise Conflict(
                    f"bridge {want.name} exists with a different spec "
                    f"({_differences(existing.spec, want)})",
                    field="spec",
                    hint=f"delete it first with 'netplumb bridge del {want.name}'",
                )
            if want.vni and existing is None:
                for other in self.store.bridges().values():
                    if other.spec.vni == want.vni:
                        raise Conflict(
                            f"VNI {want.vni} is already carried by bridge {other.spec.name}",
                            field="spec.vni",
                            hint="one bridge per VNI on a host",
                        )
            record, ops = self._converge_bridge(want, existing, rollback=existing is None)
            if existing != record:
                self._store_or_rollback(lambda: self.store.put_bridge(record), ops, None)
                log.info(
                    "bridge %s %s%s",
                    want.name,
                    "created" if record.owned else "adopted",
                    f" ({'; '.join(map(str, ops))})" if ops else "",
                )
            return replace(self._bridge_view(record), created=existing is None and record.owned)

    def _existing_kind(self, name: str) -> BridgeKind:
        """The kind of the bridge called ``name``: its record's, else that of
        an existing Linux or OVS bridge, else Linux (to be created)."""
        record = self.store.bridges().get(name)
        if record is not None:
            return record.spec.kind
        link = self.netlink.observe_bridge(name, addresses=False)
        if link.exists and link.is_bridge:
            return BridgeKind.LINUX
        if self.ovs is not None and self.ovs.connected and self.ovs.observe_bridge(name):
            return BridgeKind.OVS
        if link.exists:
            raise PreconditionFailed(
                f"{name} exists and is neither a Linux bridge nor an OVS bridge",
                field="spec.name",
                hint="name a bridge, or a new name to create one",
            )
        return BridgeKind.LINUX

    def _converge_bridge(
        self, want: BridgeSpec, existing: BridgeRecord | None, rollback: bool, apply: bool = True
    ) -> tuple[BridgeRecord, tuple[Op, ...]]:
        """Make one bridge (and, for an overlay, its tunnels) match; returns
        the record and the ops applied. With ``apply`` False nothing is
        changed and the ops are what a repair would do (for a missing OVS
        bridge, only its creation: the rest depends on it)."""
        done: list[Op] = []

        def step(ops: tuple[Op, ...]) -> None:
            if apply:
                self._apply(ops, None, rollback=rollback, what=f"bridge {want.name}")
            done.extend(ops)

        try:
            if want.kind is BridgeKind.OVS:
                ovs = self._need_ovs()
                mtu = want.mtu or (self._overlay_mtu(want) if want.vni else 0)
                seen_ovs = ovs.observe_bridge(want.name)
                ops, owned = overlay.plan_ovs_bridge(
                    want, seen_ovs, existing, self.store.agent_id, ovs.datapath_type(), mtu
                )
                step(ops)
                if not apply and seen_ovs is None:
                    return BridgeRecord(spec=want, owned=owned), tuple(done)
                made = any(isinstance(op, AddOvsBridge) for op in ops)
                if apply and not wait_for_link(
                    self.netlink.link_index,
                    want.name,
                    ifindex=(lambda: ovs.interface_ifindex(want.name)) if made else None,
                ):
                    raise DependencyUnavailable(
                        f"Open vSwitch did not create the interface of bridge {want.name}",
                        hint="check ovs-vswitchd is running (its log says why)",
                    )
                link = self.netlink.observe_bridge(want.name)
                link_ops = overlay.plan_bridge_link(want, link, mtu)
            else:
                link = self.netlink.observe_bridge(want.name)
                link_ops, owned = plan.plan_bridge(want, link, existing, self.store.agent_id)
            if existing is not None:
                owned = existing.owned
            foreign = () if owned else tuple(a for a in link.addresses if a in want.addresses)
            if existing is not None:
                foreign = existing.foreign_addresses
            step(link_ops)
            if want.vni:
                step(self._plan_overlay(want))
                if apply:
                    done.extend(self._program_known(want))
        except NetplumbError:
            if apply and rollback and done:
                self._undo(done, None, f"bridge {want.name}")
            raise
        return BridgeRecord(spec=want, owned=owned, foreign_addresses=foreign), tuple(done)

    def delete_bridge(self, name: str) -> tuple[bool, bool]:
        spec.ifname(name, "name")
        with self._locks.bridge(name).write():
            record = self.store.bridges().get(name)
            if record is None:
                return False, False
            users = [e for e in self.store.endpoints().values() if e.spec.bridge == name]
            if users:
                raise PreconditionFailed(
                    f"bridge {name} still has {len(users)} endpoint(s)",
                    field="name",
                    hint="detach them first ('netplumb ls' lists them)",
                )
            link = self.netlink.observe_bridge(name)
            if record.spec.kind is BridgeKind.OVS:
                ops = overlay.plan_ovs_bridge_delete(
                    record, self._need_ovs().observe_bridge(name), link
                )
            else:
                ops = plan.plan_bridge_delete(record, link, self.store.agent_id)
                vx = overlay.vxlan_name(record.spec.vni) if record.spec.vni else ""
                seen_vx = self.netlink.observe_vxlan(vx) if vx else None
                if seen_vx is not None and seen_vx.alias == overlay.vxlan_alias(
                    self.store.agent_id
                ):
                    # A bridge's ports outlive it: our VXLAN device goes first.
                    ops = (DeleteLink(Where.HOST, vx), *ops)
            self._apply(ops, None, rollback=False, what=f"bridge {name}")
            self.store.delete_bridge(name)
            deleted = any(
                isinstance(op, DeleteLink | DelOvsBridge) and op.name == name for op in ops
            )
            log.info("bridge %s %s", name, "deleted" if deleted else "forgotten (not ours)")
            return True, deleted

    def list_bridges(self) -> list[BridgeView]:
        return [self._bridge_view(r) for _, r in sorted(self.store.bridges().items())]

    def _bridge_view(self, record: BridgeRecord) -> BridgeView:
        seen = self.netlink.observe_bridge(record.spec.name, addresses=False)
        count = sum(1 for e in self.store.endpoints().values() if e.spec.bridge == record.spec.name)
        datapath = ""
        if record.spec.kind is BridgeKind.OVS and self.ovs is not None and self.ovs.connected:
            row = self.ovs.observe_bridge(record.spec.name)
            datapath = row.datapath_type if row else ""
        return BridgeView(
            record=record,
            present=seen.exists,
            mtu=seen.mtu,
            endpoint_count=count,
            endpoint_mtu=self._endpoint_mtu(record, seen.mtu),
            datapath_type=datapath,
        )

    def _endpoint_mtu(self, record: BridgeRecord, bridge_mtu: int | None = None) -> int:
        """The MTU endpoints on this bridge get unless they say otherwise: the
        bridge's own (``bridge_mtu`` when the caller observed it already), or
        for an overlay the underlay MTU minus the encapsulation overhead."""
        if record.spec.mtu:
            return record.spec.mtu
        if record.spec.vni:
            return self._overlay_mtu(record.spec)
        if bridge_mtu is None:
            bridge_mtu = self.netlink.link_mtu(record.spec.name)
        return bridge_mtu or 1500

    # -------------------------------------------------------------- guests

    def resolve_guest(self, value: str, field: str = "guest") -> GuestRef:
        """A guest reference in canonical form. ``docker:X`` and a bare name
        Docker knows become ``docker:<full id>``; a bare name Docker does not
        know is a named namespace. A removed container is still found by the
        id or name its endpoints recorded, so that it can be detached."""
        ref = spec.guest(value, field)
        bare = ":" not in value and not value.startswith("/")
        if ref.kind is not GuestKind.DOCKER and not bare:
            return ref
        container = None
        if self.docker is not None:
            try:
                container = self.docker.inspect(ref.value)
            except DependencyUnavailable:
                if ref.kind is GuestKind.DOCKER:
                    raise
        if container is not None:
            return GuestRef(GuestKind.DOCKER, container.id)
        if ref.kind is GuestKind.DOCKER:
            for r in self.store.endpoints().values():
                if r.guest.kind is GuestKind.DOCKER and (
                    r.guest.value.startswith(ref.value) or r.guest_name == ref.value
                ):
                    return r.guest
            if self.docker is None:
                raise DependencyUnavailable("this netplumbd runs without Docker", field=field)
            raise NotFound(f"Docker has no container {ref.value!r}", field=field)
        return ref

    def _guest_path(self, guest: GuestRef) -> str | None:
        """The namespace file of a guest; None for a Docker container that is
        not running (or gone)."""
        if guest.kind is not GuestKind.DOCKER:
            return guest_path(guest)
        if self.docker is None:
            raise DependencyUnavailable("this netplumbd runs without Docker")
        c = self.docker.inspect(guest.value)
        if c is None or not c.running or c.pid <= 0:
            return None
        return f"/proc/{c.pid}/ns/net"

    def _open_guest(self, guest: GuestRef) -> tuple[NetnsHandle, str]:
        """Open and pin a guest's namespace for an attach; (handle, container
        name) -- the name empty for other guests. A container's PID is checked
        again after the open: a container that died in between (and a PID
        reused by another process) is caught, pipework's #204."""
        if guest.kind is not GuestKind.DOCKER:
            return open_netns(guest_path(guest), "spec.guest"), ""
        if self.docker is None:
            raise DependencyUnavailable("this netplumbd runs without Docker", field="spec.guest")
        c = self.docker.running_container(guest.value)
        handle = open_netns(f"/proc/{c.pid}/ns/net", "spec.guest")
        try:
            again = self.docker.inspect(guest.value)
            if again is None or not again.running or again.pid != c.pid:
                raise PreconditionFailed(
                    f"container {c.name} stopped while being attached", field="spec.guest"
                )
        except BaseException:
            handle.close()  # an open handle would keep the dead namespace alive
            raise
        return handle, c.name

    def on_docker_event(self, action: str, container_id: str) -> None:
        """Follow a container's life: re-plumb its endpoints when it starts
        (a restart gives it a new namespace), drop them when it is removed;
        after a reconnection to dockerd, reconcile every Docker endpoint."""
        mine = [
            r
            for r in self.store.endpoints().values()
            if r.guest.kind is GuestKind.DOCKER
            and (not container_id or r.guest.value == container_id)
        ]
        if not mine:
            return
        if action == "destroy":
            for r in mine:
                with self._locks.guest(r.guest.key), self._claim(r.id):
                    try:
                        self._detach_one(r)
                    except NetplumbError as e:
                        log.error("removing endpoint %s of removed container failed: %s", r.id, e)
            log.info(
                "container %s removed: its %d endpoint(s) removed", container_id[:12], len(mine)
            )
            return
        if action == "die":
            # A kept DHCP client would hold the dead container's namespace
            # (and its veth) alive: it goes, and comes back with the start.
            for r in mine:
                if r.spec.dhcp is not None and self.dhcp is not None:
                    self.dhcp.stop(r.id)
            return
        if action not in ("start", "connected"):
            return
        started = time.perf_counter()
        repaired = failed = 0
        for r in mine:
            with self._locks.guest(r.guest.key), self._claim(r.id):
                current = self.store.endpoints().get(r.id)
                if current is None:
                    continue
                try:
                    if action == "connected" and self.docker is not None:
                        if self.docker.inspect(current.guest.value) is None:
                            self._detach_one(current)  # removed while we were not looking
                            continue
                    if self._converge_endpoint(current, repair=True) is not None:
                        repaired += 1
                except NetplumbError as e:
                    failed += 1
                    log.error(
                        "re-plumbing endpoint %s of container %s failed: %s",
                        r.id,
                        container_id[:12],
                        e,
                    )
        self._converged("container-" + action, repaired, failed, 0)
        if action == "start":
            log.info(
                "container %s started: %d endpoint(s) re-plumbed in %.1f ms",
                container_id[:12],
                len(mine),
                (time.perf_counter() - started) * 1000,
            )

    def _bridge_mtu(self, name: str) -> int:
        record = self.store.bridges().get(name)
        if record is not None:
            return self._endpoint_mtu(record)
        return self.netlink.link_mtu(name) or 1500

    # ------------------------------------------------------------ overlays

    @contextmanager
    def _memoized(self) -> Iterator[None]:
        """Within one peer or overlay operation, look the underlay and our
        OVS ports up once, not once per bridge."""
        outer = getattr(self._memo, "cache", None)
        if outer is None:
            self._memo.cache = {}
        try:
            yield
        finally:
            if outer is None:
                self._memo.cache = None

    def _cached(self, key: tuple[object, ...], compute: Callable[[], T]) -> T:
        cache = getattr(self._memo, "cache", None)
        if cache is None:
            return compute()
        if key not in cache:
            cache[key] = compute()
        return cache[key]  # type: ignore[no-any-return]

    def _underlay(self, towards: str = "") -> tuple[str, str, int]:
        """(local address, interface, MTU) of the underlay."""
        found = self._cached(
            ("underlay", self.underlay_address or towards),
            lambda: self.netlink.underlay(self.underlay_address, towards),
        )
        if found is None:
            if self.underlay_address:
                raise PreconditionFailed(
                    f"the underlay address {self.underlay_address} is on no interface of this host",
                    hint="fix --underlay-address (underlay_address in the config)",
                )
            raise PreconditionFailed(
                "cannot find the underlay: no route towards the peers",
                hint="give --underlay-address, or add a route towards the peer hosts",
            )
        return found

    def _overlay_mtu(self, want: BridgeSpec) -> int:
        peers = list(self.store.peers().values())
        towards = str(peers[0].address) if peers else ""
        try:
            local, _, mtu = self._underlay(towards)
        except PreconditionFailed:
            local, mtu = "", 1500
        return overlay.overlay_mtu(mtu, want.tunnel or "vxlan", ":" in local)

    def _plan_overlay(self, want: BridgeSpec) -> tuple[Op, ...]:
        peers = sorted(self.store.peers().values(), key=lambda p: str(p.address))
        if want.kind is BridgeKind.OVS:
            ovs = self._need_ovs()
            local = self.underlay_address
            owned = self._cached(("owned_ports",), lambda: ovs.owned_ports(self.store.agent_id))
            ours = [
                p
                for p in owned
                if p.external_ids.get(overlay.BRIDGE_ID) == want.name
                and overlay.PEER_ID in p.external_ids
            ]
            return overlay.plan_ovs_tunnels(want, peers, local, ours)
        local, _, _ = self._underlay(str(peers[0].address) if peers else "")
        if not local:
            raise PreconditionFailed(
                "the underlay has no source address for VXLAN",
                hint="give --underlay-address",
            )
        mtu = want.mtu or self._overlay_mtu(want)
        seen = self.netlink.observe_vxlan(overlay.vxlan_name(want.vni))
        ops = overlay.plan_linux_overlay(want, peers, local, mtu, seen, self.store.agent_id)
        if self._programs_known(want.name):
            if any(isinstance(op, DeleteLink) for op in ops):
                seen = None  # re-created: its entries go with it
            ops += overlay.plan_known_endpoints(
                want.name,
                want.vni,
                self._remote.get(want.name, ()),
                seen,
                self.netlink.bridge_neighbours(want.name),
            )
        return ops

    def _program_known(self, want: BridgeSpec, attempt: int = 0) -> tuple[Op, ...]:
        """OVS cluster networks: program the other hosts' endpoints into
        ovs-vswitchd's MAC table and ARP answer flows (Linux bridges get
        theirs in _plan_overlay). Best effort: a failure is logged and the
        network keeps working, by flooding, until the next try. Tunnels that
        ovs-vswitchd has not built yet (it does so just after the OVSDB
        transaction that adds them) are tried again shortly, for some seconds."""
        if want.kind is not BridgeKind.OVS or not want.vni or not self._programs_known(want.name):
            return ()
        ovs = self._need_ovs()
        if ovs.rundir is None:
            return ()  # OVSDB over TCP: this host's ovs-vswitchd is not reachable
        ports = {
            str(p.address): overlay.tunnel_port_name(want.name, str(p.address))
            for p in self.store.peers().values()
        }
        remote = self._remote.get(want.name, ())
        try:
            seen = ovs.observe_known(want.name, set(ports.values()))
            ops = overlay.plan_ovs_known_endpoints(want.name, remote, ports, seen)
            self._apply(ops, None, rollback=False, what=f"known endpoints of {want.name}")
        except NetplumbError as e:
            log.warning(
                "cluster: the other hosts' endpoints are not programmed into %s "
                "(traffic to them is flooded meanwhile): %s",
                want.name,
                e,
            )
            return ()
        waiting = {ports[v] for _, _, v in remote if v in ports} - set(seen.ready_ports)
        if waiting and attempt < 40:
            retry = threading.Timer(0.25, self._retry_known, (want.name, attempt + 1))
            retry.daemon = True
            retry.start()
        elif waiting:
            log.warning(
                "cluster: %s: tunnel(s) %s not built by ovs-vswitchd; the endpoints behind "
                "them are reached by flooding",
                want.name,
                ", ".join(sorted(waiting)),
            )
        return ops

    def _retry_known(self, bridge: str, attempt: int) -> None:
        record = self.store.bridges().get(bridge)
        if record is None:
            return
        with self._locks.bridge(bridge).write():
            current = self.store.bridges().get(bridge)
            if current is not None:
                self._program_known(current.spec, attempt)

    def _programs_known(self, bridge: str) -> bool:
        """Whether the other hosts' endpoints are programmed into ``bridge``:
        a cluster network's bridge, once the registry has been read (a
        reconcile before that must not take entries away)."""
        record = self.store.bridges().get(bridge)
        return (
            self.cluster is not None
            and self._remote_ready
            and record is not None
            and record.network is not None
        )

    def sync_remote_endpoints(self, table: dict[str, tuple[tuple[str, str, str], ...]]) -> None:
        """Cluster: the endpoints of each network on other hosts, (ip, mac,
        vtep); their MACs and addresses are programmed into this host's
        overlay bridges (static forwarding entries and ARP answers), so
        that traffic to them is neither flooded nor broadcast."""
        with self._remote_mu:
            first = not self._remote_ready
            changed = [
                n for n in set(table) | set(self._remote) if table.get(n) != self._remote.get(n)
            ]
            self._remote = dict(table)
            self._remote_ready = True
        if first:  # until now nothing was programmed (a restart must not wipe entries)
            changed = [n for n, b in self.store.bridges().items() if b.network is not None]
        for name in sorted(changed):
            record = self.store.bridges().get(name)
            if record is None or record.network is None:
                continue
            with self._locks.bridge(name).write(), self._memoized():
                try:
                    self._apply(self._plan_overlay(record.spec), None, rollback=False, what=name)
                    self._program_known(record.spec)
                except NetplumbError as e:
                    log.error("cluster: programming the endpoints of %s failed: %s", name, e)

    def _check_userspace_routing(self, peer: str) -> None:
        """The userspace datapath builds tunnel packets itself and can only
        route them out of an OVS bridge: the local underlay address must sit
        on one (br-phy). Checked for peers of OVS overlays on netdev."""
        ovs_overlays = [
            b for b in self.store.bridges().values() if b.spec.vni and b.spec.kind is BridgeKind.OVS
        ]
        if not ovs_overlays or self.ovs is None or self.ovs.datapath_type() != "netdev":
            return
        local, ifname, _ = self._underlay(peer)
        if self.ovs.interface_type(ifname) != "internal":
            raise PreconditionFailed(
                f"the userspace OVS datapath cannot send tunnel packets to {peer}: the "
                f"underlay address {local or '?'} is on {ifname}, which is not an OVS bridge",
                field="address",
                hint=(
                    f"move the underlay address onto an OVS bridge holding {ifname}: "
                    f"ovs-vsctl add-br br-phy -- set bridge br-phy datapath_type=netdev "
                    f"fail_mode=standalone; ovs-vsctl add-port br-phy {ifname}; "
                    f"ip addr del ADDRESS dev {ifname}; ip addr add ADDRESS dev br-phy; "
                    "ip link set br-phy up"
                ),
            )

    # --------------------------------------------------------------- peers

    def add_peer(self, address: IPAddress, name: str) -> PeerView:
        return self.add_peers([(address, name)])[0]

    def add_peers(self, wanted: list[tuple[IPAddress, str]]) -> list[PeerView]:
        """Add peers and re-plan every overlay once. All or nothing: if the
        tunnels cannot be built, the peers added here are taken out again."""
        with self._peer_lock, self._memoized():
            peers = self.store.peers()
            before: dict[str, PeerRecord | None] = {}
            records: list[PeerRecord] = []
            for address, name in wanted:
                key = str(address)
                existing = peers.get(key)
                if existing is not None and name and existing.name and existing.name != name:
                    raise Conflict(f"peer {key} exists with the name {existing.name}", field="name")
                try:
                    local = self._underlay(key)[0]
                except PreconditionFailed:
                    local = ""
                if local and local == key:
                    raise InvalidSpec(f"{key} is this host's own underlay address", field="address")
                self._check_userspace_routing(key)
                before.setdefault(key, existing)
                records.append(
                    PeerRecord(address=address, name=name or (existing.name if existing else ""))
                )
            changed = [r for r in records if before[str(r.address)] != r]
            for r in changed:
                self.store.put_peer(r)
            try:
                self._converge_overlays(rollback=False)
            except NetplumbError:
                for r in changed:
                    old = before[str(r.address)]
                    if old is None:
                        self.store.delete_peer(str(r.address))
                    else:
                        self.store.put_peer(old)
                self._converge_overlays(rollback=False)
                raise
            for r in changed:
                log.info("peer %s added%s", r.address, f" ({r.name})" if r.name else "")
            # The converge just made every Linux overlay flood to these peers.
            return [self._peer_view(r, linux_up=True) for r in records]

    def remove_peer(self, peer: str) -> bool:
        with self._peer_lock, self._memoized():
            found = [
                p for k, p in self.store.peers().items() if k == peer or (p.name and p.name == peer)
            ]
            if not found:
                return False
            for p in found:
                self.store.delete_peer(str(p.address))
            self._converge_overlays(rollback=False)
            log.info("peer %s removed", ", ".join(str(p.address) for p in found))
            return True

    def list_peers(self) -> list[PeerView]:
        return [self._peer_view(p) for _, p in sorted(self.store.peers().items())]

    def _peer_view(self, peer: PeerRecord, linux_up: bool = False) -> PeerView:
        tunnels: list[TunnelView] = []
        remote = str(peer.address)
        for b in sorted(self.store.bridges().values(), key=lambda b: b.spec.name):
            if not b.spec.vni:
                continue
            if b.spec.kind is BridgeKind.OVS:
                port = overlay.tunnel_port_name(b.spec.name, remote)
                state = "ovs down"
                if self.ovs is not None and self.ovs.connected:
                    row = self.ovs.observe_port(port)
                    if row is None:
                        state = "missing"
                    elif row.error:
                        state = f"error: {row.error}"
                    else:
                        state = "up" if row.ofport >= 0 else "down"
            else:
                port = overlay.vxlan_name(b.spec.vni)
                seen = None if linux_up else self.netlink.observe_vxlan(port)
                if linux_up:
                    tunnels.append(TunnelView(b.spec.name, b.spec.vni, b.spec.tunnel, port, "up"))
                    continue
                state = "up" if seen is not None and remote in seen.flood_to else "missing"
            tunnels.append(TunnelView(b.spec.name, b.spec.vni, b.spec.tunnel, port, state))
        return PeerView(peer, tuple(tunnels))

    def _converge_overlays(self, rollback: bool) -> list[Op]:
        """Tunnels of every overlay bridge towards the current peers."""
        applied: list[Op] = []
        for name, b in sorted(self.store.bridges().items()):
            if not b.spec.vni:
                continue
            with self._locks.bridge(name).write():
                current = self.store.bridges().get(name)
                if current is None or not current.spec.vni:
                    continue  # deleted (or changed) while we were getting here
                ops = self._plan_overlay(current.spec)
                self._apply(ops, None, rollback=rollback, what=f"overlay {name}")
                applied.extend(ops)
                applied.extend(self._program_known(current.spec))
        # Each bridge's ops touch only its own tunnels, so one snapshot of our
        # ports served the whole pass; the next pass must read them again.
        cache = getattr(self._memo, "cache", None)
        if cache is not None:
            cache.pop(("owned_ports",), None)
        return applied

    def _need_ovs(self) -> OvsDriver:
        if self.ovs is None:
            raise DependencyUnavailable(
                "this netplumbd runs without Open vSwitch", hint="start it with --ovsdb URL"
            )
        self.ovs._need()
        return self.ovs

    def _check_route_overlap(self, record: EndpointRecord) -> None:
        """Two endpoints of one guest must not both own a route: they would
        take it from each other on every reconcile."""
        mine = {(r.destination, r.metric): r for r in plan.endpoint_routes(record)}
        for other in self.store.endpoints().values():
            if other.id == record.id or other.guest != record.guest:
                continue
            for r in plan.endpoint_routes(other):
                if (r.destination, r.metric) in mine:
                    what = (
                        "default route"
                        if r.destination.prefixlen == 0
                        else f"route to {r.destination}"
                    )
                    raise Conflict(
                        f"{record.guest} already has a {what} through {other.ifname} "
                        "(another netplumb endpoint)",
                        field="spec.gateways" if r.destination.prefixlen == 0 else "spec.routes",
                        hint="give the gateway or route to one interface only, or use another metric",
                    )

    def _bridge_for_attach(self, name: str) -> BridgeRecord:
        record = self.store.bridges().get(name)
        if record is not None:
            return record
        seen = self.netlink.observe_bridge(name)
        if seen.exists and seen.is_bridge and naming.is_ours(seen.alias):
            raise NotFound(
                f"bridge {name} is a leftover netplumb made and never recorded (a crash while "
                "creating it)",
                field="spec.bridge",
                hint=f"'netplumb reconcile' removes it; then 'netplumb bridge add {name}'",
            )
        if seen.exists and seen.is_bridge:
            # An existing Linux bridge (pipework's bri0): adopted, never
            # owned -- recorded by the caller once the attach has succeeded,
            # so a refused attach leaves no trace.
            return BridgeRecord(spec=BridgeSpec(name=name), owned=False)
        raise NotFound(
            f"bridge {name} does not exist",
            field="spec.bridge",
            hint=f"create it first: netplumb bridge add {name}",
        )

    # ---------------------------------------------------------- endpoints

    def attach(self, want: EndpointSpec) -> EndpointView:
        started = time.perf_counter()
        eid = naming.endpoint_id(want.guest, want.ifname)
        veth = want.kind is LinkKind.VETH
        with self._locks.guest(want.guest.key), self._claim(eid):
            with ExitStack() as stack:
                if veth:
                    # Under the bridge's lock: a bridge being created now is
                    # recorded before we look.
                    stack.enter_context(self._locks.bridge(want.bridge).read())
                elif want.kind is LinkKind.MACVLAN and want.vlan:
                    # A detach does not delete the <if>.<vid> this builds on.
                    stack.enter_context(self._vlan_links.read())
                bridge = self._bridge_for_attach(want.bridge) if veth else None
                if want.name and (bridge is None or bridge.network is None):
                    raise PreconditionFailed(
                        f"endpoint names are published on cluster networks; {want.bridge or 'it'} "
                        "is not one",
                        field="spec.name",
                        hint="attach to a network (netplumb network ls), or drop --name",
                    )
                ovs_bridge = bridge is not None and bridge.spec.kind is BridgeKind.OVS
                plan.check_endpoint_features(want.vlan, self.features, ovs_bridge, want.kind)
                existing = self.store.endpoints().get(eid)
                if existing is not None and existing.spec != want:
                    raise Conflict(
                        f"{want.guest} {want.ifname} is already attached with a different spec "
                        f"({_differences(existing.spec, want)})",
                        field="spec",
                        hint=f"detach it first: netplumb detach {want.guest} --ifname {want.ifname}",
                    )
                host_ifname = (want.host_ifname or naming.host_ifname(eid)) if veth else ""
                for other in self.store.endpoints().values():
                    if other.id != eid and host_ifname and other.host_ifname == host_ifname:
                        raise Conflict(
                            f"host interface name {host_ifname} is used by the endpoint of "
                            f"{other.guest} {other.ifname}",
                            field="spec.host_ifname",
                        )
                handle, guest_name = self._open_guest(want.guest)
                stack.callback(handle.close)
                if handle.ident == host_ident():
                    raise InvalidSpec(
                        f"{want.guest} is the host's own network namespace",
                        field="spec.guest",
                        hint="name the guest's namespace (netns:NAME, or pid:PID of a process in it)",
                    )
                stack.enter_context(self.netlink.scope(handle))
                if existing is None:
                    parent, parent_mac, parent_mtu = self._resolve_parent(want, eid)
                    if veth:
                        mtu = want.mtu or self._bridge_mtu(want.bridge)
                    elif want.kind is LinkKind.MACVLAN:
                        mtu = want.mtu or parent_mtu  # pipework: the host interface's
                    else:
                        mtu = want.mtu  # 0: left as it is
                    if mtu and mtu < spec.IPV6_MIN_MTU and _has_ipv6(want):
                        raise InvalidSpec(
                            f"{want.bridge or parent} has MTU {mtu}, below {spec.IPV6_MIN_MTU}, "
                            "the minimum for IPv6",
                            field="spec.mtu",
                            hint="give --mtu 1280 or more, or raise the bridge's MTU",
                        )
                    record = EndpointRecord(
                        spec=want,
                        id=eid,
                        host_ifname=host_ifname,
                        mac=want.mac
                        or ("" if want.kind is LinkKind.PHYS else naming.stable_mac(eid)),
                        mtu=mtu,
                        netns_id=handle.ident,
                        netns_path=handle.path,
                        guest_name=guest_name,
                        parent=parent,
                        parent_mac=parent_mac,
                    )
                else:
                    record = replace(
                        existing,
                        netns_id=handle.ident,
                        netns_path=handle.path,
                        guest_name=guest_name,
                    )
                net = bridge.network if bridge is not None else None
                claimed: tuple[IPAddress, ...] = ()
                if existing is None and net is not None:
                    record, claimed = self._claim_addresses(record, net)
                try:
                    self._check_route_overlap(record)
                    if want.vlan and bridge is not None and bridge.spec.kind is BridgeKind.LINUX:
                        # Access ports mean nothing until the bridge filters VLANs.
                        seen_br = self.netlink.observe_bridge(want.bridge, addresses=False)
                        self._apply(
                            plan.plan_bridge_vlan(seen_br), None, rollback=False, what=want.bridge
                        )
                    ops = self._plumb(record, handle, fresh=existing is None)
                    try:
                        self._after_plumb(record, handle, ops)
                    except NetplumbError:
                        if existing is None:
                            self._undo(ops, handle, f"endpoint {eid}")
                        raise
                    if bridge is not None and want.bridge not in self.store.bridges():
                        self._store_or_rollback(lambda: self.store.put_bridge(bridge), ops, handle)
                        log.info(
                            "bridge %s adopted for an attach (netplumb will never delete it)",
                            want.bridge,
                        )
                    if record != existing:
                        self._store_or_rollback(
                            lambda: self.store.put_endpoint(record), ops, handle
                        )
                except BaseException:
                    if existing is None and want.dhcp is not None and self.dhcp is not None:
                        self.dhcp.stop(eid)  # a kept client would hold the namespace
                    if net is not None and self.cluster is not None:
                        self.cluster.release(net.name, claimed, eid, str(want.guest), record.mac)
                        if record.name and existing is None:
                            self.cluster.unpublish(net.name, record.name, eid)
                    raise
                if net is not None:
                    self._publish(record, net)
            if ops:
                log.info(
                    "endpoint %s attached: %s %s on %s (%d ops, %.1f ms)",
                    eid,
                    want.guest,
                    want.ifname,
                    f"bridge {want.bridge}" if veth else f"{want.kind.value} {want.parent}",
                    len(ops),
                    (time.perf_counter() - started) * 1000,
                )
            return EndpointView(record)

    def detach(self, guest: GuestRef, ifname: str) -> list[EndpointView]:
        if ifname:
            records = [
                r
                for r in self.store.endpoints().values()
                if r.guest == guest and r.ifname == ifname
            ]
        else:
            records = [r for r in self.store.endpoints().values() if r.guest == guest]
        done: list[EndpointView] = []
        with self._locks.guest(guest.key):
            for record in sorted(records, key=lambda r: r.ifname):
                with self._claim(record.id):
                    self._detach_one(record)
                done.append(EndpointView(record))
        return done

    def _detach_one(self, record: EndpointRecord) -> None:
        if self.dhcp is not None and record.spec.dhcp is not None:
            self.dhcp.stop(record.id)
        # No macvlan is being made on an <if>.<vid> while we decide whether
        # to delete it (attaches hold the read side until recorded).
        vlan = record.spec.kind is LinkKind.MACVLAN and record.spec.vlan
        with (
            self._guest_scope(record) as handle,
            self._vlan_links.write() if vlan else nullcontext(),
        ):
            ovs, _ = self._bridge_context(record.spec.bridge)
            seen = self._observe_endpoint(record, handle, ovs, False)
            shared = any(
                r.id != record.id
                and r.spec.kind is LinkKind.MACVLAN
                and (r.parent, r.spec.vlan) == (record.parent, record.spec.vlan)
                for r in self.store.endpoints().values()
            )
            ops = plan.plan_detach(record, seen, self.store.agent_id, shared)
            self._apply(ops, handle, rollback=False, what=f"endpoint {record.id}")
        self.store.delete_endpoint(record.id)
        self._release_cluster(record)
        log.info("endpoint %s detached: %s %s", record.id, record.guest, record.ifname)

    def find(self, guest: GuestRef, ifname: str, any_ok: bool = False) -> EndpointRecord:
        """The endpoint of (guest, ifname); with ifname empty, the guest's only
        endpoint (``any_ok``: its first one, by name)."""
        mine = sorted(
            (r for r in self.store.endpoints().values() if r.guest == guest), key=lambda r: r.ifname
        )
        if ifname:
            mine = [r for r in mine if r.ifname == ifname]
        if mine and any_ok:
            return mine[0]
        if not mine:
            raise NotFound(
                f"no endpoint for {guest}" + (f" {ifname}" if ifname else ""),
                field="guest",
                hint="'netplumb ls' lists endpoints",
            )
        if len(mine) > 1:
            raise InvalidSpec(
                f"{guest} has {len(mine)} endpoints; say which with --ifname",
                field="ifname",
            )
        return mine[0]

    def get_endpoint(self, guest: GuestRef, ifname: str) -> EndpointView:
        return self._view(self.find(guest, ifname), self._host_link_names())

    def list_endpoints(self, bridge: str = "", guest: GuestRef | None = None) -> list[EndpointView]:
        names = self._host_link_names()
        out = []
        for r in sorted(self.store.endpoints().values(), key=lambda r: (r.guest.key, r.ifname)):
            if bridge and r.spec.bridge != bridge:
                continue
            if guest is not None and r.guest != guest:
                continue
            out.append(self._view(r, names))
        return out

    def _host_link_names(self) -> set[str]:
        return {name for name, _, _ in self.netlink.tagged_host_links()}

    def _view(self, record: EndpointRecord, host_links: set[str]) -> EndpointView:
        try:
            path = self._guest_path(record.guest)
        except DependencyUnavailable:
            return EndpointView(record, GUEST_MISSING, "Docker is not reachable")
        if path is None:
            return EndpointView(record, GUEST_MISSING, "the container is not running")
        ident = netns_ident(path)
        if ident is None:
            return EndpointView(
                record, GUEST_MISSING, "the guest's network namespace does not exist"
            )
        if _pid_reused(record, ident):
            return EndpointView(record, GUEST_MISSING, "the process has exited (its PID is reused)")
        if record.host_ifname and record.host_ifname not in host_links:
            return EndpointView(record, DEGRADED, f"host interface {record.host_ifname} is missing")
        return EndpointView(record)

    def add_route(self, guest: GuestRef, ifname: str, route: RouteSpec) -> EndpointView:
        with self._locks.guest(guest.key):
            record = self.find(guest, ifname)
            if route.family == 6 and 0 < record.mtu < spec.IPV6_MIN_MTU:
                raise InvalidSpec(
                    f"{guest} {record.ifname} has MTU {record.mtu}, below {spec.IPV6_MIN_MTU}: "
                    "it cannot carry IPv6 routes",
                    field="route",
                )
            current = plan.endpoint_routes(record)
            if any(
                r.destination == route.destination and r.metric == route.metric for r in current
            ):
                if route in current:
                    return EndpointView(record)  # already there: idempotent
                raise Conflict(
                    f"{guest} {record.ifname} already has a route to {route.destination} "
                    f"with metric {route.metric}",
                    field="route",
                    hint="delete it first, or use another metric",
                )
            updated = replace(record, extra_routes=(*record.extra_routes, route))
            return self._replumb(record, updated)

    def delete_route(self, guest: GuestRef, ifname: str, destination: str) -> EndpointView:
        with self._locks.guest(guest.key):
            record = self.find(guest, ifname)
            dests = {spec.destination(destination, "destination", 4)}
            if destination == "default":
                dests.add(spec.destination(destination, "destination", 6))
            spec_routes = tuple(r for r in record.spec.routes if r.destination not in dests)
            extra = tuple(r for r in record.extra_routes if r.destination not in dests)
            gateways = record.spec.gateways
            if destination == "default":
                gateways = ()
            updated = replace(
                record,
                spec=replace(record.spec, routes=spec_routes, gateways=gateways),
                extra_routes=extra,
            )
            if updated == record:
                return EndpointView(record)
            return self._replumb(record, updated)

    def _replumb(self, old: EndpointRecord, new: EndpointRecord) -> EndpointView:
        with self._guest_scope(old) as handle:
            if handle is None:
                raise PreconditionFailed(
                    f"the guest {old.guest} is not running; its routes cannot change now",
                    field="guest",
                )
            self._check_route_overlap(new)
            ops = self._plan_endpoint(new, handle)
            self._apply(ops, handle, rollback=True, what=f"endpoint {new.id}")
            self._store_or_rollback(lambda: self.store.put_endpoint(new), ops, handle)
        return EndpointView(new)

    # ------------------------------------------------------------ cluster

    def _claim_addresses(
        self, record: EndpointRecord, net: NetworkSpec
    ) -> tuple[EndpointRecord, tuple[IPAddress, ...]]:
        """Cluster networks: reserve the endpoint's static addresses in the
        network's subnet, or allocate one when it has none (and no DHCP);
        the network's gateway becomes the default route unless one was
        given. Returns the record and the addresses claimed."""
        if self.cluster is None:
            raise DependencyUnavailable(
                f"bridge {net.name} is cluster network, and this netplumbd runs without etcd",
                field="spec.bridge",
            )
        want = record.spec
        guest = str(want.guest)
        claimed: list[IPAddress] = []
        allocated: tuple[IPInterface, ...] = ()
        try:
            for a in want.addresses:
                if a.ip in net.subnet:
                    self.cluster.reserve(net, a.ip, record.id, guest, record.mac)
                    claimed.append(a.ip)
            if not any(a.ip in net.subnet for a in want.addresses) and want.dhcp is None:
                got = self.cluster.allocate(net, record.id, guest, record.mac)
                claimed.append(got.ip)
                allocated = (got,)
            if want.name:
                # A name given explicitly must be ours before anything is
                # built: a taken one refuses the attach, changing nothing.
                mine = [a for a in (*want.addresses, *allocated) if a.ip in net.subnet]
                self.cluster.publish(net.name, want.name, mine, record.id, strict=True)
        except BaseException:
            self.cluster.release(net.name, claimed, record.id, guest, record.mac)
            raise
        gateways: tuple[IPAddress, ...] = ()
        gw = net.gateway
        if (
            not want.gateways
            and gw is not None
            and any(a.version == gw.version for a in (*want.addresses, *allocated))
            and not self._guest_has_default(record, gw.version)
        ):
            gateways = (gw,)
        return (
            replace(record, allocated=allocated, net_gateways=gateways, name=want.name),
            tuple(claimed),
        )

    def _guest_has_default(self, record: EndpointRecord, version: int) -> bool:
        """Whether another endpoint of the guest already gives it a default
        route of that IP version (the network's gateway is then left out)."""
        return any(
            r.destination.prefixlen == 0 and r.destination.version == version
            for other in self.store.endpoints().values()
            if other.guest == record.guest and other.id != record.id
            for r in plan.endpoint_routes(other)
        )

    def _publish(self, record: EndpointRecord, net: NetworkSpec) -> None:
        """A container's name in the registry, once it is attached (a name
        given with --name was claimed before plumbing; a container whose name
        is taken elsewhere is attached without it)."""
        name = record.spec.name or record.guest_name
        if self.cluster is None or not name or not spec.DNS_LABEL_RE.fullmatch(name):
            return
        if record.spec.name and record.name == name:
            return  # claimed already
        addrs = _network_addresses(record, net)
        try:
            self.cluster.publish(net.name, name, addrs, record.id, strict=bool(record.spec.name))
        except DependencyUnavailable as e:
            log.warning("endpoint %s: name %s not published now: %s", record.id, name, e)
            return
        if record.name != name:
            current = self.store.endpoints().get(record.id)
            if current is not None:
                self.store.put_endpoint(replace(current, name=name))

    def _release_cluster(self, record: EndpointRecord) -> None:
        bridge = self.store.bridges().get(record.spec.bridge)
        net = bridge.network if bridge is not None else None
        if net is None or self.cluster is None:
            return
        addrs = [a.ip for a in _network_addresses(record, net)]
        self.cluster.release(net.name, addrs, record.id, str(record.guest), record.mac)
        if record.name:
            self.cluster.unpublish(net.name, record.name, record.id)

    def sync_cluster_peers(self, wanted: dict[IPAddress, str]) -> None:
        """Make the peers that came from the cluster's host registry exactly
        ``wanted``; static peers stay as they are. One re-plan of every
        overlay."""
        with self._peer_lock, self._memoized():
            peers = self.store.peers()
            changed: list[str] = []
            for key, p in peers.items():
                if p.source == cluster_keys.SOURCE_CLUSTER and p.address not in wanted:
                    self.store.delete_peer(key)
                    changed.append(f"-{key}")
            for ip, name in wanted.items():
                existing = peers.get(str(ip))
                if existing is not None and existing.source != cluster_keys.SOURCE_CLUSTER:
                    continue  # added by hand: kept as it is
                rec = PeerRecord(address=ip, name=name, source=cluster_keys.SOURCE_CLUSTER)
                if existing != rec:
                    self.store.put_peer(rec)
                    changed.append(f"+{ip}")
            if not changed:
                return
            log.info("cluster: peers changed: %s", " ".join(changed))
            try:
                self._converge_overlays(rollback=False)
            except NetplumbError as e:
                log.error("cluster: re-planning the overlays failed: %s", e)

    def sync_networks(self, networks: dict[str, NetworkSpec]) -> None:
        """Build a bridge for every cluster network; forget the bridges of
        networks that are gone (once no endpoint uses them)."""
        for name, net in sorted(networks.items()):
            try:
                self.ensure_network(net)
            except NetplumbError as e:
                log.error("cluster: network %s cannot be built here: %s", name, e)
        for name, record in sorted(self.store.bridges().items()):
            if record.network is None or name in networks:
                continue
            try:
                self.delete_bridge(name)
                log.info("cluster: network %s deleted: its bridge is gone", name)
            except PreconditionFailed as e:
                log.warning("cluster: network %s deleted, bridge kept meanwhile: %s", name, e)
            except NetplumbError as e:
                log.error("cluster: removing the bridge of network %s failed: %s", name, e)

    def ensure_network(self, net: NetworkSpec) -> BridgeView:
        want = replace(cluster_keys.bridge_for(net), mac=cluster_keys.network_mac(net.name))
        if want.kind is BridgeKind.LINUX:
            overlay.check_linux_tunnel(want, self.features)
        with self._locks.bridge(want.name).write():
            existing = self.store.bridges().get(want.name)
            if existing is not None and existing.network is None:
                raise Conflict(
                    f"bridge {want.name} exists here and is not network {net.name}'s",
                    field="spec.name",
                    hint="delete or rename the local bridge",
                )
            if existing is not None and existing.spec != want:
                users = [e for e in self.store.endpoints().values() if e.spec.bridge == net.name]
                if users:
                    raise Conflict(
                        f"network {net.name} changed while {len(users)} endpoint(s) use it here",
                        hint="detach them; the bridge is rebuilt then",
                    )
            for other in self.store.bridges().values():
                if other.spec.vni == want.vni and other.spec.name != want.name:
                    raise Conflict(
                        f"VNI {want.vni} is already carried by bridge {other.spec.name}",
                        field="spec.vni",
                    )
            record, ops = self._converge_bridge(want, existing, rollback=existing is None)
            record = replace(record, network=net)
            if existing != record:
                self._store_or_rollback(lambda: self.store.put_bridge(record), ops, None)
                log.info("cluster: network %s built here as bridge %s", net.name, want.name)
                if self._remote_ready:
                    # recorded now: the known endpoints can be programmed
                    if want.kind is BridgeKind.LINUX:
                        self._apply(self._plan_overlay(want), None, rollback=False, what=want.name)
                    self._program_known(want)
            return self._bridge_view(record)

    def _need_cluster(self) -> Cluster:
        if self.cluster is None:
            raise PreconditionFailed(
                "networks are defined in cluster mode, and this netplumbd runs standalone",
                hint="start netplumbd with --etcd URL",
            )
        return self.cluster

    def create_network(self, net: NetworkSpec) -> tuple[NetworkSpec, int]:
        """Define a network cluster-wide and build it here at once (every
        other host builds it when its watch sees it)."""
        c = self._need_cluster()
        net, _ = c.create_network(net)
        try:
            self.ensure_network(net)
        except NetplumbError as e:
            log.error("cluster: network %s defined, but not built here: %s", net.name, e)
        return net, c.allocated_count(net.name)

    def delete_network(self, name: str) -> bool:
        c = self._need_cluster()
        users = [e for e in self.store.endpoints().values() if e.spec.bridge == name]
        if users:  # before etcd is touched: nothing half-deleted
            raise PreconditionFailed(
                f"network {name} still has {len(users)} endpoint(s) on this host",
                field="name",
                hint="detach them first ('netplumb ls' lists them)",
            )
        existed = c.delete_network(name)
        record = self.store.bridges().get(name)
        if record is not None and record.network is not None:
            self.delete_bridge(name)
        return existed

    def list_networks(self) -> list[tuple[NetworkSpec, int]]:
        c = self._need_cluster()
        return [(n, c.allocated_count(n.name)) for n in c.network_list()]

    # ---------------------------------------- macvlan / phys, rules, tc, dhcp

    def _resolve_parent(self, want: EndpointSpec, eid: str) -> tuple[str, str, int]:
        """(name, MAC, MTU) of a macvlan or phys endpoint's host interface,
        ``mac:MAC`` resolved; ("", "", 0) for other kinds."""
        if want.kind not in (LinkKind.MACVLAN, LinkKind.PHYS):
            return "", "", 0
        name = want.parent
        if name.startswith("mac:"):
            name = self.netlink.link_name_by_mac(name[4:])
            if not name:
                raise NotFound(
                    f"no host interface has MAC {want.parent[4:]}",
                    field="spec.parent",
                    hint="'ip link' lists the host's interfaces and their MACs",
                )
        link = self.netlink.observe_host_link(name)
        if link is None:
            raise NotFound(
                f"host interface {name} does not exist",
                field="spec.parent",
                hint="'ip link' lists the host's interfaces",
            )
        if naming.is_ours(link.alias):
            raise Conflict(
                f"host interface {name} is one netplumb made (a bridge, veth or tunnel)",
                field="spec.parent",
                hint="give a physical or other interface of the host",
            )
        if link.kind in ("bridge", "openvswitch"):
            raise Conflict(
                f"host interface {name} is a bridge",
                field="spec.parent",
                hint=f"attach to it with a veth pair instead: netplumb attach {name} ...",
            )
        if want.kind is LinkKind.PHYS:
            for other in self.store.endpoints().values():
                if other.id != eid and other.spec.kind is LinkKind.PHYS and other.parent == name:
                    raise Conflict(
                        f"host interface {name} is already in {other.guest} as {other.ifname}",
                        field="spec.parent",
                    )
        return name, link.mac, link.mtu

    def guest_command(
        self, guest: GuestRef, ifname: str, tool: str, args: tuple[str, ...]
    ) -> EndpointView:
        """``pipework rule`` / ``pipework tc``: apply inside the guest and
        record it with an endpoint, so it comes back after a restart."""
        with self._locks.guest(guest.key):
            if tool == "rule":
                verb, rule = spec.ip_rule(args)
                record = self._record_for(guest, ifname, rule.iif or rule.oif)
                if verb == "add":
                    if rule in record.rules:
                        return EndpointView(record)
                    updated = replace(record, rules=(*record.rules, rule))
                    ops: tuple[Op, ...] = (AddRule(rule),)
                else:
                    updated = replace(record, rules=tuple(r for r in record.rules if r != rule))
                    ops = (DelRule(rule),)
                with self._guest_scope(record) as handle:
                    if handle is None:
                        raise PreconditionFailed(f"the guest {guest} is not running", field="guest")
                    self._apply(ops, handle, rollback=True, what=f"endpoint {record.id}")
                    if updated != record:
                        self._store_or_rollback(
                            lambda: self.store.put_endpoint(updated), ops, handle
                        )
                return EndpointView(updated)
            if tool != "tc":
                raise InvalidSpec(f"tool {tool!r} is not rule or tc", field="tool")
            verb, dev, words = spec.tc_command(args)
            record = self._record_for(guest, ifname, dev)
            if self.tc is None:
                raise DependencyUnavailable("this netplumbd cannot run tc", field="tool")
            if verb == "add":
                if words in record.tc:
                    return EndpointView(record)
                updated = replace(record, tc=(*record.tc, words))
            else:
                target = words[2:]  # after "OBJECT VERB"
                updated = replace(
                    record,
                    tc=tuple(
                        t for t in record.tc if t[0] != words[0] or t[2:][: len(target)] != target
                    ),
                )
            with self._guest_scope(record) as handle:
                if handle is None:
                    raise PreconditionFailed(f"the guest {guest} is not running", field="guest")
                self.tc(handle, words)
                if updated != record:
                    self.store.put_endpoint(updated)
            return EndpointView(updated)

    def _record_for(self, guest: GuestRef, ifname: str, dev: str) -> EndpointRecord:
        """The endpoint a guest-wide rule or tc command is recorded with: the
        one named, else the one its ``dev`` names, else the guest's first."""
        if ifname:
            return self.find(guest, ifname)
        try:
            return self.find(guest, dev, any_ok=True) if dev else self.find(guest, "", any_ok=True)
        except NotFound:
            return self.find(guest, "", any_ok=True)

    def _after_plumb(
        self, record: EndpointRecord, handle: NetnsHandle, ops: tuple[Op, ...] | list[Op]
    ) -> None:
        """After an endpoint was plumbed: re-run its tc commands if its guest
        interface is new, and (re)start its DHCP client when the interface
        is new or a kept client is not running."""
        created = any(
            isinstance(op, CreateVeth | CreateMacvlan | CreateDummy | MoveToGuest) for op in ops
        )
        if created and record.tc and self.tc is not None:
            for words in record.tc:
                try:
                    self.tc(handle, words)
                except NetplumbError as e:
                    log.error(
                        "endpoint %s: re-applying 'tc %s' failed: %s", record.id, " ".join(words), e
                    )
        d = record.spec.dhcp
        if d is None:
            return
        if self.dhcp is None:
            raise DependencyUnavailable(
                "this netplumbd runs without DHCP support", field="spec.dhcp"
            )
        if not created and (not d.keep or self.dhcp.running(record.id)):
            return
        self.dhcp.start(
            record.id,
            handle,
            record.ifname,
            d,
            record.guest_name or record.guest.value.rsplit("/", 1)[-1],
            lambda: self.netlink.has_ipv4(handle, record.ifname),
        )

    def _dhcp_restart(self, eid: str) -> None:
        """A kept DHCP client died: re-converge its endpoint, which starts
        it again if the guest is still there."""
        record = self.store.endpoints().get(eid)
        if record is None or record.spec.dhcp is None:
            return
        with self._locks.guest(record.guest.key), self._claim(eid):
            current = self.store.endpoints().get(eid)
            if current is not None:
                self._converge_endpoint(current, repair=True)

    # ------------------------------------------------- check and reconcile

    def check(self) -> list[Drift]:
        """Drift, without changing anything; what a reconcile could not
        repair (a foreign object squatting a name) is drift too."""
        drift, failed, _ = self._converge(repair=False)
        return drift + failed

    def reconcile(self, at_start: bool = False) -> tuple[list[Drift], list[Drift], list[Drift]]:
        """Repair every drift. ``at_start``: the daemon's start-up reconcile,
        before it serves; host links are then read in one dump (nothing else
        changes them meanwhile), which is what makes thousands of endpoints
        quick."""
        with self.netlink.host_snapshot() if at_start else nullcontext():
            drift, failed, collected = self._converge(repair=True)
        self._converged("reconcile", len(drift), len(failed), len(collected))
        return drift, failed, collected

    def _converged(self, cause: str, repaired: int, failed: int, collected: int) -> None:
        for observer in self.on_converged:
            try:
                observer(cause, repaired, failed, collected)
            except Exception:
                log.exception("convergence observer failed")

    def _converge(self, repair: bool) -> tuple[list[Drift], list[Drift], list[Drift]]:
        drift: list[Drift] = []
        failed: list[Drift] = []
        collected: list[Drift] = []
        for name, bridge in sorted(self.store.bridges().items()):
            with self._locks.bridge(name).write():
                try:
                    _, ops = self._converge_bridge(
                        bridge.spec, bridge, rollback=False, apply=repair
                    )
                    if ops:
                        drift.append(
                            Drift("bridge", name, "bridge differs from its spec", _strs(ops))
                        )
                except NetplumbError as e:
                    failed.append(Drift("bridge", name, str(e)))
        for stored in sorted(self.store.endpoints().values(), key=lambda r: r.id):
            with self._locks.guest(stored.guest.key), self._claim(stored.id):
                current = self.store.endpoints().get(stored.id)
                if current is None:
                    continue  # detached meanwhile
                try:
                    found = self._converge_endpoint(current, repair)
                    if found is not None:
                        drift.append(found)
                except NetplumbError as e:
                    failed.append(Drift("endpoint", current.id, str(e)))
        # In-flight first, records second: an attach that finishes in between
        # is then in one set or the other, never in neither.
        with self._inflight_mu:
            busy = set(self._inflight)
        known = {r.id for r in self.store.endpoints().values()}
        for name, kind, alias in self.netlink.tagged_host_links():
            parsed = naming.parse_endpoint_alias(alias)
            if parsed is None or kind != "veth":
                continue
            eid, owner = parsed
            if owner != self.store.agent_id or eid in known or eid in busy:
                continue
            d = Drift(
                "orphan", name, f"veth {name} is tagged for endpoint {eid}, which has no record"
            )
            if repair:
                with self._claim_if_idle(eid) as idle:
                    if not idle or eid in self.store.endpoints():
                        continue  # an attach of it started or finished meanwhile
                    self._apply([DeleteLink(Where.HOST, name)], None, rollback=False, what=name)
                log.info("garbage-collected orphan veth %s (endpoint %s)", name, eid)
                collected.append(d)
            else:
                drift.append(replace(d, repair=(f"delete link {name} (host)",)))
        for d, ops in self._orphans(known | busy):
            if repair:
                try:
                    # A bridge being created holds its write lock until it is
                    # recorded: take it, and look again.
                    with self._locks.bridge(d.name).write():
                        if d.name in self.store.bridges():
                            continue
                        self._apply(ops, None, rollback=False, what=d.name)
                    log.info("garbage-collected %s %s", d.object, d.name)
                    collected.append(d)
                except NetplumbError as e:
                    failed.append(replace(d, detail=f"{d.detail}; removing it failed: {e}"))
            else:
                drift.append(replace(d, repair=_strs(ops)))
        if repair and self.cluster is not None and self.cluster.up:

            def alive() -> set[str]:
                with self._inflight_mu:
                    working = set(self._inflight)
                return working | set(self.store.endpoints())

            try:
                for key in self.cluster.collect(alive):
                    collected.append(Drift("orphan", key, "held in etcd for no endpoint"))
            except NetplumbError as e:
                failed.append(Drift("orphan", "etcd", f"collecting leftovers failed: {e}"))
        return drift, failed, collected

    def _orphans(self, keep_endpoints: set[str]) -> list[tuple[Drift, tuple[Op, ...]]]:
        """Objects tagged as this agent's that no record wants: OVS bridges
        and ports, and VXLAN devices of bridges that are gone."""
        out: list[tuple[Drift, tuple[Op, ...]]] = []
        agent = self.store.agent_id
        bridges = self.store.bridges()
        peers = set(self.store.peers())
        vnis = {
            b.spec.vni for b in bridges.values() if b.spec.vni and b.spec.kind is BridgeKind.LINUX
        }
        for name, kind, alias in self.netlink.tagged_host_links():
            if kind == "bridge" and alias == naming.bridge_alias(agent) and name not in bridges:
                # A crash between creating a bridge and recording it.
                out.append(
                    (
                        Drift(
                            "orphan",
                            name,
                            f"bridge {name} is tagged as this agent's but has no record",
                        ),
                        (DeleteLink(Where.HOST, name),),
                    )
                )
                continue
            if kind == "vxlan" and alias == overlay.vxlan_alias(agent):
                vni = name[4:]
                if not (vni.isdigit() and int(vni) in vnis):
                    out.append(
                        (
                            Drift("orphan", name, f"VXLAN device {name} belongs to no bridge"),
                            (DeleteLink(Where.HOST, name),),
                        )
                    )
        if self.ovs is None or not self.ovs.connected:
            return out
        for br in self.ovs.bridge_names():
            row = self.ovs.observe_bridge(br)
            if row is not None and row.owner == agent and br not in bridges:
                out.append(
                    (Drift("orphan", br, f"OVS bridge {br} has no record"), (DelOvsBridge(br),))
                )
        for port in self.ovs.owned_ports(agent):
            ids = port.external_ids
            eid = ids.get(overlay.ENDPOINT_ID)
            peer = ids.get(overlay.PEER_ID)
            bridge = bridges.get(ids.get(overlay.BRIDGE_ID, ""))
            if eid is not None and eid not in keep_endpoints:
                why = f"OVS port {port.name} is for endpoint {eid}, which has no record"
            elif peer is not None and (peer not in peers or bridge is None or not bridge.spec.vni):
                why = f"tunnel {port.name} to {peer} is for no current peer or overlay bridge"
            else:
                continue
            out.append((Drift("orphan", port.name, why), (DelOvsPort(port.name),)))
        return out

    def _converge_endpoint(self, record: EndpointRecord, repair: bool) -> Drift | None:
        with self._guest_scope(record) as handle:
            if handle is None:
                return None  # guest not running: nothing can be plumbed, nothing drifts
            want = self._desired(record)
            seen = self._observe_endpoint(record, handle, want.ovs, want.tx_checksum_off)
            ops = plan.plan_endpoint(want, seen, self.features)
            d = None
            if ops:
                d = Drift("endpoint", record.id, _describe(record, seen), _strs(ops))
            if repair:
                if ops:
                    self._apply(ops, handle, rollback=False, what=f"endpoint {record.id}")
                    if record.netns_id != handle.ident:
                        self.store.put_endpoint(replace(record, netns_id=handle.ident))
                    log.info("endpoint %s repaired: %s", record.id, "; ".join(_strs(ops)))
                self._after_plumb(record, handle, ops)
            return d

    # ------------------------------------------------------------ helpers

    def _plumb(self, record: EndpointRecord, handle: NetnsHandle, fresh: bool) -> tuple[Op, ...]:
        """Observe, plan and apply one endpoint; returns the ops applied.

        A new endpoint is planned optimistically on an empty host (saving two
        netlink lookups): veth creation is atomic and fails with EEXIST,
        before changing anything, if either name is taken -- and only then
        is the host observed and planned against properly (a stale end of
        ours is replaced, a foreign one is a conflict).
        """
        what = f"endpoint {record.id}"
        if fresh and record.spec.kind is LinkKind.VETH:
            want = self._desired(record)
            ops = plan.plan_endpoint(want, ObservedEndpoint(None, None), self.features)
            try:
                self._apply(ops, handle, rollback=True, what=what)
                return ops
            except Conflict as e:
                if getattr(e, "completed", None) != []:
                    raise
        ops = self._plan_endpoint(record, handle)
        self._apply(ops, handle, rollback=fresh, what=what)
        return ops

    def _plan_endpoint(self, record: EndpointRecord, handle: NetnsHandle) -> tuple[Op, ...]:
        want = self._desired(record)
        seen = self._observe_endpoint(record, handle, want.ovs, want.tx_checksum_off)
        return plan.plan_endpoint(want, seen, self.features)

    def _bridge_context(self, bridge: str) -> tuple[bool, bool]:
        """(on an OVS bridge, on a userspace OVS datapath)."""
        record = self.store.bridges().get(bridge)
        if record is None or record.spec.kind is not BridgeKind.OVS:
            return False, False
        row = self._need_ovs().observe_bridge(bridge)
        return True, row is not None and row.datapath_type == "netdev"

    def _desired(self, record: EndpointRecord) -> DesiredEndpoint:
        ovs, userspace = self._bridge_context(record.spec.bridge)
        return plan.desired_endpoint(record, self.store.agent_id, ovs, userspace)

    def _observe_endpoint(
        self, record: EndpointRecord, handle: NetnsHandle | None, ovs: bool, tx: bool
    ) -> ObservedEndpoint:
        seen = self.netlink.observe_endpoint(
            record.host_ifname, record.ifname, handle, "" if ovs else record.spec.bridge
        )
        kind = record.spec.kind
        if kind in (LinkKind.MACVLAN, LinkKind.PHYS) and (
            seen.guest is None or not seen.guest.alias
        ):
            want = plan.desired_endpoint(record, self.store.agent_id)
            phys = kind is LinkKind.PHYS
            mac = record.parent_mac if phys and not want.vlan_base else ""
            parent = self.netlink.observe_host_link(want.parent, mac, want.alias if phys else "")
            base = None
            if parent is None and want.vlan_base:
                base = self.netlink.observe_host_link(want.vlan_base, record.parent_mac)
            seen = replace(seen, parent=parent, vlan_base=base)
        if ovs:
            port = self._need_ovs().observe_port(record.host_ifname)
            csum = None
            if tx and handle is not None and seen.guest is not None:
                csum = self.netlink.tx_checksum(handle, record.ifname)
            seen = replace(seen, ovs_port=port, guest_tx_checksum=csum)
        return seen

    @contextmanager
    def _guest_scope(self, record: EndpointRecord) -> Iterator[NetnsHandle | None]:
        """The guest's namespace, open and pinned, with one netlink session
        shared by the calls inside; None when the guest is gone."""
        handle = self._open_if_same(record)
        if handle is None:
            yield None
            return
        try:
            with self.netlink.scope(handle):
                yield handle
        finally:
            handle.close()

    def _open_if_same(self, record: EndpointRecord) -> NetnsHandle | None:
        """Open the guest's namespace, or None when it is gone -- or, for a
        pid guest, when the PID now belongs to another namespace."""
        path = self._guest_path(record.guest)
        if path is None:
            return None
        try:
            handle = open_netns(path)
        except (NotFound, InvalidSpec):
            return None
        if _pid_reused(record, handle.ident):
            handle.close()
            return None
        return handle

    def _apply(
        self,
        ops: tuple[Op, ...] | list[Op],
        handle: NetnsHandle | None,
        *,
        rollback: bool,
        what: str,
    ) -> None:
        """Execute ops in order: netlink ops through the netlink driver, runs
        of OVS ops as one OVSDB transaction each. On failure, with
        ``rollback``, undo what completed, newest first."""
        if not ops:
            return
        try:
            self._execute(list(ops), handle)
        except NetplumbError as e:
            completed: list[Op] = getattr(e, "completed", [])
            if rollback and completed:
                self._undo(completed, handle, what)
                log.warning("%s: failed at '%s'; rolled back %d op(s)", what, e, len(completed))
            raise

    def _execute(self, ops: list[Op], handle: NetnsHandle | None) -> None:
        done: list[Op] = []
        i = 0
        while i < len(ops):
            is_ovs = isinstance(ops[i], OvsOp)
            j = i
            while j < len(ops) and isinstance(ops[j], OvsOp) == is_ovs:
                j += 1
            run = ops[i:j]
            t0 = time.perf_counter()
            try:
                if is_ovs:
                    self.netlink.touched(run)  # OVS makes and removes host links too
                    self._need_ovs().apply(run, self.store.agent_id)
                else:
                    self.netlink.apply(run, handle)
            except NetplumbError as e:
                partial = [] if is_ovs else list(getattr(e, "completed", []))
                e.completed = done + partial  # type: ignore[attr-defined]
                raise
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%d %s op(s) in %.1f ms: %s",
                    len(run),
                    "OVSDB" if is_ovs else "netlink",
                    (time.perf_counter() - t0) * 1000,
                    "; ".join(map(str, run)),
                )
            done.extend(run)
            i = j

    def _undo(
        self, completed: list[Op] | tuple[Op, ...], handle: NetnsHandle | None, what: str
    ) -> None:
        undo_ops = [u for u in (undo(op) for op in reversed(completed)) if u is not None]
        failures: list[tuple[Op, str]] = []
        for op in undo_ops:
            if isinstance(op, OvsOp):
                try:
                    self._need_ovs().apply([op], self.store.agent_id)
                except NetplumbError as e:
                    failures.append((op, str(e)))
            else:
                failures.extend(self.netlink.apply_quietly([op], handle))
        for op, why in failures:
            log.error("%s: rollback step '%s' failed: %s", what, op, why)

    def _store_or_rollback(
        self, write: object, ops: tuple[Op, ...], handle: NetnsHandle | None
    ) -> None:
        try:
            write()  # type: ignore[operator]
        except OSError as e:
            self._undo(ops, handle, "store write")
            raise PreconditionFailed(
                f"cannot write the state file: {e.strerror}; the change was rolled back",
                hint="check the state directory's disk space and permissions",
            ) from e

    @contextmanager
    def _claim_if_idle(self, eid: str) -> Iterator[bool]:
        """Claim an endpoint id for garbage collection only if no call is
        working on it; yields whether the claim was made."""
        with self._inflight_mu:
            if eid in self._inflight:
                idle = False
            else:
                self._inflight.add(eid)
                idle = True
        try:
            yield idle
        finally:
            if idle:
                with self._inflight_mu:
                    self._inflight.discard(eid)

    @contextmanager
    def _claim(self, eid: str) -> Iterator[None]:
        """Mark an endpoint in flight so garbage collection leaves it alone."""
        with self._inflight_mu:
            self._inflight.add(eid)
        try:
            yield
        finally:
            with self._inflight_mu:
                self._inflight.discard(eid)

    def status_counts(self) -> dict[str, int]:
        eps = self.store.endpoints()
        names = self._host_link_names()
        not_ready = sum(1 for r in eps.values() if self._view(r, names).state != READY)
        return {
            "bridges": len(self.store.bridges()),
            "endpoints": len(eps),
            "endpoints_not_ready": not_ready,
            "peers": len(self.store.peers()),
        }


def _pid_reused(record: EndpointRecord, ident: tuple[int, int]) -> bool:
    """A pid guest whose PID now leads to another namespace: the process it
    named has exited and the number was reused. Never re-plumbed there."""
    return (
        record.guest.kind is GuestKind.PID
        and record.netns_id is not None
        and ident != record.netns_id
    )


def _describe(record: EndpointRecord, seen: ObservedEndpoint) -> str:
    if seen.host is None and record.host_ifname:
        return f"{record.guest} {record.ifname}: host veth {record.host_ifname} is missing"
    if seen.guest is None:
        return f"{record.guest} {record.ifname}: interface missing in the guest"
    return f"{record.guest} {record.ifname}: differs from its spec"


def _network_addresses(record: EndpointRecord, net: NetworkSpec) -> list[IPInterface]:
    """The endpoint's addresses in the cluster network's subnet (given or
    allocated): what it holds in etcd and publishes under its name."""
    return [a for a in (*record.spec.addresses, *record.allocated) if a.ip in net.subnet]


def _has_ipv6(want: EndpointSpec) -> bool:
    return any(a.version == 6 for a in want.addresses) or any(r.family == 6 for r in want.routes)


def _strs(ops: tuple[Op, ...] | list[Op]) -> tuple[str, ...]:
    return tuple(str(op) for op in ops)


def _differences(a: object, b: object) -> str:
    fields = [f for f in getattr(a, "__slots__", ()) if getattr(a, f) != getattr(b, f)]
    return "differs in " + ", ".join(fields) if fields else "differs"
