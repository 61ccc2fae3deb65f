#!/usr/bin/env python3
"""netplumb lab: N "hosts" on one machine, for trying netplumb and for tests.

Every host is a network namespace ``<prefix>-h<i>`` with an underlay NIC
``eth0`` plugged into a Linux bridge ``fabric0`` in ``<prefix>-fabric`` (the
underlay switch). Host i has the underlay address 198.18.0.<10+i>/24 (and
2001:db8:18::<10+i>/64). By default each host runs its own ovsdb-server and
ovs-vswitchd (userspace datapath: this kernel has no OVS kernel datapath)
with ``eth0`` as a port of ``br-phy`` and the underlay address on ``br-phy``,
as OVS userspace tunnelling requires; with ``--no-ovs`` the address sits on
``eth0``. Each host runs its own netplumbd on ``WORKDIR/h<i>/netplumbd.sock``.

    lab.py up --hosts 3 [--prefix nplab] [--no-ovs] [--force]
    lab.py exec h1 -- netplumb status
    lab.py status
    lab.py restart-agent h2 [--kill]
    lab.py ovs restart h1 [--kill] [--daemon ovs-vswitchd]   (or: ovs wipe h1)
    lab.py iperf h1 h2
    lab.py down

From Python (tests/fixtures/lab.py does the sys.path part):

    sys.path.insert(0, "deploy/lab")
    from lab import Lab
    lab = Lab("nplab", 3)
    lab.up()
    try:
        lab.exec("h1", ["ping", "-c1", lab.hosts[1].underlay_address])
        with lab.client("h1") as np:   # a unix socket path works across namespaces
            print(np.status())
    finally:
        lab.down()

The lab is tooling, not the agent: it runs ``ip``, ``sysctl``, ``ethtool`` and
the OVS programs with argument lists (never a shell), only inside namespaces
it made (``ip -n``, ``ip netns exec``), and never touches the root namespace's
interfaces, addresses or routes. Only the standard library is imported at
module level, so the system ``python3`` runs it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAB_ROOT = Path(os.environ.get("NETPLUMB_LAB_ROOT", "/run/netplumb-lab"))
REPO = Path(__file__).resolve().parents[2]
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
DEFAULT_PREFIX = "nplab"
PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,23}")
UNDERLAY4 = "198.18.0.{}"  # /24, host i -> .10+i
UNDERLAY6 = "2001:db8:18::{}"  # /64
MAX_HOSTS = 240
FABRIC_BRIDGE = "fabric0"
# Cluster labs: etcd runs in the fabric namespace, on this address of the
# fabric bridge (member i listens on ETCD_CLIENT_PORT + 2*i).
ETCD_ADDRESS = "198.18.0.2"
ETCD_CLIENT_PORT = 2379
PHY_BRIDGE = "br-phy"
STATE_FILE = "lab.json"
# Programs the lab runs (the agent and the CLI come from the virtualenv).
NEEDS = ("ip", "sysctl")
NEEDS_OVS = ("ovsdb-tool", "ovsdb-server", "ovs-vsctl", "ovs-vswitchd", "ovs-appctl")


class LabError(Exception):
    """A lab operation failed; the message names the command and its stderr."""


class LabExists(LabError):
    """``up`` found a lab with the same prefix."""


def _venv_bin() -> Path:
    """The directory holding netplumbd and netplumb: the repository's
    virtualenv, else the running interpreter's own bin directory."""
    for candidate in (REPO / ".venv" / "bin", Path(sys.executable).parent):
        if (candidate / "netplumbd").exists():
            return candidate
    found = shutil.which("netplumbd")
    if found:
        return Path(found).parent
    return REPO / ".venv" / "bin"


def _cmdline(argv: Sequence[str]) -> str:
    return " ".join(argv)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program (no shell), capture its output; with ``check`` a failure
    raises LabError naming the command and quoting its stderr."""
    try:
        res = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LabError(f"{argv[0]}: program not found (is it installed?)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:g}s: {_cmdline(argv)}") from None
    if check and res.returncode != 0:
        detail = (res.stderr or res.stdout).strip()
        raise LabError(f"command failed (exit {res.returncode}): {_cmdline(argv)}\n{detail}")
    return res


def list_netns() -> list[str]:
    res = run(["ip", "netns", "list"], check=False)
    # "name" or "name (id: 3)"
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def lab_namespaces(prefix: str) -> list[str]:
    """The namespaces of the lab with this prefix, hosts first, fabric last."""
    pat = re.compile(re.escape(prefix) + r"-(fabric|h\d+)")
    found = [ns for ns in list_netns() if pat.fullmatch(ns)]
    return sorted(found, key=lambda ns: (ns.endswith("-fabric"), ns))


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # "pid (comm) S ...": the state follows the last ')'.
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X", "")


def _pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Wait until none of ``pids`` is alive; returns the ones still alive."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while left:
        left = {p for p in left if _pid_alive(p)}
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return left


def _terminate(pids: Iterable[int], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after ``grace`` seconds."""
    pids = {p for p in pids if p != os.getpid()}
    for p in pids:
        _signal(p, signal.SIGTERM)
    left = _wait_gone(pids, grace)
    for p in left:
        _signal(p, signal.SIGKILL)
    _wait_gone(left, 5.0)


LAB_DAEMONS = ("netplumbd", "ovsdb-server", "ovs-vswitchd", "iperf3")
OVS_DAEMONS = ("ovsdb-server", "ovs-vswitchd")


def _ovs_daemons(daemons: Sequence[str]) -> tuple[str, ...]:
    """``daemons`` checked against the OVS daemons the lab runs."""
    unknown = [d for d in daemons if d not in OVS_DAEMONS]
    if unknown or not daemons:
        raise LabError(f"OVS daemons: {', '.join(OVS_DAEMONS)}, not {', '.join(daemons) or '()'}")
    return tuple(daemons)


def _daemons_mentioning(text: str) -> list[int]:
    """Lab daemons (netplumbd, OVS, iperf3) whose command line contains
    ``text``, like ``pgrep -f``: those left behind when their namespace was
    deleted by hand. Anything else (a ``tail -f`` of a log) is left alone."""
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        cmd = _pid_cmdline(int(entry))
        # argv[0], or argv[1] for a script run by its interpreter (netplumbd)
        programs = {os.path.basename(arg) for arg in cmd.split(" ")[:2]}
        if text in cmd and programs & set(LAB_DAEMONS):
            out.append(int(entry))
    return out


