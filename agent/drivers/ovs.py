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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..core import overlay
from ..core.model import ObservedOvsBridge, ObservedOvsKnown, ObservedOvsPort
from ..core.ops import (
    AddOvsBridge,
    AddOvsPort,
    DelOvsBridge,
    DelOvsPort,
    DelOvsStaticMac,
    Op,
    OvsOp,
    SetOvsArpAnswers,
    SetOvsPortTag,
    SetOvsStaticMac,
)
from ..errors import DependencyUnavailable, InternalError

T = TypeVar("T")

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
        self._vswitchd_seen = False  # its pidfile named a live process once
        self._vswitchd_was_up = True
        self._vswitchd_pid = 0  # the pid last seen running

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

    def vswitchd_up(self) -> bool | None:
        """Whether ovs-vswitchd runs: its pidfile beside the OVSDB socket
        names a live ovs-vswitchd. None when that cannot be told (OVSDB over
        TCP, or no pidfile where Debian and the lab keep it)."""
        return self._vswitchd_state()[0]

    def _vswitchd_state(self) -> tuple[bool | None, int]:
        """(vswitchd_up(), the pid running or 0). Reads only: callers that
        merely ask (Status, metrics) must not move the watcher's baseline."""
        if not self.endpoint.startswith("unix:"):
            return None, 0
        try:
            pid = vswitchd_pid(os.path.dirname(self.endpoint[5:]))
        except FileNotFoundError:
            return (False if self._vswitchd_seen else None), 0
        if pid is None:
            return None, 0
        if pid:
            self._vswitchd_seen = True
            return True, pid
        return (False if self._vswitchd_seen else None), 0

    def _watch_vswitchd(self) -> None:
        """Called by the connection thread only: it alone keeps the pid last
        seen, and acts when ovs-vswitchd went away, came back, or was
        replaced by another process between two looks."""
        before = self._vswitchd_pid
        up, pid = self._vswitchd_state()
        if pid:
            self._vswitchd_pid = pid
        if up is False and self._vswitchd_was_up:
            log.warning("ovs-vswitchd is not running: OVS bridges forward nothing until it is back")
            self._vswitchd_was_up = False
        elif up and not self._vswitchd_was_up:  # it was seen down: back now
            self._vswitchd_was_up = True
            log.info("ovs-vswitchd is running again")
            self._connected_again()
        elif up and before and pid != before:
            # Restarted between two looks: its MAC tables and flows are new.
            log.info("ovs-vswitchd restarted (pid %d, was %d)", pid, before)
            self._connected_again()

    def _connected_again(self) -> None:
        for cb in list(self.on_connect):
            try:
                cb()
            except Exception:
                log.exception("OVS reconnect handler failed")

    def _keep_connected(self) -> None:
        delay = 0.2
        was_up = False
        while not self._stop.is_set():
            if self.connected:
                was_up = True
                delay = 0.2
                self._watch_vswitchd()
                self._stop.wait(0.5)
                continue
            if was_up:
                log.warning("lost the OVSDB connection to %s; reconnecting", self.endpoint)
                was_up = False
                self._drop()
            try:
                self._connect()
                log.info("connected to OVSDB at %s", self.endpoint)
                # The reconcile below serves this ovs-vswitchd too: only a
                # later change of its pid is a restart to act on.
                self._vswitchd_pid = self._vswitchd_state()[1] or self._vswitchd_pid
                self._connected_again()
            except Exception as e:
                self._last_error = f"cannot reach OVSDB at {self.endpoint}: {e}"
                self._stop.wait(delay)
                delay = min(delay * 2, 0.25)

    def _connect(self) -> None:
        from ovsdbapp.backend.ovs_idl import connection
        from ovsdbapp.schema.open_vswitch import impl_idl

        t0 = time.monotonic()
        idl = connection.OvsdbIdl.from_server(self.endpoint, "Open_vSwitch")
        try:
            # python-ovs backs off 1, 2, 4, 8 s between attempts: an OVSDB
            # that restarts while we connect would cost seconds. A local
            # unix socket is cheap to retry.
            idl._session.reconnect.set_backoff(100, 250)
        except AttributeError:
            pass
        t1 = time.monotonic()
        conn = connection.Connection(idl=idl, timeout=int(CONNECT_TIMEOUT))
        api = impl_idl.OvsdbIdl(conn, start=True)
        log.debug(
            "OVSDB: schema in %.0f ms, replica in %.0f ms",
            (t1 - t0) * 1000,
            (time.monotonic() - t1) * 1000,
        )
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

    def _replica(self, what: str, read: Callable[[Any], T]) -> T:
        """Run ``read(tables)`` over the IDL's in-memory replica. ovsdbapp's
        connection thread updates it meanwhile, so a read can meet a row
        half-updated (an attribute missing, a dict changing size): such a read
        is simply made again."""
        api = self._need()
        for attempt in range(5):
            try:
                return read(api.tables)
            except (AttributeError, KeyError, RuntimeError, TypeError) as e:
                if attempt == 4:
                    raise InternalError(f"reading {what} failed: {e}") from e
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def observe_port(self, name: str) -> ObservedOvsPort | None:
        """One port by name, from the IDL's in-memory replica."""

        def read(tables: Any) -> ObservedOvsPort | None:
            port = next((p for p in list(tables["Port"].rows.values()) if p.name == name), None)
            if port is None:
                return None
            bridge = next(
                (
                    b.name
                    for b in list(tables["Bridge"].rows.values())
                    if any(p.uuid == port.uuid for p in b.ports)
                ),
                "",
            )
            return _port(port, bridge, dict(port.external_ids))

        return self._replica(f"OVS port {name}", read)

    def owned_ports(self, agent_id: str) -> list[ObservedOvsPort]:
        """Every port tagged with this agent's id, read straight from the
        IDL's in-memory replica (as ovsdbapp's own read commands do): one
        pass over the rows, where per-port lookups made a full mesh of peers
        quadratic."""

        def read(tables: Any) -> list[ObservedOvsPort]:
            bridge_of = {
                port.uuid: br.name
                for br in list(tables["Bridge"].rows.values())
                for port in br.ports
            }
            out = []
            for port in list(tables["Port"].rows.values()):
                ids = dict(port.external_ids)  # read once: filter and view
                if ids.get(OWNER) == agent_id:
                    out.append(_port(port, bridge_of.get(port.uuid, ""), ids))
            return out

        return self._replica("OVS ports", read)

    def interface_ifindex(self, name: str) -> int:
        """The ifindex ovs-vswitchd reports for an interface (0 until it has
        created the device)."""

        def read(tables: Any) -> int:
            for row in list(tables["Interface"].rows.values()):
                if row.name == name:
                    got = row.ifindex
                    return int(got[0]) if isinstance(got, list) and got else int(got or 0)
            return 0

        return self._replica(f"OVS interface {name}", read)

    def interface_type(self, name: str) -> str | None:
        """The OVS Interface type of ``name`` ("internal" for a bridge's own
        port), or None when OVS has no such interface."""
        api = self._need()
        rows = self._run(api.db_find("Interface", ("name", "=", name), columns=["type"]))
        return (rows[0]["type"] or "system") if rows else None

    # -- ovs-vswitchd: MAC table and OpenFlow (known endpoints, cluster mode)

    @property
    def rundir(self) -> str | None:
        """OVS's run directory (control sockets, bridges' .mgmt sockets):
        where the OVSDB socket is. None for OVSDB over TCP, whose vswitchd
        cannot be reached from here."""
        if not self.endpoint.startswith("unix:"):
            return None
        return os.path.dirname(self.endpoint[5:])

    def _appctl(self, command: str, *args: str) -> str:
        rundir = self.rundir
        if rundir is None:
            raise DependencyUnavailable(
                "ovs-vswitchd cannot be reached: OVSDB is not a local unix socket"
            )
        return appctl(rundir, command, *args)

    def _ofctl(self, command: str, bridge: str, *args: str, stdin: str = "") -> str:
        """ovs-ofctl against one bridge (OpenFlow has no library here; the
        program, with an argument list)."""
        import subprocess

        from .netns import find_program

        program = find_program("ovs-ofctl")
        if program is None:
            raise DependencyUnavailable(
                "ovs-ofctl is not installed", hint="apt-get install openvswitch-common"
            )
        rundir = self.rundir
        target = f"unix:{rundir}/{bridge}.mgmt" if rundir else bridge
        argv = [program, "-O", "OpenFlow14", *command.split(), target, *args]
        try:
            res = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=10, check=False
            )
        except subprocess.TimeoutExpired:
            raise DependencyUnavailable(f"ovs-ofctl {command} {bridge} took over 10 s") from None
        if res.returncode != 0:
            raise DependencyUnavailable(
                f"ovs-ofctl {command} {bridge} failed: {res.stderr.strip() or res.returncode}"
            )
        return res.stdout

    def observe_known(self, bridge: str, ports: set[str]) -> ObservedOvsKnown:
        """The static MAC entries of ``bridge`` that point at one of
        ``ports`` (our tunnels), and our ARP answer flows on it."""
        if self.vswitchd_up() is False:
            raise DependencyUnavailable(
                "ovs-vswitchd is not running", hint="netplumbd programs the bridge when it is back"
            )
        rundir = self.rundir
        if rundir is not None:
            # A (re)started ovs-vswitchd opens a bridge's OpenFlow socket once
            # it has built the bridge from OVSDB: wait for it a little.
            mgmt = os.path.join(rundir, f"{bridge}.mgmt")
            deadline = time.monotonic() + 2
            while not os.path.exists(mgmt) and time.monotonic() < deadline:
                time.sleep(0.05)

        def read(tables: Any) -> dict[int, str]:
            out = {}
            for r in list(tables["Interface"].rows.values()):
                if r.name in ports:
                    n = _first_int(r.ofport)
                    if n > 0:  # built by ovs-vswitchd (-1: in error; none: not yet)
                        out[n] = r.name
            return out

        ofports = self._replica("OVS interfaces", read)
        static: list[tuple[str, str]] = []
        for line in self._appctl("fdb/show", bridge).splitlines()[1:]:
            cols = line.split()
            if len(cols) == 4 and cols[3] == "static" and cols[0].isdigit():
                port = ofports.get(int(cols[0]))
                if port is not None:
                    static.append((cols[2].lower(), port))
        answers: list[tuple[str, str]] = []
        flows = self._ofctl(
            "--no-stats dump-flows",
            bridge,
            f"cookie={overlay.ARP_COOKIE:#x}/{overlay.ARP_COOKIE_MASK:#x}",
        )
        for line in flows.splitlines():
            fields = dict(f.split("=", 1) for f in line.replace(" ", ",").split(",") if "=" in f)
            mac = overlay.cookie_mac(int(fields.get("cookie", "0"), 16))
            if mac is not None and "arp_tpa" in fields:
                answers.append((fields["arp_tpa"], mac))
        return ObservedOvsKnown(
            tuple(sorted(static)), tuple(sorted(answers)), tuple(sorted(ofports.values()))
        )

    def _program(self, op: Op) -> None:
        if isinstance(op, SetOvsStaticMac):
            self._appctl("fdb/add", op.bridge, op.port, "0", op.mac)
        elif isinstance(op, DelOvsStaticMac):
            try:
                self._appctl("fdb/del", op.bridge, "0", op.mac)
            except InternalError as e:
                if "not found" not in str(e):
                    raise
        elif isinstance(op, SetOvsArpAnswers):
            mask = f"{overlay.ARP_COOKIE:#x}/{overlay.ARP_COOKIE_MASK:#x}"
            lines = [f"delete cookie={mask}"]
            lines += [f"add {overlay.arp_answer_flow(ip, mac)}" for ip, mac in op.answers]
            self._ofctl("--bundle add-flows", op.bridge, "-", stdin="\n".join(lines) + "\n")

    # -- apply

    def apply(self, ops: Sequence[Op], agent_id: str) -> None:
        """Execute OVS ops: the OVSDB ones in one transaction (all or
        nothing), then those for ovs-vswitchd's tables, in order."""
        vswitchd = SetOvsStaticMac | DelOvsStaticMac | SetOvsArpAnswers
        table_ops = [op for op in ops if isinstance(op, vswitchd)]
        ovs_ops = [op for op in ops if isinstance(op, OvsOp) and not isinstance(op, vswitchd)]
        if ovs_ops:
            self._transact(ovs_ops, agent_id)
        for op in table_ops:
            self._program(op)

    def _transact(self, ovs_ops: Sequence[Op], agent_id: str) -> None:
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


