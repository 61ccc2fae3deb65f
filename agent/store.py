"""Durable desired state: bridges, endpoints (and later peers, networks).

Format: one JSON document, ``state.json`` under the state dir, rewritten
whole on every change: written to a temporary file, fsync'd, renamed over the
old one, and the directory fsync'd. A crash leaves either the old or the new
document, never a torn one. The document holds one record (bridge,
endpoint) per line, keys sorted, so a diff of two states shows the records
that changed. Why JSON: the state of a host is small (1000 endpoints is a few
hundred kB), an operator can read it with ``jq`` during an incident, and it
needs no dependency; see ARCHITECTURE.md.

The store only holds what callers asked for plus the values the agent
resolved once (MAC, MTU, namespace identity); everything observable is
observed from the host, never cached here.

``Store`` is the interface the engine uses; cluster mode swaps in an
implementation whose shared parts live in etcd.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from .core import cluster
from .core.model import (
    BridgeKind,
    BridgeRecord,
    BridgeSpec,
    DhcpSpec,
    EndpointRecord,
    EndpointSpec,
    GuestKind,
    GuestRef,
    LinkKind,
    PeerRecord,
    RouteSpec,
    RuleSpec,
)
from .core.naming import new_agent_id
from .errors import InternalError

SCHEMA_VERSION = 1
STATE_FILE = "state.json"
TABLES = ("bridges", "endpoints", "peers")


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
    def peers(self) -> Mapping[str, PeerRecord]: ...
    def put_peer(self, record: PeerRecord) -> None: ...
    def delete_peer(self, address: str) -> None: ...


class FileStore:
    """``Store`` in one atomically replaced JSON file.

    Each record is encoded once, when it is put (compact, sorted keys, by the
    C encoder), and kept next to the record; a flush only joins the cached
    lines, so its cost is a copy of the document, not a re-encode of every
    record. The document has one record per line (``jq``- and diff-friendly)
    and the same keys as ever; files written with ``indent=1`` load too.

    Writes are copy-on-write: the new state is built aside, flushed, and only
    swapped in once the flush succeeded, so a failed write (its ``OSError``
    propagates unchanged) leaves the store serving the old, durable state.
    """

    def __init__(self, state_dir: str) -> None:
        self._dir = state_dir
        self._path = os.path.join(state_dir, STATE_FILE)
        self._lock = threading.Lock()
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        # Per table: the records by key, and the encoded line of each.
        self._records: dict[str, Mapping[str, Any]] = {t: MappingProxyType({}) for t in TABLES}
        self._lines: dict[str, dict[str, bytes]] = {t: {} for t in TABLES}
        self._agent_id = ""
        self._load()
        if not self._agent_id:
            agent_id = new_agent_id()
            with self._lock:
                self._write(_render(agent_id, self._lines))
            self._agent_id = agent_id

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
        return self._snapshot("bridges")

    def endpoints(self) -> Mapping[str, EndpointRecord]:
        return self._snapshot("endpoints")

    def peers(self) -> Mapping[str, PeerRecord]:
        return self._snapshot("peers")

    def put_bridge(self, record: BridgeRecord) -> None:
        self._put("bridges", record)

    def delete_bridge(self, name: str) -> None:
        self._delete("bridges", name)

    def put_endpoint(self, record: EndpointRecord) -> None:
        self._put("endpoints", record)

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._delete("endpoints", endpoint_id)

    def put_peer(self, record: PeerRecord) -> None:
        self._put("peers", record)

    def delete_peer(self, address: str) -> None:
        self._delete("peers", address)

    def _snapshot(self, table: str) -> Mapping[str, Any]:
        # Tables are replaced, never changed in place: the current one is a
        # consistent snapshot as it is, with no copy on the (hot) read path.
        return self._records[table]

    def _put(self, table: str, record: Any) -> None:
        encode, _, key_of = CODECS[table]
        key, line = key_of(record), _encode(encode(record))
        with self._lock:
            lines = dict(self._lines, **{table: {**self._lines[table], key: line}})
            self._write(_render(self._agent_id, lines))
            self._lines = lines
            self._records[table] = MappingProxyType({**self._records[table], key: record})

    def _delete(self, table: str, key: str) -> None:
        with self._lock:
            if key not in self._records[table]:
                return
            remaining = dict(self._lines[table])
            del remaining[key]
            lines = dict(self._lines, **{table: remaining})
            self._write(_render(self._agent_id, lines))
            self._lines = lines
            records = dict(self._records[table])
            del records[key]
            self._records[table] = MappingProxyType(records)

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
        if not isinstance(doc, dict):
            raise InternalError(
                f"state file {self._path} is malformed: the document is a JSON "
                f"{_json_type(doc)}, not an object",
                hint="restore it from a backup, or move it away to start with an empty state",
            )
        if doc.get("version") != SCHEMA_VERSION:
            raise InternalError(
                f"state file {self._path} has schema version {doc.get('version')!r}; "
                f"this netplumbd understands {SCHEMA_VERSION}",
                hint="run the netplumbd version that wrote it",
            )
        agent_id = doc.get("agent_id", "")
        if not isinstance(agent_id, str):
            raise InternalError(
                f"state file {self._path} is malformed: agent_id is a JSON "
                f"{_json_type(agent_id)}, not a string"
            )
        try:
            for table, (_, decode, key) in CODECS.items():
                records = (decode(item) for item in _array(doc, table))
                self._records[table] = MappingProxyType({key(r): r for r in records})
        except (KeyError, TypeError, ValueError) as e:
            raise InternalError(f"state file {self._path} is malformed: {e!r}") from e
        # Encoded from the records, not copied from the file: a file with
        # defaulted (absent) fields is written back whole.
        self._lines = {
            t: {k: _encode(CODECS[t][0](r)) for k, r in self._records[t].items()} for t in TABLES
        }
        self._agent_id = agent_id

    def _write(self, data: bytes) -> None:
        """Replace the state file with ``data``, atomically and durably: a
        temporary file, written whole and fsync'd, renamed over the old one,
        then the directory fsync'd. Raises ``OSError`` (the temporary file
        removed) if any step before the rename fails."""
        tmp = self._path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written; a write that makes no
    progress is an error, never a silently short file."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(
                errno.EIO, f"short write: {len(data) - len(view)} of {len(data)} bytes written"
            )
        view = view[n:]


def _encode(obj: dict[str, Any]) -> bytes:
    """One record, one line: compact, sorted keys, ASCII (the C encoder)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _render(agent_id: str, tables: Mapping[str, Mapping[str, bytes]]) -> bytes:
    """The state document from the encoded records, one record per line, in
    key order (stable diffs)."""

    def array(name: str, lines: Mapping[str, bytes]) -> list[bytes]:
        key = name.encode()
        if not lines:
            return [b'"%s":[]' % key]
        return [b'"%s":[\n' % key, b",\n".join([lines[k] for k in sorted(lines)]), b"\n]"]

    head = b'{\n"version":%d,\n"agent_id":%s,\n' % (SCHEMA_VERSION, json.dumps(agent_id).encode())
    parts: list[bytes] = [head]
    for i, table in enumerate(TABLES):
        if i:
            parts.append(b",\n")
        parts.extend(array(table, tables.get(table, {})))
    parts.append(b"\n}\n")
    return b"".join(parts)


