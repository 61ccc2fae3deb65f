"""The DHCP driver: runs a DHCP client for an endpoint inside the guest's
network namespace and supervises it.

- The client is the host's ``udhcpc`` (busybox), ``dhclient`` or ``dhcpcd``,
  started through ``netplumb.agent.nsexec`` with an argument list (never a
  shell), joined to the guest namespace by file descriptor.
- udhcpc and dhclient run ``netplumb-dhcp-hook`` instead of their stock
  scripts, which would rewrite the host's resolv.conf; dhcpcd configures the
  interface itself and runs no hook, in a private mount namespace with its
  own /run/dhcpcd.
- One-shot (pipework's ``udhcpc``, ``dhclient``, ``dhcpcd``): the call waits
  for the first lease, then the client exits (udhcpc ``-q``, dhcpcd ``-1``)
  or is stopped (dhclient). Keep (the ``-f`` variants): the client stays,
  renewing the lease for as long as the endpoint lives; if it dies it is
  started again, with backoff. pipework's ``udhcpc-f`` passed ``-q`` and
  so never renewed; this one does.
- A kept client outlives a restart of netplumbd (its pid and start time are
  recorded under ``STATE_DIR/dhcp``) and is adopted by the next one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.model import DhcpSpec
from ..errors import DependencyUnavailable, PreconditionFailed
from . import netns
from .netns import NetnsHandle, in_guest

log = logging.getLogger("netplumb.dhcp")

CLIENTS = ("udhcpc", "dhclient", "dhcpcd")
LEASE_TIMEOUT = 15.0  # seconds an attach waits for the first lease


def client_argv(
    client: str,
    program: list[str],
    ifname: str,
    hostname: str,
    hook: str,
    workdir: str,
    options: tuple[str, ...],
    keep: bool,
) -> list[str]:
    """The client's argument list. Pure."""
    if client == "udhcpc":
        argv = [*program, "-f", "-i", ifname, "-s", hook, "-t", "4", "-T", "1", "-A", "2"]
        if hostname:
            argv += ["-x", f"hostname:{hostname}"]
        if not keep:
            argv += ["-q", "-n"]
        return argv + list(options)
    if client == "dhclient":
        return [
            *program,
            "-d",
            "-4",
            "-sf",
            hook,
            "-pf",
            f"{workdir}/dhclient.pid",
            "-lf",
            f"{workdir}/dhclient.leases",
            *options,
            ifname,
        ]
    if client == "dhcpcd":
        argv = [*program, "-B", "-4", "-A", "-c", "/bin/true"]
        if hostname:
            argv += ["-h", hostname]
        if not keep:
            argv.append("-1")
        return [*argv, *options, ifname]
    raise ValueError(client)


def find_program(client: str) -> list[str] | None:
    """How to run ``client`` here, or None when it is not installed;
    udhcpc may be busybox's applet."""
    path = netns.find_program(client)
    if path:
        return [path]
    if client == "udhcpc":
        busybox = shutil.which("busybox")
        if busybox:
            return [busybox, "udhcpc"]
    return None


@dataclass
class _Client:
    eid: str
    pid: int
    start_time: int  # /proc/PID/stat field 22: tells a reused PID apart
    keep: bool
    proc: subprocess.Popen[bytes] | None = None  # None when adopted
    stopping: bool = False
    started: float = field(default_factory=time.monotonic)