def vswitchd_pid(rundir: str) -> int | None:
    """The pid of the ovs-vswitchd running from ``rundir`` (its pidfile names
    a live ovs-vswitchd), 0 when the one it names is gone, None when the
    pidfile cannot be read. Raises FileNotFoundError without a pidfile."""
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as f:
            pid = int(f.read().strip())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/comm") as f:
            return pid if f.read().strip() == "ovs-vswitchd" else 0
    except OSError:
        return 0


def appctl(rundir: str, command: str, *args: str, timeout: float = 5.0) -> str:
    """One ovs-vswitchd control command (what ``ovs-appctl`` sends) over its
    unixctl socket in ``rundir``, through the ovs library's JSON-RPC, with a
    deadline. Raises DependencyUnavailable when ovs-vswitchd cannot be asked,
    InternalError with its answer when it refuses."""
    import errno

    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream

    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        raise DependencyUnavailable(
            f"ovs-vswitchd is not running (no pidfile in {rundir}: {e})",
            hint="start Open vSwitch; netplumbd programs the bridge again when it is back",
        ) from None
    path = os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(f"unix:{path}"))
    if error:
        raise DependencyUnavailable(f"ovs-vswitchd at {path}: {os.strerror(error)}")
    conn = ovs.jsonrpc.Connection(stream)
    try:
        request = ovs.jsonrpc.Message.create_request(command, list(args))
        conn.send(request)
        deadline = time.monotonic() + timeout
        while True:
            conn.run()
            error, reply = conn.recv()
            if reply is not None and reply.id == request.id:
                break
            if error and error != errno.EAGAIN:
                raise DependencyUnavailable(f"ovs-vswitchd {command}: {os.strerror(error)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DependencyUnavailable(
                    f"ovs-vswitchd did not answer {command} within {timeout:.0f} s"
                )
            poller = ovs.poller.Poller()
            conn.wait(poller)
            conn.recv_wait(poller)
            poller.timer_wait(int(left * 1000))
            poller.block()
    finally:
        conn.close()
    if reply.error is not None:
        raise InternalError(f"ovs-vswitchd {command} {' '.join(args)}: {reply.error}".strip())
    return str(reply.result)


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


def _port(port: Any, bridge: str, ids: dict[str, str]) -> ObservedOvsPort:
    """An IDL Port row (and its first Interface) as netplumb sees it, with
    its external_ids as the caller read them (each read of a row's attribute
    converts it anew)."""
    iface = next(iter(port.interfaces), None)
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


def wait_for_link(
    lookup: Any, name: str, timeout: float = 5.0, ifindex: Callable[[], int] | None = None
) -> bool:
    """ovs-vswitchd creates a bridge's internal interface asynchronously:
    poll ``lookup(name)`` (the device's ifindex, 0 when absent) until it is
    there -- and, with ``ifindex`` (what OVSDB reports), until it is the
    device ovs-vswitchd made now, not a stale one of the same name that a
    killed ovs-vswitchd left behind and the new one is about to replace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        have = lookup(name)
        if have and (ifindex is None or ifindex() == have):
            return True
        time.sleep(0.02)
    return False