def _array(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise TypeError(f"{key} is a JSON {_json_type(value)}, not an array")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


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
        **({"mac": s.mac} if s.mac else {}),
        **({"network": cluster.network_to_doc(rec.network)} if rec.network else {}),
    }


def bridge_from_json(d: dict[str, Any]) -> BridgeRecord:
    spec = BridgeSpec(
        name=d["name"],
        kind=BridgeKind(d["kind"]),
        addresses=tuple(ipaddress.ip_interface(a) for a in d["addresses"]),
        mtu=int(d["mtu"]),
        vni=int(d.get("vni", 0)),
        tunnel=d.get("tunnel", ""),
        mac=str(d.get("mac", "")),
    )
    return BridgeRecord(
        spec=spec,
        owned=bool(d["owned"]),
        foreign_addresses=tuple(ipaddress.ip_interface(a) for a in d.get("foreign_addresses", [])),
        network=cluster.network_from_doc(d["network"]) if d.get("network") else None,
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
            **({"kind": s.kind.value, "parent": s.parent} if s.kind is not LinkKind.VETH else {}),
            **({"name": s.name} if s.name else {}),
            **(
                {
                    "dhcp": {
                        "client": s.dhcp.client,
                        "options": list(s.dhcp.options),
                        "keep": s.dhcp.keep,
                    }
                }
                if s.dhcp is not None
                else {}
            ),
        },
        "host_ifname": rec.host_ifname,
        "mac": rec.mac,
        "mtu": rec.mtu,
        "netns_id": list(rec.netns_id) if rec.netns_id else None,
        "netns_path": rec.netns_path,
        "extra_routes": [_route_to_json(r) for r in rec.extra_routes],
        "guest_name": rec.guest_name,
        **({"parent": rec.parent, "parent_mac": rec.parent_mac} if rec.parent else {}),
        **({"rules": [_rule_to_json(r) for r in rec.rules]} if rec.rules else {}),
        **({"tc": [list(t) for t in rec.tc]} if rec.tc else {}),
        **({"allocated": [str(a) for a in rec.allocated]} if rec.allocated else {}),
        **({"net_gateways": [str(g) for g in rec.net_gateways]} if rec.net_gateways else {}),
        **({"name": rec.name} if rec.name else {}),
    }


