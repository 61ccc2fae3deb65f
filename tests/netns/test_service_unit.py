"""deploy/systemd/netplumbd.service: the unit is valid for systemd, and
netplumbd does its work inside the sandbox the unit describes (rebuilt by
hand around a real netplumbd: fixtures/unit_sandbox.py)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from fixtures.dhcp import client_pids, dhcp_server, leased
from fixtures.host import (
    NETPLUMBD,
    Daemon,
    Namespaces,
    addresses,
    ping,
    remove_bridge,
    require_root,
    run,
    unique,
)
from fixtures.unit_sandbox import capability_mask, parse_unit, unit_sandbox, words

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "netplumbd.service"
LAUNCHER = str(Path(__file__).resolve().parents[1] / "fixtures" / "unit_sandbox.py")


def _require(program: str) -> None:
    if shutil.which(program) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is not installed (deploy/setup-dev.sh installs it)")
        pytest.skip(f"{program} is not installed")


def verify(unit_path: str) -> str:
    """systemd-analyze verify's complaints about a unit file ('' when none)."""
    res = run("systemd-analyze", "verify", unit_path, check=False)
    return (res.stdout + res.stderr).strip() + (
        f" (exit {res.returncode})" if res.returncode else ""
    )


def test_unit_verifies_and_keeps_its_sandbox() -> None:
    _require("systemd-analyze")
    work = tempfile.mkdtemp(prefix="netplumb-unit-")
    try:
        # verify wants ExecStart= to exist: point it at this checkout's netplumbd
        text = UNIT.read_text().replace("/opt/netplumb/venv/bin/netplumbd", NETPLUMBD)
        path = os.path.join(work, "netplumbd.service")
        Path(path).write_text(text)
        assert verify(path) == ""
        Path(path).write_text(text.replace("WatchdogSec=", "WatchdogSecs="))
        assert "Unknown key" in verify(path)  # so an empty answer means something

        unit = parse_unit(UNIT.read_text())
        assert unit["Service.Type"] == ["notify"]
        assert int(unit["Service.WatchdogSec"][0]) > 0
        assert unit["Service.Restart"] == ["on-failure"]
        after = words({"Service.After": unit["Unit.After"]}, "After")
        for name in ("ovsdb-server", "ovs-vswitchd", "openvswitch-switch", "docker"):
            assert f"{name}.service" in after
        # the exposure score of systemd's own review (0 best .. 10 worst);
        # 10 capabilities, PrivateNetwork=no and root are what is left.
        res = run("systemd-analyze", "security", "--offline=yes", path, check=False)
        Path(path).write_text(text)
        res = run("systemd-analyze", "security", "--offline=yes", path, check=False)
        score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
        assert score is not None, res.stdout + res.stderr
        print(f"systemd-analyze security: exposure {score.group(1)}")
        assert float(score.group(1)) <= 6.0, res.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def _exec_start_pre(unit: dict[str, list[str]]) -> list[str]:
    """Run the unit's privileged ExecStartPre=+ commands (mkdir -p only);
    returns the directories they made, for the test to remove."""
    made = []
    for command in unit.get("Service.ExecStartPre", []):
        argv = command.removeprefix("+").split()
        assert command.startswith("+") and argv[:2] == ["/bin/mkdir", "-p"], command
        for path in argv[2:]:
            if not os.path.exists(path):
                made.append(path)
        run(*argv)
    return made


def test_netplumbd_works_inside_the_units_sandbox(netns: Namespaces) -> None:
    require_root()
    _require("dhcpcd")
    unit = parse_unit(UNIT.read_text())
    work = tempfile.mkdtemp(prefix="netplumb-unit-", dir="/run")  # RuntimeDirectory, StateDirectory
    # The notify socket sits on a read-only mount in the sandbox, like
    # /run/openvswitch/db.sock and /run/docker.sock.
    notify_dir = tempfile.mkdtemp(prefix="netplumb-unit-notify-", dir="/run")
    made = _exec_start_pre(unit)
    d = Daemon(workdir=work)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"{notify_dir}/notify.sock")
    sock.settimeout(20)
    sleeper = None
    bridges = [unique("nptb"), unique("nptb")]
    try:
        spec = unit_sandbox(unit, [work])
        with open(d.log_path, "ab") as log:
            argv = [NETPLUMBD, "--socket", d.socket, "--state-dir", d.state_dir]
            argv += ["--log-level", "debug", "--socket-group", "nogroup"]
            d.proc = subprocess.Popen(
                [sys.executable, LAUNCHER, json.dumps(spec), "--", *argv],
                stdout=log,
                stderr=log,
                env=dict(os.environ, NOTIFY_SOCKET=f"{notify_dir}/notify.sock"),
            )
        d.wait_ready(30)
        assert sock.recv(4096).decode().startswith("READY=1")
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        assert f"CapBnd:\t{capability_mask(spec['capabilities']):016x}" in status
        assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
        assert os.readlink(f"/proc/{d.proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert os.stat(d.socket).st_gid == grp.getgrnam("nogroup").gr_gid  # CAP_CHOWN

        # Named namespaces made after the start, and a process's namespace
        # (a root process with every capability: CAP_SYS_PTRACE).
        a, b = netns.new(), netns.new()
        sleeper = subprocess.Popen(["unshare", "--net", "sleep", "60"])
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{sleeper.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare did not make a namespace"
            time.sleep(0.02)
        d.cli_json("bridge", "add", bridges[0], "--address", "198.18.88.1/24")
        d.cli_json("attach", bridges[0], f"netns:{a}", "198.18.88.10/24")
        d.cli_json("attach", bridges[0], f"netns:{b}", "198.18.88.11/24")
        d.cli_json("attach", bridges[0], f"pid:{sleeper.pid}", "198.18.88.12/24")
        assert ping(a, "198.18.88.11") and ping(a, "198.18.88.12")

        # dhcpcd: privilege separation, its private /run/dhcpcd, /var/lib/dhcpcd
        with dhcp_server(d, netns, bridges[1], net="198.18.89") as server:
            c = netns.new()
            rc, _, err = d.cli(
                "attach", bridges[1], f"netns:{c}", "--dhcp", "dhcpcd", "--dhcp-keep"
            )
            assert rc == 0, f"{err}\n{d.log()}"
            have = addresses("eth1", c)
            assert len(have) == 1 and leased(next(iter(have)), server), have
            # dhcpcd separated its privileges (it goes on as root when it cannot)
            dhcpcd_uid = pwd.getpwnam("dhcpcd").pw_uid
            uids = {_uid(pid) for pid in client_pids(os.stat(f"/run/netns/{c}").st_ino)}
            assert dhcpcd_uid in uids, uids
            d.cli_json("detach", f"netns:{c}")  # stops it: CAP_KILL
            # udhcpc runs netplumb-dhcp-hook, which sets the address
            e = netns.new()
            rc, _, err = d.cli("attach", bridges[1], f"netns:{e}", "--dhcp", "udhcpc")
            assert rc == 0, f"{err}\n{d.log()}"
            have = addresses("eth1", e)
            assert len(have) == 1 and leased(next(iter(have)), server), have

        assert os.path.exists(os.path.join(d.state_dir, "state.json"))
        trouble = re.compile(r"Traceback|ERROR netplumb|Permission denied|not permitted|Read-only")
        assert not trouble.search(d.log()), d.log()
    finally:
        for br in bridges:
            remove_bridge(d, br)
        d.stop()
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        sock.close()
        for path in (work, notify_dir, *made):
            shutil.rmtree(path, ignore_errors=True)
