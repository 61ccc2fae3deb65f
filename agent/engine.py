"""The engine: every verb is the same loop -- observe, plan, apply, record.

It owns the locks (one per guest, and a reader/writer lock per bridge so
attaches to one bridge run in parallel while a bridge delete excludes them),
the rollback of half-done attaches, and the order "plumb, then record": the
store never holds an endpoint that was not fully built, and a crash between
the two leaves only a tagged orphan that the next reconcile collects.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

from .core import naming, plan, spec
from .core.model import (
    BridgeKind,
    BridgeRecord,
    BridgeSpec,
    EndpointRecord,
    EndpointSpec,
    GuestKind,
    GuestRef,
    HostFeatures,
    ObservedEndpoint,
    RouteSpec,
)
from .core.ops import Op, undo
from .drivers.netlink import NetlinkDriver
from .drivers.netns import NetnsHandle, host_ident, netns_ident, open_netns
from .errors import (
    Conflict,
    InvalidSpec,
    NetplumbError,
    NotFound,
    PreconditionFailed,
    Unimplemented,
)
from .store import Store

log = logging.getLogger("netplumb.engine")

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
    """The namespace file of a guest."""
    if guest.kind is GuestKind.NETNS:
        return f"/run/netns/{guest.value}"
    if guest.kind is GuestKind.PID:
        return f"/proc/{guest.value}/ns/net"
    if guest.kind is GuestKind.PATH:
        return guest.value
    raise Unimplemented(
        "Docker guests are not implemented in this version",
        field="spec.guest",
        hint="give the container's namespace as pid:PID (docker inspect -f '{{.State.Pid}}')",
    )


class Engine:
    def __init__(self, store: Store, netlink: NetlinkDriver) -> None:
        self.store = store
        self.netlink = netlink
        self._locks = _Locks()
        self._inflight: set[str] = set()
        self._inflight_mu = threading.Lock()
        self.started = time.time()

    @property
    def features(self) -> HostFeatures:
        return self.netlink.features()

    # ------------------------------------------------------------ bridges

    def create_bridge(self, want: BridgeSpec) -> BridgeView:
        if want.kind is BridgeKind.OVS:
            raise Unimplemented(
                "OVS bridges are not implemented in this version",
                field="spec.kind",
                hint="use a Linux bridge (--kind linux)",
            )
        if want.vni:
            raise Unimplemented(
                "overlay bridges (--vni) are not implemented in this version", field="spec.vni"
            )
        with self._locks.bridge(want.name).write():
            existing = self.store.bridges().get(want.name)
            if existing is not None and existing.spec != want:
                raise Conflict(
                    f"bridge {want.name} exists with a different spec "
                    f"({_differences(existing.spec, want)})",
                    field="spec",
                    hint=f"delete it first with 'netplumb bridge del {want.name}'",
                )
            seen = self.netlink.observe_bridge(want.name)
            ops, owned = plan.plan_bridge(want, seen, existing, self.store.agent_id)
            if existing is not None:
                owned = existing.owned
            foreign = () if owned else tuple(a for a in seen.addresses if a in want.addresses)
            if existing is not None:
                foreign = existing.foreign_addresses
            self._apply(ops, None, rollback=existing is None, what=f"bridge {want.name}")
            record = BridgeRecord(spec=want, owned=owned, foreign_addresses=foreign)
            if existing != record:
                self._store_or_rollback(lambda: self.store.put_bridge(record), ops, None)
                log.info(
                    "bridge %s %s%s",
                    want.name,
                    "created" if owned else "adopted",
                    f" ({'; '.join(map(str, ops))})" if ops else "",
                )
            return self._bridge_view(record)

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
            seen = self.netlink.observe_bridge(name)
            ops = plan.plan_bridge_delete(record, seen, self.store.agent_id)
            self._apply(ops, None, rollback=False, what=f"bridge {name}")
            self.store.delete_bridge(name)
            deleted = any(type(op).__name__ == "DeleteLink" for op in ops)
            log.info("bridge %s %s", name, "deleted" if deleted else "forgotten (not ours)")
            return True, deleted

    def list_bridges(self) -> list[BridgeView]:
        return [self._bridge_view(r) for _, r in sorted(self.store.bridges().items())]

    def _bridge_view(self, record: BridgeRecord) -> BridgeView:
        seen = self.netlink.observe_bridge(record.spec.name)
        count = sum(1 for e in self.store.endpoints().values() if e.spec.bridge == record.spec.name)
        return BridgeView(record=record, present=seen.exists, mtu=seen.mtu, endpoint_count=count)

    def _bridge_mtu(self, name: str) -> int:
        return self.netlink.observe_bridge(name, addresses=False).mtu or 1500

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
        if seen.exists and seen.is_bridge:
            # An existing Linux bridge (pipework's bri0): adopt it, never own it.
            record = BridgeRecord(spec=BridgeSpec(name=name), owned=False)
            self.store.put_bridge(record)
            log.info("bridge %s adopted for an attach (netplumb will never delete it)", name)
            return record
        raise NotFound(
            f"bridge {name} does not exist",
            field="spec.bridge",
            hint=f"create it first: netplumb bridge add {name}",
        )

    # ---------------------------------------------------------- endpoints

    def attach(self, want: EndpointSpec) -> EndpointView:
        started = time.perf_counter()
        eid = naming.endpoint_id(want.guest, want.ifname)
        with self._locks.guest(want.guest.key), self._claim(eid):
            bridge = self._bridge_for_attach(want.bridge)
            with self._locks.bridge(want.bridge).read(), ExitStack() as stack:
                if bridge.spec.kind is BridgeKind.OVS:  # pragma: no cover - not creatable yet
                    raise Unimplemented("endpoints on OVS bridges are not implemented")
                plan.check_endpoint_features(want.vlan, self.features)
                existing = self.store.endpoints().get(eid)
                if existing is not None and existing.spec != want:
                    raise Conflict(
                        f"{want.guest} {want.ifname} is already attached with a different spec "
                        f"({_differences(existing.spec, want)})",
                        field="spec",
                        hint=f"detach it first: netplumb detach {want.guest} --ifname {want.ifname}",
                    )
                host_ifname = want.host_ifname or naming.host_ifname(eid)
                for other in self.store.endpoints().values():
                    if other.id != eid and other.host_ifname == host_ifname:
                        raise Conflict(
                            f"host interface name {host_ifname} is used by the endpoint of "
                            f"{other.guest} {other.ifname}",
                            field="spec.host_ifname",
                        )
                handle = open_netns(guest_path(want.guest), "spec.guest")
                stack.callback(handle.close)
                if handle.ident == host_ident():
                    raise InvalidSpec(
                        f"{want.guest} is the host's own network namespace",
                        field="spec.guest",
                        hint="name the guest's namespace (netns:NAME, or pid:PID of a process in it)",
                    )
                stack.enter_context(self.netlink.scope(handle))
                if existing is None:
                    mtu = want.mtu or self._bridge_mtu(want.bridge)
                    if mtu < spec.IPV6_MIN_MTU and _has_ipv6(want):
                        raise InvalidSpec(
                            f"bridge {want.bridge} has MTU {mtu}, below {spec.IPV6_MIN_MTU}, "
                            "the minimum for IPv6",
                            field="spec.mtu",
                            hint="give --mtu 1280 or more, or raise the bridge's MTU",
                        )
                    record = EndpointRecord(
                        spec=want,
                        id=eid,
                        host_ifname=host_ifname,
                        mac=want.mac or naming.stable_mac(eid),
                        mtu=mtu,
                        netns_id=handle.ident,
                        netns_path=handle.path,
                    )
                else:
                    record = replace(existing, netns_id=handle.ident, netns_path=handle.path)
                self._check_route_overlap(record)
                ops = self._plumb(record, handle, fresh=existing is None)
                if record != existing:
                    self._store_or_rollback(lambda: self.store.put_endpoint(record), ops, handle)
            if ops:
                log.info(
                    "endpoint %s attached: %s %s on bridge %s (%d ops, %.1f ms)",
                    eid,
                    want.guest,
                    want.ifname,
                    want.bridge,
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
        with self._guest_scope(record) as handle:
            seen = self.netlink.observe_endpoint(record.host_ifname, record.ifname, handle)
            ops = plan.plan_detach(record, seen, self.store.agent_id)
            self._apply(ops, handle, rollback=False, what=f"endpoint {record.id}")
        self.store.delete_endpoint(record.id)
        log.info("endpoint %s detached: %s %s", record.id, record.guest, record.ifname)

    def find(self, guest: GuestRef, ifname: str) -> EndpointRecord:
        """The endpoint of (guest, ifname); with ifname empty, the guest's only
        endpoint."""
        mine = [r for r in self.store.endpoints().values() if r.guest == guest]
        if ifname:
            mine = [r for r in mine if r.ifname == ifname]
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
        ident = netns_ident(guest_path(record.guest))
        if ident is None:
            return EndpointView(
                record, GUEST_MISSING, "the guest's network namespace does not exist"
            )
        if record.guest.kind is GuestKind.PID and ident != record.netns_id:
            return EndpointView(record, GUEST_MISSING, "the process has exited (its PID is reused)")
        if record.host_ifname not in host_links:
            return EndpointView(record, DEGRADED, f"host interface {record.host_ifname} is missing")
        return EndpointView(record)

    def add_route(self, guest: GuestRef, ifname: str, route: RouteSpec) -> EndpointView:
        with self._locks.guest(guest.key):
            record = self.find(guest, ifname)
            if route.family == 6 and record.mtu < spec.IPV6_MIN_MTU:
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

    # ------------------------------------------------- check and reconcile

    def check(self) -> list[Drift]:
        return self._converge(repair=False)[0]

    def reconcile(self) -> tuple[list[Drift], list[Drift], list[Drift]]:
        drift, failed, collected = self._converge(repair=True)
        return drift, failed, collected

    def _converge(self, repair: bool) -> tuple[list[Drift], list[Drift], list[Drift]]:
        drift: list[Drift] = []
        failed: list[Drift] = []
        collected: list[Drift] = []
        for name, bridge in sorted(self.store.bridges().items()):
            with self._locks.bridge(name).write():
                try:
                    seen = self.netlink.observe_bridge(name)
                    ops, _ = plan.plan_bridge(bridge.spec, seen, bridge, self.store.agent_id)
                    if ops:
                        d = Drift("bridge", name, "bridge differs from its spec", _strs(ops))
                        drift.append(d)
                        if repair:
                            self._apply(ops, None, rollback=False, what=f"bridge {name}")
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
        known = {r.id for r in self.store.endpoints().values()}
        with self._inflight_mu:
            busy = set(self._inflight)
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
                from .core.ops import DeleteLink, Where

                self._apply([DeleteLink(Where.HOST, name)], None, rollback=False, what=name)
                log.info("garbage-collected orphan veth %s (endpoint %s)", name, eid)
                collected.append(d)
            else:
                drift.append(replace(d, repair=(f"delete link {name} (host)",)))
        return drift, failed, collected

    def _converge_endpoint(self, record: EndpointRecord, repair: bool) -> Drift | None:
        with self._guest_scope(record) as handle:
            if handle is None:
                return None  # guest not running: nothing can be plumbed, nothing drifts
            ops = self._plan_endpoint(record, handle)
            if not ops:
                return None
            detail = self._describe(record, handle)
            d = Drift("endpoint", record.id, detail, _strs(ops))
            if repair:
                self._apply(ops, handle, rollback=False, what=f"endpoint {record.id}")
                if record.netns_id != handle.ident:
                    self.store.put_endpoint(replace(record, netns_id=handle.ident))
                log.info("endpoint %s repaired: %s", record.id, "; ".join(_strs(ops)))
            return d

    def _describe(self, record: EndpointRecord, handle: NetnsHandle) -> str:
        seen = self.netlink.observe_endpoint(record.host_ifname, record.ifname, handle)
        if seen.host is None:
            return f"{record.guest} {record.ifname}: host veth {record.host_ifname} is missing"
        if seen.guest is None:
            return f"{record.guest} {record.ifname}: interface missing in the guest"
        return f"{record.guest} {record.ifname}: differs from its spec"

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
        if fresh:
            want = plan.desired_endpoint(record, self.store.agent_id)
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
        seen = self.netlink.observe_endpoint(
            record.host_ifname, record.ifname, handle, record.spec.bridge
        )
        return plan.plan_endpoint(
            plan.desired_endpoint(record, self.store.agent_id), seen, self.features
        )

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
        path = guest_path(record.guest)
        try:
            handle = open_netns(path)
        except (NotFound, InvalidSpec):
            return None
        if (
            record.guest.kind is GuestKind.PID
            and record.netns_id
            and handle.ident != record.netns_id
        ):
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
        if not ops:
            return
        try:
            self.netlink.apply(ops, handle)
        except NetplumbError as e:
            completed: list[Op] = getattr(e, "completed", [])
            if rollback and completed:
                undo_ops = [u for u in (undo(op) for op in reversed(completed)) if u is not None]
                failures = self.netlink.apply_quietly(undo_ops, handle)
                for op, why in failures:
                    log.error("%s: rollback step '%s' failed: %s", what, op, why)
                log.warning("%s: failed at '%s'; rolled back %d op(s)", what, e, len(completed))
            raise

    def _store_or_rollback(
        self, write: object, ops: tuple[Op, ...], handle: NetnsHandle | None
    ) -> None:
        try:
            write()  # type: ignore[operator]
        except OSError as e:
            undo_ops = [u for u in (undo(op) for op in reversed(ops)) if u is not None]
            self.netlink.apply_quietly(undo_ops, handle)
            raise PreconditionFailed(
                f"cannot write the state file: {e.strerror}; the change was rolled back",
                hint="check the state directory's disk space and permissions",
            ) from e

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
        }


def _has_ipv6(want: EndpointSpec) -> bool:
    return any(a.version == 6 for a in want.addresses) or any(r.family == 6 for r in want.routes)


def _strs(ops: tuple[Op, ...] | list[Op]) -> tuple[str, ...]:
    return tuple(str(op) for op in ops)


def _differences(a: object, b: object) -> str:
    fields = [f for f in getattr(a, "__slots__", ()) if getattr(a, f) != getattr(b, f)]
    return "differs in " + ", ".join(fields) if fields else "differs"


def hostname() -> str:
    return os.uname().nodename
