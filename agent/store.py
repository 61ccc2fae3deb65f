"""Durable desired state: bridges, endpoints (and later peers, networks).

Format: one JSON document, ``state.json`` under the state dir, rewritten
whole on every change: written to a temporary file, fsync'd, renamed over the
old one, and the directory fsync'd. A crash leaves either the old or the new
document, never a torn one. Why JSON: the state of a host is small (1000
endpoints is a few hundred kB), an operator can read it with ``jq`` during an
incident, and it needs no dependency; see ARCHITECTURE.md.

The store only holds what callers asked for plus the values the agent
resolved once (MAC, MTU, namespace identity); everything observable is
observed from the host, never cached here.

``Store`` is the interface the engine uses; cluster mode swaps in an
implementation whose shared parts live in etcd.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from .core.model import (
    BridgeKind,
    BridgeRecord,
    BridgeSpec,
    EndpointRecord,
    EndpointSpec,
    GuestKind,
    GuestRef,
    RouteSpec,
)
from .core.naming import new_agent_id
from .errors import InternalError

SCHEMA_VERSION = 1
STATE_FILE = "state.json"


class Store(Protocol):
    """Desired state. Reads return snapshots; each write is durable when it
    returns. Deleting a missing key is a no-op."""

    @property
    def agent_id(self) -> str: ...
    def bridges(self) -> Mapping[str, BridgeRecord]: ...
    def endpoints(self) -> Mapping[str, EndpointRecord]: ...
    def put_bridge(self, record: BridgeRecord) -> None: ...
    def delete_bridge(self, name: str) -> None: ...
    def put_endpoint(self, record: EndpointRecord) -> None: ...
    def delete_endpoint(self, endpoint_id: str) -> None: ...


class FileStore:
    """``Store`` in one atomically replaced JSON file."""

    def __init__(self, state_dir: str) -> None:
        self._dir = state_dir
        self._path = os.path.join(state_dir, STATE_FILE)
        self._lock = threading.Lock()
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self._bridges: dict[str, BridgeRecord] = {}
        self._endpoints: dict[str, EndpointRecord] = {}
        self._agent_id = ""
        self._load()
        if not self._agent_id:
            self._agent_id = new_agent_id()
            with self._lock:
                self._flush()

    @property
    def agent_id(self) -> str:
        """This agent's identity, made once and kept: part of every ownership
        tag, so several agents sharing a namespace never collect each
        other's objects."""
        return self._agent_id

    @property
    def path(self) -> str:
        return self._path

    def bridges(self) -> Mapping[str, BridgeRecord]:
        with self._lock:
            return dict(self._bridges)

    def endpoints(self) -> Mapping[str, EndpointRecord]:
        with self._lock:
            return dict(self._endpoints)

    def put_bridge(self, record: BridgeRecord) -> None:
        with self._lock:
            self._bridges[record.spec.name] = record
            self._flush()

    def delete_bridge(self, name: str) -> None:
        with self._lock:
            if self._bridges.pop(name, None) is not None:
                self._flush()

    def put_endpoint(self, record: EndpointRecord) -> None:
        with self._lock:
            self._endpoints[record.id] = record
            self._flush()

    def delete_endpoint(self, endpoint_id: str) -> None:
        with self._lock:
            if self._endpoints.pop(endpoint_id, None) is not None:
                self._flush()

    def _load(self) -> None:
        try:
            with open(self._path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise InternalError(
                f"cannot read the state file {self._path}: {e}",
                hint="restore it from a backup, or move it away to start with an empty state",
            ) from e
        if doc.get("version") != SCHEMA_VERSION:
            raise InternalError(
                f"state file {self._path} has schema version {doc.get('version')!r}; "
                f"this netplumbd understands {SCHEMA_VERSION}",
                hint="run the netplumbd version that wrote it",
            )
        try:
            self._agent_id = str(doc.get("agent_id", ""))
            for item in doc.get("bridges", []):
                rec = bridge_from_json(item)
                self._bridges[rec.spec.name] = rec
            for item in doc.get("endpoints", []):
                ep = endpoint_from_json(item)
                self._endpoints[ep.id] = ep
        except (KeyError, TypeError, ValueError) as e:
            raise InternalError(f"state file {self._path} is malformed: {e!r}") from e

    def _flush(self) -> None:
        doc = {
            "version": SCHEMA_VERSION,
            "agent_id": self._agent_id,
            "bridges": [bridge_to_json(b) for _, b in sorted(self._bridges.items())],
            "endpoints": [endpoint_to_json(e) for _, e in sorted(self._endpoints.items())],
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        tmp = self._path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        dfd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ------------------------------------------------------------------ codec


def bridge_to_json(rec: BridgeRecord) -> dict[str, Any]:
    s = rec.spec
    return {
        "name": s.name,
        "kind": s.kind.value,
        "addresses": [str(a) for a in s.addresses],
        "mtu": s.mtu,
        "vni": s.vni,
        "tunnel": s.tunnel,
        "owned": rec.owned,
        "foreign_addresses": [str(a) for a in rec.foreign_addresses],
    }


def bridge_from_json(d: dict[str, Any]) -> BridgeRecord:
    spec = BridgeSpec(
        name=d["name"],
        kind=BridgeKind(d["kind"]),
        addresses=tuple(ipaddress.ip_interface(a) for a in d["addresses"]),
        mtu=int(d["mtu"]),
        vni=int(d.get("vni", 0)),
        tunnel=d.get("tunnel", ""),
    )
    return BridgeRecord(
        spec=spec,
        owned=bool(d["owned"]),
        foreign_addresses=tuple(ipaddress.ip_interface(a) for a in d.get("foreign_addresses", [])),
    )


def _route_to_json(r: RouteSpec) -> dict[str, Any]:
    return {"destination": str(r.destination), "via": str(r.via or ""), "metric": r.metric}


def _route_from_json(d: dict[str, Any]) -> RouteSpec:
    return RouteSpec(
        destination=ipaddress.ip_network(d["destination"]),
        via=ipaddress.ip_address(d["via"]) if d.get("via") else None,
        metric=int(d.get("metric", 0)),
    )


def endpoint_to_json(rec: EndpointRecord) -> dict[str, Any]:
    s = rec.spec
    return {
        "id": rec.id,
        "spec": {
            "bridge": s.bridge,
            "guest": {"kind": s.guest.kind.value, "value": s.guest.value},
            "ifname": s.ifname,
            "host_ifname": s.host_ifname,
            "mac": s.mac,
            "mtu": s.mtu,
            "vlan": s.vlan,
            "addresses": [str(a) for a in s.addresses],
            "gateways": [str(g) for g in s.gateways],
            "routes": [_route_to_json(r) for r in s.routes],
        },
        "host_ifname": rec.host_ifname,
        "mac": rec.mac,
        "mtu": rec.mtu,
        "netns_id": list(rec.netns_id) if rec.netns_id else None,
        "netns_path": rec.netns_path,
        "extra_routes": [_route_to_json(r) for r in rec.extra_routes],
    }


def endpoint_from_json(d: dict[str, Any]) -> EndpointRecord:
    s = d["spec"]
    spec = EndpointSpec(
        bridge=s["bridge"],
        guest=GuestRef(GuestKind(s["guest"]["kind"]), s["guest"]["value"]),
        ifname=s["ifname"],
        host_ifname=s.get("host_ifname"),
        mac=s.get("mac"),
        mtu=int(s.get("mtu", 0)),
        vlan=int(s.get("vlan", 0)),
        addresses=tuple(ipaddress.ip_interface(a) for a in s.get("addresses", [])),
        gateways=tuple(ipaddress.ip_address(g) for g in s.get("gateways", [])),
        routes=tuple(_route_from_json(r) for r in s.get("routes", [])),
    )
    nid = d.get("netns_id")
    return EndpointRecord(
        spec=spec,
        id=d["id"],
        host_ifname=d["host_ifname"],
        mac=d["mac"],
        mtu=int(d["mtu"]),
        netns_id=(int(nid[0]), int(nid[1])) if nid else None,
        netns_path=d.get("netns_path", ""),
        extra_routes=tuple(_route_from_json(r) for r in d.get("extra_routes", [])),
    )
