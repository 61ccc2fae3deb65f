"""The OVSDB driver: Open vSwitch bridges and ports through ovsdbapp (the OVS
IDL), never ovs-vsctl. It makes no decisions.

OVS is optional: netplumbd starts without it and serves Linux bridges; a
background thread connects (and reconnects) with backoff, and every OVS call
made meanwhile raises DependencyUnavailable with the endpoint it tried.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..core.model import ObservedOvsBridge, ObservedOvsPort
from ..core.ops import (
    AddOvsBridge,
    AddOvsPort,
    DelOvsBridge,
    DelOvsPort,
    Op,
    OvsOp,
    SetOvsPortTag,
)
from ..errors import DependencyUnavailable, InternalError

log = logging.getLogger("netplumb.ovs")

OWNER = "netplumb-owner"
CONNECT_TIMEOUT = 5.0


def kernel_datapath_available() -> bool:
    """True when the kernel has the OVS datapath (the openvswitch module and
    its generic netlink family); False here, where OVS runs in userspace."""
    if os.path.isdir("/sys/module/openvswitch"):
        return True
    try:
        from pyroute2.netlink.generic import GenericNetlinkSocket

        sock = GenericNetlinkSocket()
        try:
            sock.get_protocol_id("ovs_datapath")
            return True
        finally:
            sock.close()
    except Exception:
        return False


class OvsDriver:
    """One OVSDB connection, kept up by a background thread."""

    def __init__(self, endpoint: str, datapath_type: str = "auto") -> None:
        self.endpoint = endpoint
        self._wanted_datapath = datapath_type
        self._api: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_error = "not connected yet"
        self._ever_connected = False
        self._probed_datapath: str | None = None
        self._thread = threading.Thread(target=self._keep_connected, name="ovsdb", daemon=True)
        self._thread.start()
        self.on_connect: list[Any] = []  # callbacks run after each (re)connection

    # -- connection

    @property
    def connected(self) -> bool:
        api = self._api
        return api is not None and _session_up(api)

    @property
    def detail(self) -> str:
        return f"connected to {self.endpoint}" if self.connected else self._last_error

    def datapath_type(self) -> str:
        if self._wanted_datapath in ("system", "netdev"):
            return self._wanted_datapath
        if self._probed_datapath is None:
            self._probed_datapath = "system" if kernel_datapath_available() else "netdev"
        return self._probed_datapath

    def close(self) -> None:
        self._stop.set()
        api = self._api
        if api is not None:
            try:
                api.ovsdb_connection.stop(timeout=1)
            except Exception:
                pass

    def _keep_connected(self) -> None:
        delay = 0.2
        was_up = False
        while not self._stop.is_set():
            if self.connected:
                was_up = True
                delay = 0.2
                self._stop.wait(0.5)
                continue
            if was_up:
                log.warning("lost the OVSDB connection to %s; reconnecting", self.endpoint)
                was_up = False
                self._drop()
            try:
                self._connect()
                log.info("connected to OVSDB at %s", self.endpoint)
                for cb in list(self.on_connect):
                    try:
                        cb()
                    except Exception:
                        log.exception("OVS reconnect handler failed")
            except Exception as e:
                self._last_error = f"cannot reach OVSDB at {self.endpoint}: {e}"
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)

    def _connect(self) -> None:
        from ovsdbapp.backend.ovs_idl import connection
        from ovsdbapp.schema.open_vswitch import impl_idl

        idl = connection.OvsdbIdl.from_server(self.endpoint, "Open_vSwitch")
        conn = connection.Connection(idl=idl, timeout=int(CONNECT_TIMEOUT))
        api = impl_idl.OvsdbIdl(conn, start=True)
        with self._lock:
            self._api = api
        self._ever_connected = True

    def _drop(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            try:
                api.ovsdb_connection.stop(timeout=1)
            except Exception:
                pass

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the connection, when OVSDB looks present
        (its unix socket exists); True when connected."""
        if self.connected:
            return True
        if self.endpoint.startswith("unix:") and not os.path.exists(self.endpoint[5:]):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected:
                return True
            time.sleep(0.02)
        return self.connected

    def _need(self) -> Any:
        api = self._api
        if (api is None or not _session_up(api)) and not self._ever_connected:
            # The first connection may still be on its way (start-up).
            self.wait_connected(2.0)
            api = self._api
        if api is None or not _session_up(api):
            raise DependencyUnavailable(
                f"Open vSwitch is not reachable: {self._last_error}",
                hint="start Open vSwitch (systemctl start openvswitch-switch) or check --ovsdb; "
                "netplumb connects by itself when it comes up",
            )
        return api

    def _run(self, cmd: Any) -> Any:
        try:
            return cmd.execute(check_error=True)
        except Exception as e:
            raise _failure("OVSDB command failed", e) from e

    # -- observe

    def observe_bridge(self, name: str) -> ObservedOvsBridge | None:
        api = self._need()
        rows = self._run(
            api.db_find(
                "Bridge",
                ("name", "=", name),
                columns=["name", "datapath_type", "external_ids", "ports"],
            )
        )
        if not rows:
            return None
        row = rows[0]
        ports = self._run(api.list_ports(name))
        return ObservedOvsBridge(
            name=name,
            datapath_type=row["datapath_type"] or "system",
            owner=row["external_ids"].get(OWNER, ""),
            ports=tuple(sorted(ports)),
        )

    def bridge_names(self) -> list[str]:
        api = self._need()
        return sorted(self._run(api.list_br()))

    def observe_port(self, name: str) -> ObservedOvsPort | None:
        """One port by name, from the IDL's in-memory replica."""
        api = self._need()
        try:
            tables = api.tables
            port = next((p for p in tables["Port"].rows.values() if p.name == name), None)
            if port is None:
                return None
            bridge = next(
                (
                    b.name
                    for b in tables["Bridge"].rows.values()
                    if any(p.uuid == port.uuid for p in b.ports)
                ),
                "",
            )
            return _port(port, bridge)
        except Exception as e:
            raise InternalError(f"reading OVS port {name} failed: {e}") from e

    def owned_ports(self, agent_id: str) -> list[ObservedOvsPort]:
        """Every port tagged with this agent's id, read straight from the
        IDL's in-memory replica (as ovsdbapp's own read commands do): one
        pass over the rows, where per-port lookups made a full mesh of peers
        quadratic."""
        api = self._need()
        try:
            tables = api.tables
            bridge_of = {
                port.uuid: br.name for br in tables["Bridge"].rows.values() for port in br.ports
            }
            return [
                _port(port, bridge_of.get(port.uuid, ""))
                for port in list(tables["Port"].rows.values())
                if port.external_ids.get(OWNER) == agent_id
            ]
        except Exception as e:
            raise InternalError(f"reading OVS ports failed: {e}") from e

    def interface_type(self, name: str) -> str | None:
        """The OVS Interface type of ``name`` ("internal" for a bridge's own
        port), or None when OVS has no such interface."""
        api = self._need()
        rows = self._run(api.db_find("Interface", ("name", "=", name), columns=["type"]))
        return (rows[0]["type"] or "system") if rows else None

    # -- apply

    def apply(self, ops: Sequence[Op], agent_id: str) -> None:
        """Execute OVS ops in one transaction: all or nothing."""
        ovs_ops = [op for op in ops if isinstance(op, OvsOp)]
        if not ovs_ops:
            return
        api = self._need()
        try:
            with api.transaction(check_error=True) as txn:
                for op in ovs_ops:
                    self._add(api, txn, op, agent_id)
        except Exception as e:
            raise _failure(f"OVSDB transaction failed ({'; '.join(map(str, ovs_ops))})", e) from e

    def _add(self, api: Any, txn: Any, op: Op, agent_id: str) -> None:
        owner = {OWNER: agent_id}
        if isinstance(op, AddOvsBridge):
            txn.add(api.add_br(op.name, may_exist=True, datapath_type=op.datapath_type))
            txn.add(
                api.db_set(
                    "Bridge",
                    op.name,
                    ("external_ids", dict(owner, **{"netplumb-bridge": op.name})),
                    ("fail_mode", "standalone"),
                )
            )
            if op.mac:
                txn.add(api.db_set("Bridge", op.name, ("other_config", {"hwaddr": op.mac})))
            if op.mtu:
                txn.add(api.db_set("Interface", op.name, ("mtu_request", op.mtu)))
        elif isinstance(op, DelOvsBridge):
            txn.add(api.del_br(op.name, if_exists=True))
        elif isinstance(op, AddOvsPort):
            ids = dict(owner, **dict(op.external_ids))
            txn.add(api.add_port(op.bridge, op.name, may_exist=True))
            port_cols: list[tuple[str, Any]] = [("external_ids", ids), ("protected", op.protected)]
            # An existing row (may_exist) keeps no stale tag from before.
            port_cols.append(("tag", op.tag if op.tag else []))
            txn.add(api.db_set("Port", op.name, *port_cols))
            iface_cols: list[tuple[str, Any]] = [("external_ids", ids)]
            if op.type:
                iface_cols.append(("type", op.type))
            if op.options:
                iface_cols.append(("options", dict(op.options)))
            if op.mtu:
                iface_cols.append(("mtu_request", op.mtu))
            txn.add(api.db_set("Interface", op.name, *iface_cols))
        elif isinstance(op, SetOvsPortTag):
            if op.tag:
                txn.add(api.db_set("Port", op.name, ("tag", op.tag)))
            else:
                txn.add(api.db_clear("Port", op.name, "tag"))
        elif isinstance(op, DelOvsPort):
            txn.add(api.del_port(op.name, if_exists=True))


