"""Output: human tables, or one JSON document with --json."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

from . import client
from .client import KINDS, TUNNELS

if TYPE_CHECKING:
    from netplumb.v1 import agent_pb2 as pb
else:
    pb = client.pb  # agent_pb2 through the client, which lightens protobuf's import first

_STATES = {
    pb.ENDPOINT_STATE_READY: "ready",
    pb.ENDPOINT_STATE_GUEST_MISSING: "guest-missing",
    pb.ENDPOINT_STATE_DEGRADED: "degraded",
}
_KINDS = {v: k for k, v in KINDS.items()} | {pb.BRIDGE_KIND_UNSPECIFIED: "linux"}


def _kind(value: int) -> str:
    """A newer daemon may send a kind this client does not know."""
    return _KINDS.get(value, f"unknown({value})")


def to_dict(msg: Any) -> dict[str, Any]:
    # Imported here: json_format costs tens of milliseconds at start-up, and
    # only --json needs it.
    from google.protobuf.json_format import MessageToDict

    out: dict[str, Any] = MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return out


def endpoint_dict(ep: pb.Endpoint) -> dict[str, Any]:
    """The JSON shape of an endpoint: the resolved values at the top level,
    the request as given under "spec"."""
    d = to_dict(ep)
    d["state"] = _STATES.get(ep.state, "unknown")
    return d


def _json(kind: str, reply: Any) -> Any:
    if kind == "endpoint":
        return endpoint_dict(reply)
    if kind == "endpoints":
        return {"endpoints": [endpoint_dict(e) for e in reply]}
    if kind == "detached":
        return {"detached": [endpoint_dict(e) for e in reply]}
    if kind == "bridges":
        return {"bridges": [to_dict(b) for b in reply]}
    if kind == "check":
        return {"drift": [to_dict(d) for d in reply]}
    if kind == "peers":
        return {"peers": [peer_dict(p) for p in reply]}
    if kind == "peer":
        return peer_dict(reply)
    if kind == "networks":
        return {"networks": [network_dict(n) for n in reply]}
    if kind == "network":
        return network_dict(reply)
    return to_dict(reply)


def network_dict(n: pb.Network) -> dict[str, Any]:
    d = to_dict(n)
    spec = d.setdefault("spec", {})
    spec["kind"] = _kind(n.spec.kind)
    spec["tunnel"] = _TUNNELS.get(n.spec.tunnel, "") or "vxlan"
    return d


_TUNNELS = {v: k for k, v in TUNNELS.items()} | {pb.TUNNEL_TYPE_UNSPECIFIED: ""}


def peer_dict(p: pb.Peer) -> dict[str, Any]:
    d = to_dict(p)
    for t, msg in zip(d.get("tunnels", []), p.tunnels, strict=False):
        t["type"] = _TUNNELS.get(msg.type, str(msg.type))
    return d


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=False)).rstrip())
    return "\n".join(lines)


_LINK_KINDS = {2: "macvlan", 3: "phys", 4: "dummy"}  # EndpointKind values but veth


def _attached_to(ep: pb.Endpoint) -> str:
    """Where an endpoint sits: its bridge, or "macvlan:eth0", "phys:eth2",
    "dummy" for the other kinds."""
    kind = _LINK_KINDS.get(ep.spec.kind)
    if kind is None:
        return str(ep.bridge)
    return f"{kind}:{ep.parent}" if ep.parent else kind


def _endpoint_line(ep: pb.Endpoint) -> str:
    addrs = " ".join(ep.addresses) or ("DHCP" if ep.spec.HasField("dhcp") else "no address")
    gws = [f"{r.via}" for r in ep.routes if r.destination == "default"]
    gw = f" via {', '.join(gws)}" if gws else ""
    where = f"bridge {ep.bridge}" if ep.bridge else _attached_to(ep)
    host = f"host {ep.host_ifname}, " if ep.host_ifname else ""
    return f"{ep.guest} {ep.ifname}: {addrs}{gw} on {where} ({host}mac {ep.mac}, mtu {ep.mtu})"


def reply(kind: str, data: Any, json_mode: bool, out: IO[str]) -> None:
    if json_mode:
        import json  # only --json needs it

        json.dump(_json(kind, data), out, indent=2, sort_keys=True)
        out.write("\n")
        return
    if kind == "endpoint":
        print(f"attached {_endpoint_line(data)}", file=out)
    elif kind == "detached":
        if not data:
            print("nothing was attached", file=out)
        for ep in data:
            host = f" (host {ep.host_ifname})" if ep.host_ifname else ""
            print(f"detached {ep.guest} {ep.ifname}{host}", file=out)
    elif kind == "endpoints":
        rows = [
            [
                e.guest,
                e.ifname,
                _attached_to(e),
                e.host_ifname or "-",
                e.mac or "-",
                str(e.mtu or "-"),
                ",".join(e.addresses) or ("dhcp" if e.spec.HasField("dhcp") else "-"),
                _STATES.get(e.state, "?"),
            ]
            for e in data
        ]
        print(
            table(
                rows, ["GUEST", "IFNAME", "BRIDGE", "HOST-IF", "MAC", "MTU", "ADDRESSES", "STATE"]
            ),
            file=out,
        )
    elif kind == "bridge":
        s = data.spec
        how = "created" if data.owned else "adopted (netplumb will not delete it)"
        print(f"bridge {s.name} ({_kind(s.kind)}, mtu {data.mtu}) {how}", file=out)
    elif kind == "bridge-del":
        if not data.existed:
            print("no such bridge; nothing to do", file=out)
        else:
            print(
                "bridge deleted"
                if data.deleted_link
                else "bridge forgotten (it was not netplumb's)",
                file=out,
            )
    elif kind == "bridges":
        rows = [
            [
                b.spec.name,
                _kind(b.spec.kind),
                str(b.mtu),
                str(b.endpoint_mtu),
                str(b.spec.vni or "-"),
                ",".join(b.spec.addresses) or "-",
                "yes" if b.owned else "no (adopted)",
                str(b.endpoint_count),
                "present" if b.present else "MISSING",
            ]
            for b in data
        ]
        print(
            table(
                rows,
                [
                    "NAME",
                    "KIND",
                    "MTU",
                    "EP-MTU",
                    "VNI",
                    "ADDRESSES",
                    "OWNED",
                    "ENDPOINTS",
                    "STATE",
                ],
            ),
            file=out,
        )
    elif kind == "peer":
        tunnels = (
            ", ".join(f"{t.bridge}: {t.state}" for t in data.tunnels) or "no overlay bridges yet"
        )
        name = f" ({data.name})" if data.name else ""
        print(f"peer {data.address}{name}: {tunnels}", file=out)
    elif kind == "peer-del":
        print("peer removed" if data.existed else "no such peer; nothing to do", file=out)
    elif kind == "peers":
        rows = []
        for p in data:
            if not p.tunnels:
                rows.append([p.address, p.name or "-", p.source, "-", "-", "-", "-"])
            for t in p.tunnels:
                rows.append(
                    [
                        p.address,
                        p.name or "-",
                        p.source,
                        t.bridge,
                        str(t.vni),
                        _TUNNELS.get(t.type, "?"),
                        t.state,
                    ]
                )
        print(table(rows, ["PEER", "NAME", "SOURCE", "BRIDGE", "VNI", "TUNNEL", "STATE"]), file=out)
    elif kind == "network":
        s = data.spec
        print(
            f"network {s.name}: {s.subnet} vni {s.vni} ({_kind(s.kind)}, "
            f"{_TUNNELS.get(s.tunnel, '') or 'vxlan'}), gateway {s.gateway or '-'}, "
            f"dns {s.dns_address or '-'}, {data.allocated} address(es) allocated",
            file=out,
        )
    elif kind == "network-del":
        print("network deleted" if data.existed else "no such network; nothing to do", file=out)
    elif kind == "networks":
        rows = [
            [
                n.spec.name,
                n.spec.subnet,
                str(n.spec.vni),
                _kind(n.spec.kind),
                _TUNNELS.get(n.spec.tunnel, "") or "vxlan",
                n.spec.gateway or "-",
                n.spec.dns_address or "-",
                str(n.allocated),
            ]
            for n in data
        ]
        print(
            table(
                rows, ["NETWORK", "SUBNET", "VNI", "KIND", "TUNNEL", "GATEWAY", "DNS", "ALLOCATED"]
            ),
            file=out,
        )
    elif kind == "status":
        _status(data, out)
    elif kind == "check":
        if not data:
            print("no drift: the host matches the records", file=out)
        for d in data:
            print(f"{d.object} {d.name}: {d.detail}", file=out)
            for r in d.repair:
                print(f"    repair: {r}", file=out)
    elif kind == "reconcile":
        for label, items in (
            ("repaired", data.repaired),
            ("failed", data.failed),
            ("collected", data.collected),
        ):
            for d in items:
                print(f"{label}: {d.object} {d.name}: {d.detail}", file=out)
        if not (data.repaired or data.failed or data.collected):
            print("nothing to repair", file=out)


def _status(s: pb.HostStatus, out: IO[str]) -> None:
    print(f"netplumbd {s.version} on {s.hostname}, up {s.uptime_seconds}s, mode {s.mode}", file=out)
    print(f"state dir: {s.state_dir}", file=out)
    if s.ovs_datapath_type:
        print(f"OVS datapath: {s.ovs_datapath_type}", file=out)
    print(
        f"bridges: {s.bridges}  endpoints: {s.endpoints} ({s.endpoints_not_ready} not ready)  peers: {s.peers}",
        file=out,
    )
    for d in s.dependencies:
        state = "up" if d.up else ("disabled" if not d.enabled else "DOWN")
        print(f"  {d.name:8} {state:8} {d.detail}", file=out)
    feats = " ".join(f"{f.name}={'yes' if f.available else 'no'}" for f in s.kernel_features)
    print(f"kernel: {feats}", file=out)


def error(e: Any, json_mode: bool, out: IO[str], err: IO[str]) -> None:
    print(f"netplumb: error: {e.message}", file=err)
    if e.field:
        print(f"  field: {e.field}", file=err)
    if e.hint:
        print(f"  hint: {e.hint}", file=err)
    if json_mode:
        doc = {
            "error": {
                "code": e.code.name,
                "reason": e.reason,
                "message": e.message,
                "field": e.field,
                "hint": e.hint,
            }
        }
        import json

        json.dump(doc, out, indent=2, sort_keys=True)
        out.write("\n")