@dataclass
class Host:
    """One lab host. Paths are strings so they drop into argument lists."""

    index: int
    name: str  # h1, h2, ...
    netns: str  # <prefix>-h<i>
    underlay_address: str  # 198.18.0.<10+i>
    underlay_address6: str  # 2001:db8:18::<10+i>
    underlay_dev: str  # br-phy (OVS) or eth0
    fabric_port: str  # h<i>: the other veth end, in the fabric namespace
    dir: str  # WORKDIR/h<i>
    socket: str  # netplumbd's API socket
    state_dir: str
    log_path: str  # netplumbd's stdout+stderr
    pidfile: str  # netplumbd's pid
    ovs_dir: str  # OVS_RUNDIR of this host's OVS daemons (db, sockets, pids, logs)
    ovsdb: str  # unix:WORKDIR/h<i>/ovs/db.sock
    ovs: bool

    @property
    def underlay_cidr(self) -> str:
        return f"{self.underlay_address}/24"

    @property
    def underlay_cidr6(self) -> str:
        return f"{self.underlay_address6}/64"

    @property
    def db_socket(self) -> str:
        return os.path.join(self.ovs_dir, "db.sock")

    @property
    def db_file(self) -> str:
        return os.path.join(self.ovs_dir, "conf.db")

    def ovs_file(self, name: str) -> str:
        return os.path.join(self.ovs_dir, name)

    def agent_pid(self) -> int | None:
        """netplumbd's pid if it is running (checked against its command line)."""
        pid = _read_pid(Path(self.pidfile))
        if pid and _pid_alive(pid) and self.socket in _pid_cmdline(pid):
            return pid
        return None

    def ovs_pid(self, daemon: str) -> int | None:
        """The pid of ``ovsdb-server`` or ``ovs-vswitchd`` if it is running."""
        pid = _read_pid(Path(self.ovs_file(f"{daemon}.pid")))
        if pid and _pid_alive(pid) and daemon in _pid_cmdline(pid):
            return pid
        return None

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["agent_pid"] = self.agent_pid()
        if self.ovs:
            d["ovsdb_server_pid"] = self.ovs_pid("ovsdb-server")
            d["ovs_vswitchd_pid"] = self.ovs_pid("ovs-vswitchd")
        return d