def _rule_to_json(r: RuleSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"family": r.family, "table": r.table}
    for key in ("priority", "fwmark", "fwmask", "iif", "oif", "invert"):
        if getattr(r, key):
            out[key] = getattr(r, key)
    for key in ("src", "dst"):
        if getattr(r, key) is not None:
            out[key] = str(getattr(r, key))
    return out


def _rule_from_json(d: dict[str, Any]) -> RuleSpec:
    return RuleSpec(
        family=int(d["family"]),
        priority=int(d.get("priority", 0)),
        table=int(d.get("table", 254)),
        src=ipaddress.ip_network(d["src"]) if d.get("src") else None,
        dst=ipaddress.ip_network(d["dst"]) if d.get("dst") else None,
        fwmark=int(d.get("fwmark", 0)),
        fwmask=int(d.get("fwmask", 0)),
        iif=str(d.get("iif", "")),
        oif=str(d.get("oif", "")),
        invert=bool(d.get("invert", False)),
    )


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
        kind=LinkKind(s.get("kind", "veth")),
        parent=str(s.get("parent", "")),
        name=str(s.get("name", "")),
        dhcp=DhcpSpec(
            client=str(s["dhcp"]["client"]),
            options=tuple(str(o) for o in s["dhcp"].get("options", [])),
            keep=bool(s["dhcp"].get("keep", False)),
        )
        if s.get("dhcp")
        else None,
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
        guest_name=str(d.get("guest_name", "")),
        parent=str(d.get("parent", "")),
        parent_mac=str(d.get("parent_mac", "")),
        rules=tuple(_rule_from_json(r) for r in d.get("rules", [])),
        tc=tuple(tuple(str(w) for w in t) for t in d.get("tc", [])),
        allocated=tuple(ipaddress.ip_interface(a) for a in d.get("allocated", [])),
        net_gateways=tuple(ipaddress.ip_address(g) for g in d.get("net_gateways", [])),
        name=str(d.get("name", "")),
    )


def peer_to_json(rec: PeerRecord) -> dict[str, Any]:
    return {"address": str(rec.address), "name": rec.name, "source": rec.source}


def peer_from_json(d: dict[str, Any]) -> PeerRecord:
    return PeerRecord(
        address=ipaddress.ip_address(d["address"]),
        name=str(d.get("name", "")),
        source=str(d.get("source", "static")),
    )


# table -> (encode, decode, key of a record)
CODECS: dict[
    str, tuple[Callable[[Any], dict[str, Any]], Callable[[Any], Any], Callable[[Any], str]]
] = {
    "bridges": (bridge_to_json, bridge_from_json, lambda r: r.spec.name),
    "endpoints": (endpoint_to_json, endpoint_from_json, lambda r: r.id),
    "peers": (peer_to_json, peer_from_json, lambda r: str(r.address)),
}