def _failure(what: str, e: Exception) -> DependencyUnavailable | InternalError:
    """A timed-out or lost OVSDB connection is OVS being unavailable (retry
    later); anything else is an internal error."""
    from ovsdbapp.exceptions import TimeoutException

    if isinstance(e, TimeoutException | ConnectionError | TimeoutError):
        return DependencyUnavailable(
            f"{what}: Open vSwitch did not answer ({e})",
            hint="is ovsdb-server running? netplumbd reconnects by itself",
        )
    return InternalError(f"{what}: {e}")


def _session_up(api: Any) -> bool:
    # The OVS IDL exposes the connection state only on its jsonrpc session.
    try:
        return bool(api.idl._session.is_connected())
    except AttributeError:
        return False


def _port(port: Any, bridge: str) -> ObservedOvsPort:
    """An IDL Port row (and its first Interface) as netplumb sees it."""
    iface = next(iter(port.interfaces), None)
    ids = dict(port.external_ids)
    return ObservedOvsPort(
        name=port.name,
        bridge=bridge,
        type=(iface.type if iface is not None else "") or "",
        options=dict(iface.options) if iface is not None else {},
        tag=_tag(port.tag),
        owner=ids.get(OWNER, ""),
        external_ids=ids,
        ofport=_first_int(iface.ofport) if iface is not None else -1,
        error=_first_str(iface.error) if iface is not None else "",
        link_state=_first_str(iface.link_state) if iface is not None else "",
        protected=bool(port.protected),
    )


def _tag(v: Any) -> int:
    if isinstance(v, list):
        return int(v[0]) if v else 0
    return int(v) if isinstance(v, int) else 0


def _first_int(v: Any) -> int:
    if isinstance(v, list):
        return int(v[0]) if v else -1
    return int(v) if isinstance(v, int) else -1


def _first_str(v: Any) -> str:
    if isinstance(v, list):
        return str(v[0]) if v else ""
    return str(v) if v else ""


def wait_for_link(lookup: Any, name: str, timeout: float = 5.0) -> bool:
    """ovs-vswitchd creates a bridge's internal interface asynchronously:
    poll ``lookup(name)`` until it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lookup(name):
            return True
        time.sleep(0.02)
    return False