class DhcpDriver:
    def __init__(
        self,
        state_dir: str,
        on_exit: Callable[[str], None] | None = None,
        hook: str = "",
    ) -> None:
        self.dir = Path(state_dir) / "dhcp"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.hook = hook or _find_hook()
        self.on_exit = on_exit
        self._mu = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._failures: dict[str, int] = {}
        self._stop = threading.Event()
        self._adopt()
        self._thread = threading.Thread(target=self._watch, name="dhcp", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- API

    def resolve(self, client: str) -> tuple[str, list[str]]:
        """The client to run for a request (``dhcp``: the first installed)."""
        names = CLIENTS if client == "dhcp" else (client,)
        for name in names:
            program = find_program(name)
            if program is not None:
                return name, program
        raise PreconditionFailed(
            f"DHCP client {client if client != 'dhcp' else 'udhcpc, dhclient or dhcpcd'} "
            "is not installed on this host",
            field="spec.dhcp.client",
            hint="install busybox (udhcpc), isc-dhcp-client (dhclient) or dhcpcd-base",
        )

    def start(
        self,
        eid: str,
        guest: NetnsHandle,
        ifname: str,
        spec: DhcpSpec,
        hostname: str,
        has_lease: Callable[[], bool],
        timeout: float = LEASE_TIMEOUT,
    ) -> None:
        """(Re)start the client of ``eid`` in ``guest`` and wait until
        ``has_lease`` says the interface has its address. Raises
        DependencyUnavailable (and leaves no client) when no lease comes."""
        self.stop(eid, forget_failures=False)  # a restart keeps the backoff growing
        client, program = self.resolve(spec.client)
        work = self.dir / eid
        work.mkdir(mode=0o700, exist_ok=True)
        argv = client_argv(
            client, program, ifname, hostname, self.hook, str(work), spec.options, spec.keep
        )
        binds = []
        if client == "dhcpcd":
            run = work / "run"
            run.mkdir(mode=0o700, exist_ok=True)
            binds.append(f"{run}:/run/dhcpcd")
        with open(work / "client.log", "ab") as out:
            proc = subprocess.Popen(
                in_guest(guest, argv, binds),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(guest.fd,),
                start_new_session=True,  # our signals (Ctrl-C, SIGTERM) are not its
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            )
        c = _Client(eid, proc.pid, _start_time(proc.pid), spec.keep, proc)
        with self._mu:
            self._clients[eid] = c
        self._record(c)
        log.info("dhcp: %s started for endpoint %s (pid %d)", client, eid, proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            if has_lease():
                break
            exited = proc.poll()
            if (exited is not None and exited != 0) or time.monotonic() >= deadline:
                tail = _tail(work / "client.log")  # before stop() removes the directory
                self.stop(eid)
                raise DependencyUnavailable(
                    f"no DHCP lease for {ifname} within {timeout:g} s from {client}"
                    + (f" (it exited with status {exited})" if exited else "")
                    + (f": {tail}" if tail else ""),
                    field="spec.dhcp",
                    hint="is a DHCP server reachable on the interface's network?",
                )
            time.sleep(0.05)
        if not spec.keep:
            if client == "dhclient":
                self.stop(eid)  # it stays in the foreground after a lease
            else:
                try:
                    proc.wait(5)  # udhcpc -q and dhcpcd -1 exit once bound
                except subprocess.TimeoutExpired:
                    self.stop(eid)
                with self._mu:
                    self._clients.pop(eid, None)
                self._forget(eid)

    def running(self, eid: str) -> bool:
        with self._mu:
            c = self._clients.get(eid)
        return c is not None and _alive(c)

    def stop(self, eid: str, forget_failures: bool = True) -> None:
        """Stop the client of ``eid`` (if any) and forget it."""
        with self._mu:
            c = self._clients.pop(eid, None)
            if forget_failures:
                self._failures.pop(eid, None)
        if c is not None:
            c.stopping = True
            _terminate(c)
            log.info("dhcp: client of endpoint %s stopped", eid)
        self._forget(eid)
        shutil.rmtree(self.dir / eid, ignore_errors=True)

    def forget_unknown(self, known: set[str]) -> None:
        """Stop clients of endpoints that no longer exist (adopted from a
        previous run whose endpoint was removed meanwhile)."""
        with self._mu:
            stale = [eid for eid in self._clients if eid not in known]
        for eid in stale:
            self.stop(eid)

    def close(self) -> None:
        """Stop supervising. Kept clients keep running (and renewing): the
        next netplumbd adopts them."""
        self._stop.set()
        self._thread.join(2)

    # ----------------------------------------------------------- internal

    def _record(self, c: _Client) -> None:
        path = self.dir / f"{c.eid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": c.pid, "start_time": c.start_time, "keep": c.keep}))
        os.replace(tmp, path)

    def _forget(self, eid: str) -> None:
        try:
            (self.dir / f"{eid}.json").unlink()
        except FileNotFoundError:
            pass

    def _adopt(self) -> None:
        for path in self.dir.glob("*.json"):
            eid = path.stem
            try:
                doc = json.loads(path.read_text())
                c = _Client(eid, int(doc["pid"]), int(doc["start_time"]), bool(doc["keep"]))
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if _alive(c):
                self._clients[eid] = c
                log.info("dhcp: adopted the running client of endpoint %s (pid %d)", eid, c.pid)
            else:
                path.unlink(missing_ok=True)

    def _watch(self) -> None:
        """Restart kept clients that died, with backoff."""
        while not self._stop.wait(1.0):
            with self._mu:
                dead = [c for c in self._clients.values() if c.keep and not _alive(c)]
            for c in dead:
                if c.stopping:
                    continue
                with self._mu:
                    if self._clients.get(c.eid) is not c:
                        continue
                    del self._clients[c.eid]
                    # a client that ran a while before dying starts the count again
                    ran = time.monotonic() - c.started
                    n = 1 if ran > 60 else self._failures.get(c.eid, 0) + 1
                    self._failures[c.eid] = n
                self._forget(c.eid)
                delay = min(30.0, 2.0 ** (n - 1))
                log.warning(
                    "dhcp: client of endpoint %s (pid %d) exited; restarting in %.0f s",
                    c.eid,
                    c.pid,
                    delay,
                )
                if self.on_exit is not None:
                    threading.Timer(delay, self._restart, (c.eid,)).start()

    def _restart(self, eid: str) -> None:
        if self._stop.is_set() or self.on_exit is None:
            return
        try:
            self.on_exit(eid)
        except Exception as e:  # the engine logs its own errors; never kill the timer thread
            log.error("dhcp: restarting the client of endpoint %s failed: %s", eid, e)


def _find_hook() -> str:
    here = Path(sys.executable).parent / "netplumb-dhcp-hook"
    if here.exists():
        return str(here)
    return shutil.which("netplumb-dhcp-hook") or str(here)


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _alive(c: _Client) -> bool:
    if c.proc is not None:
        return c.proc.poll() is None
    return _start_time(c.pid) == c.start_time and c.start_time != 0


def _terminate(c: _Client, grace: float = 2.0) -> None:
    if not _alive(c):
        if c.proc is not None:
            c.proc.poll()
        return
    try:
        os.kill(c.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(c):
            break
        time.sleep(0.02)
    else:
        try:
            os.kill(c.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if c.proc is not None:
        try:
            c.proc.wait(1)
        except subprocess.TimeoutExpired:
            pass


def _tail(path: Path, n: int = 2) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " / ".join(lines[-n:])