class Lab:
    """A lab of ``hosts`` hosts named by ``prefix``.

    ``ovs``: run OVS per host (br-phy holds eth0 and the underlay address);
    ``mtu``: underlay MTU; ``ovs_tso``: OVS ``userspace-tso-enable`` (OVS
    calls it experimental; off by default); ``agent_args``: extra netplumbd
    flags; ``agent_env``: extra environment for netplumbd; ``bin_dir``: where
    netplumbd and netplumb are (default: the repository's .venv/bin).

    ``.hosts`` is the list of Host objects; ``.timings`` the durations of
    the last ``up`` (seconds).
    """

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        hosts: int = 2,
        ovs: bool = True,
        *,
        mtu: int = 1500,
        ovs_tso: bool = False,
        agent_args: Sequence[str] = (),
        agent_env: dict[str, str] | None = None,
        root: Path | str = LAB_ROOT,
        bin_dir: Path | str | None = None,
        cluster: bool = False,
        etcd_members: int = 1,
        cluster_ttl: int = 3,
    ) -> None:
        if not PREFIX_RE.fullmatch(prefix):
            raise LabError(
                f"prefix {prefix!r}: 1-24 characters of letters, digits, '-' and '_', "
                "starting with a letter or digit"
            )
        if not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"hosts: between 1 and {MAX_HOSTS}, not {hosts}")
        if not 1280 <= mtu <= 65000:
            raise LabError(f"mtu {mtu}: between 1280 and 65000")
        self.prefix = prefix
        self.nhosts = hosts
        self.ovs = ovs
        self.mtu = mtu
        self.ovs_tso = ovs_tso
        self.agent_args = list(agent_args)
        self.agent_env = dict(agent_env or {})
        if not 1 <= etcd_members <= 5:
            raise LabError(f"etcd_members: between 1 and 5, not {etcd_members}")
        self.cluster = cluster
        self.etcd_members = etcd_members
        self.cluster_ttl = cluster_ttl
        self.root = Path(root)
        self.bin_dir = Path(bin_dir) if bin_dir else _venv_bin()
        self.workdir = self.root / prefix
        self.fabric = f"{prefix}-fabric"
        self.hosts = [self._host(i) for i in range(1, hosts + 1)]
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"Lab({self.prefix!r}, {self.nhosts}, ovs={self.ovs})"

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- description ---------------------------------------------------

    @property
    def netplumbd(self) -> str:
        return str(self.bin_dir / "netplumbd")

    @property
    def netplumb_cli(self) -> str:
        return str(self.bin_dir / "netplumb")

    def _host(self, i: int) -> Host:
        d = self.workdir / f"h{i}"
        ovs_dir = d / "ovs"
        return Host(
            index=i,
            name=f"h{i}",
            netns=f"{self.prefix}-h{i}",
            underlay_address=UNDERLAY4.format(10 + i),
            underlay_address6=UNDERLAY6.format(10 + i),
            underlay_dev=PHY_BRIDGE if self.ovs else "eth0",
            fabric_port=f"h{i}",
            dir=str(d),
            socket=str(d / "netplumbd.sock"),
            state_dir=str(d / "state"),
            log_path=str(d / "netplumbd.log"),
            pidfile=str(d / "netplumbd.pid"),
            ovs_dir=str(ovs_dir),
            ovsdb=f"unix:{ovs_dir / 'db.sock'}",
            ovs=self.ovs,
        )

    def host(self, host: Host | str | int) -> Host:
        """A host by object, name ("h2"), number string ("2") or index (2)."""
        if isinstance(host, Host):
            return host
        key = str(host)
        m = re.fullmatch(r"h?(\d+)", key) or re.fullmatch(re.escape(self.prefix) + r"-h(\d+)", key)
        if m and 1 <= int(m.group(1)) <= len(self.hosts):
            return self.hosts[int(m.group(1)) - 1]
        names = ", ".join(h.name for h in self.hosts)
        raise LabError(f"no host {key!r} in lab {self.prefix} (hosts: {names})")

    def env(self, host: Host | str | int) -> dict[str, str]:
        """The environment commands get in a host: its netplumbd socket, its
        OVS run directory (so plain ovs-vsctl / ovs-appctl talk to its OVS),
        and the virtualenv's bin directory first on PATH. ("fabric": PATH only.)"""
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        if host == "fabric":
            for key in ("NETPLUMB_SOCKET", *self._ovs_env(self.hosts[0])):
                env.pop(key, None)
            return env
        h = self.host(host)
        env["NETPLUMB_SOCKET"] = h.socket
        env.update(self._ovs_env(h))
        return env

    def _ovs_env(self, h: Host) -> dict[str, str]:
        # OVS_RUNDIR also holds the per-bridge mgmt/snoop sockets: without it
        # every host's ovs-vswitchd would use /var/run/openvswitch/br-phy.mgmt.
        return {
            "OVS_RUNDIR": h.ovs_dir,
            "OVS_LOGDIR": h.ovs_dir,
            "OVS_DBDIR": h.ovs_dir,
            "OVS_SYSCONFDIR": h.ovs_dir,
        }

    def _describe(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "hosts": self.nhosts,
            "ovs": self.ovs,
            "mtu": self.mtu,
            "ovs_tso": self.ovs_tso,
            "agent_args": self.agent_args,
            "bin_dir": str(self.bin_dir),
            "cluster": self.cluster,
            "etcd_members": self.etcd_members,
            "cluster_ttl": self.cluster_ttl,
            "fabric": self.fabric,
        }

    @classmethod
    def load(cls, prefix: str = DEFAULT_PREFIX, root: Path = LAB_ROOT) -> Lab:
        """The lab ``up`` recorded under ROOT/PREFIX/lab.json."""
        path = Path(root) / prefix / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"no lab with prefix {prefix!r} ({path} does not exist)") from None
        except (OSError, ValueError) as e:
            raise LabError(f"cannot read {path}: {e}") from None
        return cls(
            doc["prefix"],
            int(doc["hosts"]),
            ovs=bool(doc["ovs"]),
            mtu=int(doc.get("mtu", 1500)),
            ovs_tso=bool(doc.get("ovs_tso", False)),
            agent_args=list(doc.get("agent_args", [])),
            root=Path(root),
            bin_dir=Path(doc.get("bin_dir") or _venv_bin()),
            cluster=bool(doc.get("cluster", False)),
            etcd_members=int(doc.get("etcd_members", 1)),
            cluster_ttl=int(doc.get("cluster_ttl", 3)),
        )

    def exists(self) -> bool:
        return bool(lab_namespaces(self.prefix)) or self.workdir.exists()

    # -- up --------------------------------------------------------------

    def check_requirements(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veth, OVS)")
        missing = [p for p in NEEDS + (NEEDS_OVS if self.ovs else ()) if not shutil.which(p)]
        if self.ovs and not os.path.exists(OVS_SCHEMA):
            missing.append(OVS_SCHEMA)
        if not os.path.exists(self.netplumbd):
            missing.append(self.netplumbd)
        if missing:
            raise LabError("missing: " + ", ".join(missing))

    def up(self, force: bool = False) -> Lab:
        """Build the lab. If one with this prefix exists: LabExists, or with
        ``force`` tear it down first. On any failure everything made so far
        is removed and LabError raised with the failing command's stderr."""
        self.check_requirements()
        if self.exists():
            if not force:
                raise LabExists(
                    f"a lab with prefix {self.prefix!r} exists "
                    f"(namespaces: {', '.join(lab_namespaces(self.prefix)) or 'none'}; "
                    f"workdir {self.workdir}); run 'down' first or use --force"
                )
            self.down()
        t0 = time.monotonic()
        try:
            self._up()
        except BaseException:
            # KeyboardInterrupt included: nothing half-made stays behind.
            self.down()
            raise
        self.timings["up"] = time.monotonic() - t0
        return self

    def _up(self) -> None:
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, mode=0o755)
        (self.workdir / STATE_FILE).write_text(json.dumps(self._describe(), indent=2) + "\n")
        # The fabric first and alone: the first `ip netns add` also makes
        # /run/netns a shared mount, which should not race.
        run(["ip", "netns", "add", self.fabric])
        run(["ip", "-n", self.fabric, "link", "set", "lo", "up"])
        # fmt: off
        run(["ip", "-n", self.fabric, "link", "add", FABRIC_BRIDGE, "mtu", str(self.mtu),
             "type", "bridge"])
        # fmt: on
        run(["ip", "-n", self.fabric, "link", "set", FABRIC_BRIDGE, "up"])
        if self.cluster:
            run(
                ["ip", "-n", self.fabric, "addr", "add", f"{ETCD_ADDRESS}/24", "dev", FABRIC_BRIDGE]
            )
            self.start_etcd()
        self.timings["fabric"] = time.monotonic() - t0
        # Per host: namespace, underlay, OVS, then the agent is spawned.
        # Hosts are independent of each other, so they are built in parallel;
        # then we wait for every agent to answer its health check.
        self._parallel(self._build_host, self.hosts)
        self.timings["hosts"] = time.monotonic() - t0
        self._parallel(lambda h: self._wait_agent(h, self._procs[h.name], 30.0), self.hosts)
        self.timings["agents"] = time.monotonic() - t0

    def _parallel(self, fn: Any, hosts: Sequence[Host]) -> None:
        """fn(host) for every host, in threads; every call is waited for, and
        the first failure (in host order) is raised."""
        workers = max(1, min(len(hosts), 16))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="lab") as pool:
            futures = [pool.submit(fn, h) for h in hosts]
            concurrent.futures.wait(futures)
        for h, fut in zip(hosts, futures, strict=True):
            exc = fut.exception()
            if exc is not None:
                if isinstance(exc, LabError):
                    raise LabError(f"{h.name}: {exc}") from exc
                raise exc

    def _build_host(self, h: Host) -> None:
        os.makedirs(h.dir, mode=0o755)
        os.makedirs(h.state_dir, mode=0o700)
        ns = h.netns
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # The veth is made inside the fabric namespace with its peer put
        # straight into the host: nothing ever appears in the root namespace
        # (where an eth0 already exists).
        mtu = str(self.mtu)
        # fmt: off
        run(["ip", "-n", self.fabric, "link", "add", h.fabric_port, "mtu", mtu, "type", "veth",
             "peer", "name", "eth0", "mtu", mtu, "netns", ns])
        # fmt: on
        run(["ip", "-n", self.fabric, "link", "set", h.fabric_port, "master", FABRIC_BRIDGE, "up"])
        if self.ovs:
            # What the fabric namespace itself sends (etcd, in a cluster lab)
            # leaves its veth with the TCP/UDP checksum left to "offload":
            # ovs-vswitchd reads it from eth0 as it is and hands it to the
            # br-phy tap unfinished, and the host's kernel drops it -- ping
            # works, TCP hangs. Checksums are computed before the veth instead.
            # fmt: off
            run(["ip", "netns", "exec", self.fabric, "ethtool", "-K", h.fabric_port,
                 "tx", "off"])
            # fmt: on
            self._build_host_ovs(h)
        else:
            self._address(h, "eth0")
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self._spawn_agent(h)

    def _address(self, h: Host, dev: str) -> None:
        run(["ip", "-n", h.netns, "addr", "replace", h.underlay_cidr, "dev", dev])
        run(["ip", "-n", h.netns, "-6", "addr", "replace", h.underlay_cidr6, "dev", dev, "nodad"])

    def _build_host_ovs(self, h: Host) -> None:
        ns = h.netns
        # eth0 becomes an OVS port, read by ovs-vswitchd through an AF_PACKET
        # socket -- but the kernel still receives every frame on it too. With
        # the address on br-phy in the same namespace, the kernel would answer
        # each packet twice (once for br-phy, once for eth0: ping shows
        # DUP!s, TCP sees duplicates). So eth0 is made deaf: no ARP, no IPv6,
        # strict reverse-path filtering (the route back is via br-phy).
        # fmt: off
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
             "net.ipv6.conf.eth0.disable_ipv6=1", "net.ipv4.conf.eth0.rp_filter=1"])
        # fmt: on
        run(["ip", "-n", ns, "link", "set", "eth0", "arp", "off"])
        os.makedirs(h.ovs_dir, mode=0o755)
        run(["ovsdb-tool", "create", h.db_file, OVS_SCHEMA])
        self._start_ovs_daemons(h)
        self._build_phy(h)

    def _build_phy(self, h: Host) -> None:
        """br-phy holding eth0, with the underlay address: what ``up`` puts in
        a fresh OVS database (and ``wipe_ovs`` again in an empty one)."""
        ns = h.netns
        mac = self._mac(h, "eth0")
        # fmt: off
        run([
            *self._vsctl(h),
            "--", "--may-exist", "add-br", PHY_BRIDGE,
            "--", "set", "bridge", PHY_BRIDGE, "datapath_type=netdev", "fail_mode=standalone",
            f"other_config:hwaddr={mac}", f"external_ids:bridge-id={PHY_BRIDGE}",
            "--", "--may-exist", "add-port", PHY_BRIDGE, "eth0",
            "--", "set", "interface", PHY_BRIDGE, f"mtu_request={self.mtu}",
        ])
        # fmt: on
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self._address(h, PHY_BRIDGE)
        run(["ip", "-n", ns, "link", "set", PHY_BRIDGE, "up"])

    def _vsctl(self, h: Host) -> list[str]:
        return ["ovs-vsctl", f"--db=unix:{h.db_socket}", "--timeout=30"]

    def _mac(self, h: Host, dev: str) -> str:
        out = run(["ip", "-n", h.netns, "-j", "link", "show", "dev", dev]).stdout
        return str(json.loads(out)[0]["address"])

    def _start_ovs_daemons(self, h: Host, daemons: Sequence[str] = OVS_DAEMONS) -> None:
        """ovsdb-server, then ovs-vswitchd (or only those named in ``daemons``),
        in the host's namespace, with their files under the host's OVS dir.
        Control sockets keep OVS's default names in OVS_RUNDIR
        (ovs-vswitchd.<pid>.ctl), so plain ``ovs-appctl`` works in ``lab.py
        exec``."""
        env = dict(os.environ, **self._ovs_env(h))
        exec_ns = ["ip", "netns", "exec", h.netns]
        db = f"unix:{h.db_socket}"
        if "ovsdb-server" in daemons:
            # fmt: off
            run([*exec_ns, "ovsdb-server", h.db_file, f"--remote=punix:{h.db_socket}",
                 f"--pidfile={h.ovs_file('ovsdb-server.pid')}",
                 f"--log-file={h.ovs_file('ovsdb-server.log')}", "-vconsole:err", "--detach"],
                env=env)
            # fmt: on
            run(["ovs-vsctl", f"--db={db}", "--no-wait", "init"], env=env)
            if self.ovs_tso:
                tso = "other_config:userspace-tso-enable=true"
                run(
                    ["ovs-vsctl", f"--db={db}", "--no-wait", "set", "open_vswitch", ".", tso],
                    env=env,
                )
        if "ovs-vswitchd" in daemons:
            # fmt: off
            run([*exec_ns, "ovs-vswitchd", db,
                 f"--pidfile={h.ovs_file('ovs-vswitchd.pid')}",
                 f"--log-file={h.ovs_file('ovs-vswitchd.log')}", "-vconsole:err", "--detach"],
                env=env)
            # fmt: on

    # -- etcd (cluster labs) ----------------------------------------------

    @property
    def etcd_endpoints(self) -> list[str]:
        return [
            f"http://{ETCD_ADDRESS}:{ETCD_CLIENT_PORT + 2 * i}" for i in range(self.etcd_members)
        ]

    def _etcd_argv(self, i: int) -> list[str]:
        client = ETCD_CLIENT_PORT + 2 * i
        members = ",".join(
            f"e{j}=http://{ETCD_ADDRESS}:{ETCD_CLIENT_PORT + 2 * j + 1}"
            for j in range(self.etcd_members)
        )
        # fmt: off
        return [
            "etcd", "--name", f"e{i}", "--data-dir", str(self.workdir / f"etcd{i}"),
            "--listen-client-urls", f"http://{ETCD_ADDRESS}:{client}",
            "--advertise-client-urls", f"http://{ETCD_ADDRESS}:{client}",
            "--listen-peer-urls", f"http://{ETCD_ADDRESS}:{client + 1}",
            "--initial-advertise-peer-urls", f"http://{ETCD_ADDRESS}:{client + 1}",
            "--initial-cluster", members, "--initial-cluster-token", self.prefix,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        # fmt: on

    def start_etcd(self, members: Sequence[int] | None = None, wait: bool = True) -> float:
        """Start the lab's etcd members (all, or those numbered in
        ``members``) in the fabric namespace; returns when they answer (the
        time they came back)."""
        which = list(range(self.etcd_members)) if members is None else list(members)
        for i in which:
            log = open(self.workdir / f"etcd{i}.log", "ab")
            with log:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.fabric, *self._etcd_argv(i)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    close_fds=True,
                )
            self._procs[f"etcd{i}"] = proc
        if not wait:
            return time.monotonic()
        deadline = time.monotonic() + 30
        for i in which:
            url = self.etcd_endpoints[i] + "/health"
            while True:
                res = run(
                    ["ip", "netns", "exec", self.fabric, "curl", "-s", "-m", "1", url]
                    if shutil.which("curl")
                    else [sys.executable, "-c", _HEALTH_PY, url],
                    check=False,
                    timeout=10,
                )
                if '"true"' in res.stdout:
                    break
                proc = self._procs[f"etcd{i}"]
                if proc.poll() is not None and self.etcd_members == 1:
                    raise LabError(f"etcd e{i} exited at start (see {self.workdir}/etcd{i}.log)")
                if time.monotonic() > deadline:
                    raise LabError(f"etcd e{i} does not answer at {url}")
                time.sleep(0.1)
        return time.monotonic()

    def stop_etcd(self, members: Sequence[int] | None = None, sig: int = signal.SIGTERM) -> None:
        """Stop etcd members (all by default; SIGKILL for a crash)."""
        which = list(range(self.etcd_members)) if members is None else list(members)
        for i in which:
            proc = self._procs.pop(f"etcd{i}", None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    # -- agent -----------------------------------------------------------

    def agent_argv(self, host: Host | str | int) -> list[str]:
        h = self.host(host)
        # fmt: off
        return [
            self.netplumbd,
            "--socket", h.socket,
            "--state-dir", h.state_dir,
            "--ovsdb", h.ovsdb,
            "--underlay-address", h.underlay_address,
            "--log-level", "debug",
            *(["--etcd", ",".join(self.etcd_endpoints), "--host-name", h.name,
                "--cluster-ttl", str(self.cluster_ttl)] if self.cluster else []),
            *self.agent_args,
        ]
        # fmt: on

    def _spawn_agent(self, h: Host, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full_env = self.env(h)
        full_env.update(self.agent_env)
        full_env.update(env or {})
        with open(h.log_path, "ab") as log:
            # `ip netns exec` execs netplumbd (no fork), so the pid is netplumbd's.
            # Its own session: a Ctrl-C at the terminal does not reach it.
            proc = subprocess.Popen(
                ["ip", "netns", "exec", h.netns, *self.agent_argv(h)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=full_env,
                start_new_session=True,
                close_fds=True,
            )
        self._procs[h.name] = proc
        Path(h.pidfile).write_text(f"{proc.pid}\n")
        return proc

    def _agent_ready(self, h: Host) -> bool:
        if not os.path.exists(h.socket):
            return False
        try:
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc
        except ImportError:  # the system python3: ask the CLI instead
            res = run(
                [self.netplumb_cli, "--timeout", "2", "status"],
                check=False,
                env=self.env(h),
                timeout=10,
            )
            return res.returncode == 0
        try:
            with grpc.insecure_channel(f"unix:{h.socket}") as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    def _wait_agent(self, h: Host, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc is not None and proc.poll() is not None:
                raise LabError(
                    f"netplumbd exited with status {proc.returncode} "
                    f"(log {h.log_path}):\n{self.agent_log(h, tail=30)}"
                )
            if self._agent_ready(h):
                return
            if time.monotonic() >= deadline:
                raise LabError(
                    f"netplumbd not ready after {timeout:g}s (log {h.log_path}):\n"
                    f"{self.agent_log(h, tail=30)}"
                )
            time.sleep(0.05)

    def agent_log(self, host: Host | str | int, tail: int | None = None) -> str:
        h = self.host(host)
        try:
            lines = Path(h.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:] if tail else lines)

    def agent_pid(self, host: Host | str | int) -> int | None:
        return self.host(host).agent_pid()

    def stop_agent(
        self, host: Host | str | int, sig: int = signal.SIGTERM, timeout: float = 15.0
    ) -> int | None:
        """Signal the host's netplumbd (SIGTERM, SIGKILL, ...) and wait until
        it is gone (SIGKILL after ``timeout``). Returns its exit status when
        this Lab object started it (else None). No-op if it is not running."""
        h = self.host(host)
        proc = self._procs.pop(h.name, None)
        pid = h.agent_pid()
        rc: int | None = None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                rc = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        elif proc is not None:
            rc = proc.returncode
        elif pid is not None:
            _signal(pid, sig)
            if _wait_gone([pid], timeout):
                _signal(pid, signal.SIGKILL)
                _wait_gone([pid], 5.0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(h.pidfile)
        return rc

    def start_agent(
        self,
        host: Host | str | int,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
        wait: bool = True,
    ) -> int:
        """Start the host's netplumbd and wait until it serves (unless not
        ``wait``: then return at once, while it starts); returns its pid."""
        h = self.host(host)
        if h.agent_pid() is not None:
            raise LabError(f"{h.name}: netplumbd is already running (pid {h.agent_pid()})")
        proc = self._spawn_agent(h, env)
        if wait:
            self._wait_agent(h, proc, timeout)
        return proc.pid

    def restart_agent(
        self, host: Host | str | int, sig: int = signal.SIGTERM, env: dict[str, str] | None = None
    ) -> int:
        self.stop_agent(host, sig)
        return self.start_agent(host, env)

    # -- OVS -------------------------------------------------------------

    def stop_ovs(
        self,
        host: Host | str | int,
        sig: int = signal.SIGTERM,
        daemons: Sequence[str] = OVS_DAEMONS,
    ) -> None:
        """Stop the host's ovs-vswitchd, then its ovsdb-server (or only those
        named in ``daemons``; SIGKILL for a crash). br-phy (a tap device) and
        its address stay; nothing forwards until start_ovs."""
        h = self._ovs_host(host)
        wanted = _ovs_daemons(daemons)
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            if daemon not in wanted:
                continue
            pid = h.ovs_pid(daemon)
            if pid is None:
                continue
            _signal(pid, sig)
            if _wait_gone([pid], 10.0):
                _signal(pid, signal.SIGKILL)
                _wait_gone([pid], 5.0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(h.ovs_file(f"{daemon}.pid"))
            if daemon == "ovsdb-server":
                # A killed server leaves its socket file: nothing may look
                # connectable while it is down.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(h.db_socket)

    def start_ovs(self, host: Host | str | int, daemons: Sequence[str] = OVS_DAEMONS) -> float:
        """Start the host's ovsdb-server and ovs-vswitchd again (or only those
        named in ``daemons``; the others must be running), on the kept
        database, and make sure br-phy is up with its address. Returns once
        ovs-vswitchd has applied the whole database; the value is the
        ``time.monotonic()`` at which the daemons were started (serving)."""
        h = self._ovs_host(host)
        wanted = _ovs_daemons(daemons)
        running = [d for d in wanted if h.ovs_pid(d)]
        if running:
            raise LabError(f"{h.name}: already running: {', '.join(running)}")
        missing = [d for d in OVS_DAEMONS if d not in wanted and not h.ovs_pid(d)]
        if missing:
            raise LabError(f"{h.name}: not running, start it too: {', '.join(missing)}")
        self._start_ovs_daemons(h, wanted)
        started = time.monotonic()
        # A change made without --no-wait returns once ovs-vswitchd has applied
        # the whole database, so br-phy and its ports exist again.
        stamp = f"external_ids:lab-started={time.time_ns()}"
        run([*self._vsctl(h), "--", "set", "open_vswitch", ".", stamp])
        self._address(h, PHY_BRIDGE)
        run(["ip", "-n", h.netns, "link", "set", PHY_BRIDGE, "up"])
        return started

    def wipe_ovs(self, host: Host | str | int, sig: int = signal.SIGTERM) -> float:
        """Lose the host's OVS database: stop both daemons, delete the
        database file, create an empty one and start again, with only what
        ``up`` puts there (br-phy holding eth0, the underlay address). Every
        bridge and port anything else made is gone from OVSDB. Returns the
        ``time.monotonic()`` at which the daemons were started again (before
        br-phy was rebuilt)."""
        h = self._ovs_host(host)
        self.stop_ovs(h, sig)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(h.db_file)
        run(["ovsdb-tool", "create", h.db_file, OVS_SCHEMA])
        self._start_ovs_daemons(h)
        started = time.monotonic()
        self._build_phy(h)
        return started

    def _ovs_host(self, host: Host | str | int) -> Host:
        h = self.host(host)
        if not h.ovs:
            raise LabError(f"lab {self.prefix} runs without OVS (--no-ovs)")
        return h

    def vsctl(self, host: Host | str | int, *args: str) -> subprocess.CompletedProcess[str]:
        """ovs-vsctl against the host's OVS database."""
        return run(self._vsctl(self._ovs_host(host)) + list(args))

    def appctl(self, host: Host | str | int, *args: str) -> subprocess.CompletedProcess[str]:
        """ovs-appctl to the host's ovs-vswitchd (e.g. "ovs/route/show")."""
        h = self._ovs_host(host)
        return run(["ovs-appctl", *args], env=self.env(h))

    # -- running things in hosts ----------------------------------------

    def exec_argv(self, host: Host | str | int, argv: Sequence[str]) -> list[str]:
        if host == "fabric":
            return ["ip", "netns", "exec", self.fabric, *argv]
        return ["ip", "netns", "exec", self.host(host).netns, *argv]

    def exec(
        self,
        host: Host | str | int,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the host's namespace ("fabric" for the fabric) with
        NETPLUMB_SOCKET and OVS_RUNDIR set for that host."""
        base = self.env(host)
        base.update(env or {})
        return run(self.exec_argv(host, argv), check=check, timeout=timeout, env=base, input=input)

    def netplumb(
        self, host: Host | str | int, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The ``netplumb`` command in the host's namespace, talking to its agent."""
        return self.exec(host, [self.netplumb_cli, *args], check=check, timeout=timeout)

    def client(self, host: Host | str | int, timeout: float = 30.0, transport: str = "grpc") -> Any:
        """A netplumb.cli.client.Client for the host's agent. It works from
        any namespace: a unix socket is found by its path, not by network
        namespace."""
        from netplumb.cli.client import Client

        return Client(self.host(host).socket, timeout=timeout, transport=transport)

    def ping(
        self, src: Host | str | int, dst: str, count: int = 1, wait: float = 2.0
    ) -> subprocess.CompletedProcess[str]:
        """Ping ``dst`` (an address, or a host whose underlay address to use)."""
        addr = dst if re.fullmatch(r"[0-9a-fA-F.:]+", dst) else self.host(dst).underlay_address
        return self.exec(
            src,
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", f"{wait:g}", addr],
            check=False,
            timeout=wait * count + 10,
        )

    def iperf(
        self,
        client: Host | str | int = "h1",
        server: Host | str | int = "h2",
        seconds: float = 3.0,
        port: int = 5201,
    ) -> dict[str, float]:
        """One TCP stream client -> server over the underlay addresses
        (iperf3); returns {"gbps": ..., "retransmits": ...}."""
        c, s = self.host(client), self.host(server)
        srv = subprocess.Popen(
            self.exec_argv(s, ["iperf3", "-s", "-1", "-B", s.underlay_address, "-p", str(port)]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            argv = ["iperf3", "-J", "-c", s.underlay_address, "-p", str(port)]
            argv += ["-t", f"{seconds:g}", "--connect-timeout", "1000"]
            deadline = time.monotonic() + 5
            while True:
                res = self.exec(c, argv, check=False, timeout=seconds + 30)
                try:
                    doc = json.loads(res.stdout)
                except ValueError:
                    doc = {"error": res.stderr.strip() or "no JSON output"}
                # iperf3 3.12 -J exits 0 even when it could not connect.
                error = doc.get("error") or ("" if res.returncode == 0 else "failed")
                refused = "connection refused" in error.lower()
                if not refused or time.monotonic() >= deadline or srv.poll() is not None:
                    break
                time.sleep(0.1)  # the server was not listening yet
            end = doc.get("end", {})
            if error or "sum_received" not in end or "sum_sent" not in end:
                raise LabError(
                    f"iperf3 {c.name} -> {s.name} failed: {error or 'no result'}\n"
                    f"{res.stdout[-2000:]}{res.stderr}"
                )
            return {
                "gbps": end["sum_received"]["bits_per_second"] / 1e9,
                "retransmits": float(end["sum_sent"].get("retransmits", 0)),
            }
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.wait()
            if srv.stderr:
                srv.stderr.close()

    # -- status / down ---------------------------------------------------

    def status(self) -> dict[str, Any]:
        present = set(lab_namespaces(self.prefix))
        hosts = []
        for h in self.hosts:
            d = h.to_json()
            d["netns_exists"] = h.netns in present
            hosts.append(d)
        return {
            **self._describe(),
            "workdir": str(self.workdir),
            "fabric_exists": self.fabric in present,
            "hosts": hosts,
        }

    def down(self) -> None:
        """Remove everything of this lab (also of a lab that crashed)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        teardown(self.prefix, self.root)
        for proc in self._procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()


def teardown(prefix: str = DEFAULT_PREFIX, root: Path = LAB_ROOT) -> list[str]:
    """Remove the lab ``prefix`` without trusting any record of it: find its
    namespaces with ``ip netns list``, stop every process in them (agents
    first, then OVS, then anything else), also any process whose command line
    names the workdir, delete the namespaces and the workdir. Returns the
    namespaces removed."""
    if not PREFIX_RE.fullmatch(prefix):
        raise LabError(f"bad prefix {prefix!r}")
    workdir = Path(root) / prefix
    namespaces = lab_namespaces(prefix)
    by_ns: dict[str, list[int]] = {}
    for ns in namespaces:
        res = run(["ip", "netns", "pids", ns], check=False)
        by_ns[ns] = [int(p) for p in res.stdout.split() if p.isdigit()]
    everything = {p for pids in by_ns.values() for p in pids}
    if workdir.exists():
        everything |= set(_daemons_mentioning(str(workdir) + "/"))
    # Agents first (so they do not see OVS vanish under them), then the rest.
    agents = {p for p in everything if "netplumbd" in _pid_cmdline(p)}
    _terminate(agents)
    _terminate(everything - agents)
    errors = []
    for ns in namespaces:
        res = run(["ip", "netns", "del", ns], check=False)
        if res.returncode != 0 and ns in list_netns():
            errors.append(f"ip netns del {ns}: {res.stderr.strip()}")
    if workdir.exists():
        shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        raise LabError("; ".join(errors))
    return namespaces


def _cmd_etcd(args: argparse.Namespace) -> int:
    lab = Lab.load(args.prefix)
    if not lab.cluster:
        print(f"lab.py: lab {lab.prefix} is not a cluster lab (up --cluster)", file=sys.stderr)
        return 2
    if args.action == "stop":
        lab.stop_etcd(args.member, signal.SIGKILL if args.kill else signal.SIGTERM)
        # a loaded lab has no handles on processes started by another lab.py run
        for i in args.member or range(lab.etcd_members):
            for pid in _daemons_mentioning(str(lab.workdir / f"etcd{i}")):
                _signal(pid, signal.SIGKILL if args.kill else signal.SIGTERM)
    else:
        lab.start_etcd(args.member)
    return 0


_HEALTH_PY = (
    "import sys, urllib.request\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=1).read().decode())\n"
    "except Exception as e:\n"
    "    print(e)\n"
)


# -- command line --------------------------------------------------------


def _print_lab(lab: Lab, out: Any = sys.stdout) -> None:
    st = lab.status()
    mode = "OVS (netdev) + br-phy" if lab.ovs else "no OVS (address on eth0)"
    print(f"lab {lab.prefix}: {lab.nhosts} hosts, {mode}, workdir {lab.workdir}", file=out)
    fabric = "up" if st["fabric_exists"] else "MISSING"
    print(f"  fabric: netns {lab.fabric} ({fabric}), bridge {FABRIC_BRIDGE}", file=out)
    for d in st["hosts"]:
        agent = f"netplumbd {d['agent_pid']}" if d["agent_pid"] else "netplumbd DOWN"
        ovs = ""
        if lab.ovs:
            db, vs = d["ovsdb_server_pid"], d["ovs_vswitchd_pid"]
            ovs = f", ovsdb-server {db or 'DOWN'}, ovs-vswitchd {vs or 'DOWN'}"
        ns = "" if d["netns_exists"] else " (netns MISSING)"
        print(
            f"  {d['name']}: netns {d['netns']}{ns}, {d['underlay_address']}/24 on "
            f"{d['underlay_dev']}, {agent}{ovs}",
            file=out,
        )
        print(f"      socket {d['socket']}  log {d['log_path']}", file=out)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(
        args.prefix,
        args.hosts,
        ovs=not args.no_ovs,
        mtu=args.mtu,
        ovs_tso=args.ovs_tso,
        agent_args=args.agent_arg or [],
        cluster=args.cluster,
        etcd_members=args.etcd_members,
    )
    # SIGTERM (and Ctrl-C) during up: remove what was made, as for any failure.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        lab.up(force=args.force)
    except LabExists as e:
        print(f"lab.py: {e}", file=sys.stderr)
        return 3
    t = lab.timings
    _print_lab(lab)
    print(
        f"up in {t['up']:.2f}s (fabric {t['fabric']:.2f}s, hosts {t['hosts']:.2f}s, "
        f"agents ready {t['agents']:.2f}s)"
    )
    print(
        f"try: {sys.argv[0]} exec {'--prefix ' + lab.prefix + ' ' if lab.prefix != DEFAULT_PREFIX else ''}h1 -- netplumb status"
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    removed = teardown(args.prefix)
    print(
        f"lab {args.prefix}: removed {len(removed)} namespaces"
        if removed
        else f"lab {args.prefix}: nothing left"
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        lab = Lab.load(args.prefix)
    except LabError as e:
        left = lab_namespaces(args.prefix)
        if left:
            print(
                f"lab {args.prefix}: no record, but namespaces exist: {', '.join(left)} (run down)"
            )
            return 1
        print(f"lab.py: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(lab.status(), indent=2))
    else:
        _print_lab(lab)
    st = lab.status()
    healthy = st["fabric_exists"] and all(
        h["netns_exists"]
        and h["agent_pid"]
        and (not lab.ovs or (h["ovsdb_server_pid"] and h["ovs_vswitchd_pid"]))
        for h in st["hosts"]
    )
    return 0 if healthy else 1


def _cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("lab.py exec: no command given (lab.py exec h1 -- COMMAND...)", file=sys.stderr)
        return 2
    lab = Lab.load(args.prefix)
    host = args.host if args.host == "fabric" else lab.host(args.host)
    full = lab.exec_argv(host, argv)
    env = lab.env(host)
    sys.stdout.flush()
    os.execvpe(full[0], full, env)  # the command's exit status becomes ours


def _cmd_restart_agent(args: argparse.Namespace) -> int:
    lab = Lab.load(args.prefix)
    h = lab.host(args.host)
    old = h.agent_pid()
    lab.stop_agent(h, signal.SIGKILL if args.kill else signal.SIGTERM)
    t0 = time.monotonic()
    pid = lab.start_agent(h)
    how = "killed" if args.kill else "stopped"
    print(
        f"{h.name}: netplumbd {old or '(not running)'} {how}; {pid} serving after {time.monotonic() - t0:.2f}s"
    )
    return 0


def _cmd_ovs(args: argparse.Namespace) -> int:
    lab = Lab.load(args.prefix)
    h = lab.host(args.host)
    sig = signal.SIGKILL if args.kill else signal.SIGTERM
    daemons = tuple(args.daemon or OVS_DAEMONS)
    if args.action == "wipe":
        if args.daemon:
            raise LabError("wipe stops and starts both OVS daemons: no --daemon")
        lab.wipe_ovs(h, sig)
    elif args.action == "stop":
        lab.stop_ovs(h, sig, daemons)
    elif args.action == "start":
        lab.start_ovs(h, daemons)
    else:
        lab.stop_ovs(h, sig, daemons)
        lab.start_ovs(h, daemons)
    print(f"{h.name}: OVS {args.action} done ({', '.join(daemons)})")
    return 0


def _cmd_iperf(args: argparse.Namespace) -> int:
    lab = Lab.load(args.prefix)
    r = lab.iperf(args.client, args.server, seconds=args.time)
    c, s = lab.host(args.client), lab.host(args.server)
    print(
        f"{c.name} {c.underlay_address} -> {s.name} {s.underlay_address}: "
        f"{r['gbps']:.2f} Gbit/s, {int(r['retransmits'])} retransmits ({args.time:g}s, one stream)"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lab.py",
        description="N netplumb hosts on one machine: namespaces on an underlay bridge, "
        "OVS (userspace) and a netplumbd per host.",
        epilog="examples:\n  lab.py up --hosts 3\n  lab.py exec h1 -- netplumb status\n"
        "  lab.py exec h2 -- ping -c1 198.18.0.11\n  lab.py restart-agent h2 --kill\n"
        "  lab.py down",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_prefix(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--prefix", default=DEFAULT_PREFIX, help="lab name (default nplab)")
        return sp

    up = with_prefix(sub.add_parser("up", help="build a lab"))
    up.add_argument("--hosts", type=int, default=2, help="number of hosts (default 2)")
    up.add_argument("--no-ovs", action="store_true", help="no OVS: the address on eth0")
    up.add_argument("--force", action="store_true", help="tear down an existing lab first")
    up.add_argument("--mtu", type=int, default=1500, help="underlay MTU (default 1500)")
    up.add_argument(
        "--ovs-tso",
        action="store_true",
        help="OVS other_config:userspace-tso-enable=true (experimental in OVS)",
    )
    up.add_argument(
        "--agent-arg",
        action="append",
        metavar="ARG",
        help="extra netplumbd argument (repeat; e.g. --agent-arg=--ovs-datapath-type=netdev)",
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help=f"cluster mode: etcd in the fabric namespace ({ETCD_ADDRESS}) and every agent "
        "joined to it (hosts find each other; no peer add)",
    )
    up.add_argument(
        "--etcd-members", type=int, default=1, help="etcd members with --cluster (default 1)"
    )
    up.set_defaults(fn=_cmd_up)

    et = with_prefix(sub.add_parser("etcd", help="stop / start a cluster lab's etcd members"))
    et.add_argument("action", choices=("stop", "start"))
    et.add_argument("--member", type=int, action="append", help="only member N (0-based; repeat)")
    et.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    et.set_defaults(fn=_cmd_etcd)

    down = with_prefix(sub.add_parser("down", help="remove a lab (also after a crash)"))
    down.set_defaults(fn=_cmd_down)

    st = with_prefix(sub.add_parser("status", help="show a lab; exit 1 if anything is down"))
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=_cmd_status)

    ex = with_prefix(sub.add_parser("exec", help="run a command in a host's namespace"))
    ex.add_argument("host", help="h1, h2, ... (or 1, 2, ...; or fabric)")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    ex.set_defaults(fn=_cmd_exec)

    ra = with_prefix(sub.add_parser("restart-agent", help="restart a host's netplumbd"))
    ra.add_argument("host")
    ra.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    ra.set_defaults(fn=_cmd_restart_agent)

    ovs = with_prefix(
        sub.add_parser("ovs", help="stop / start / restart a host's OVS daemons, or wipe its db")
    )
    ovs.add_argument("action", choices=("stop", "start", "restart", "wipe"))
    ovs.add_argument("host")
    ovs.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    ovs.add_argument(
        "--daemon",
        action="append",
        choices=OVS_DAEMONS,
        help="only this daemon (repeat; default both)",
    )
    ovs.set_defaults(fn=_cmd_ovs)

    ip = with_prefix(sub.add_parser("iperf", help="iperf3 between two hosts' underlay addresses"))
    ip.add_argument("client", nargs="?", default="h1")
    ip.add_argument("server", nargs="?", default="h2")
    ip.add_argument("--time", type=float, default=3.0, help="seconds (default 3)")
    ip.set_defaults(fn=_cmd_iperf)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except LabError as e:
        print(f"lab.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
