"""The lab itself: hosts, underlay, OVS, one netplumbd per host, the lab.py
command, and a teardown that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixtures.lab import (
    LAB_SCRIPT,
    Lab,
    LabError,
    LabExists,
    assert_gone,
    require_lab,
    teardown,
    unique_prefix,
)

# The command as a user runs it: the system python3 (no grpc there: the lab
# imports only the standard library).
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def lab_py(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(LAB_SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_hosts_are_built(lab3: Lab) -> None:
    assert [h.name for h in lab3.hosts] == ["h1", "h2", "h3"]
    ports = json.loads(
        subprocess.run(
            ["ip", "-n", lab3.fabric, "-j", "link", "show", "master", "fabric0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert sorted(p["ifname"] for p in ports) == ["h1", "h2", "h3"]
    for h in lab3.hosts:
        assert h.underlay_address == f"198.18.0.{10 + h.index}"
        addrs = json.loads(lab3.exec(h, ["ip", "-j", "addr", "show"]).stdout)
        by_dev = {
            a["ifname"]: {i["local"] for i in a["addr_info"] if i.get("scope") == "global"}
            for a in addrs
        }
        assert by_dev["br-phy"] == {h.underlay_address, h.underlay_address6}
        assert by_dev["eth0"] == set()  # the address sits on br-phy, not on eth0
        # The agent and both OVS daemons run inside the host's namespace.
        host_ns = os.stat(f"/run/netns/{h.netns}").st_ino
        pids = {
            "netplumbd": h.agent_pid(),
            "ovsdb-server": h.ovs_pid("ovsdb-server"),
            "ovs-vswitchd": h.ovs_pid("ovs-vswitchd"),
        }
        for name, pid in pids.items():
            assert pid, f"{h.name}: {name} not running"
            assert netns_inode(pid) == host_ns, f"{h.name}: {name} outside {h.netns}"
        show = lab3.vsctl(h, "get", "bridge", "br-phy", "datapath_type", "fail_mode").stdout
        assert show.split() == ["netdev", "standalone"]
        assert lab3.vsctl(h, "list-ports", "br-phy").stdout.split() == ["eth0"]


def test_every_host_reaches_every_other(lab3: Lab) -> None:
    pairs = [(a, b) for a in lab3.hosts for b in lab3.hosts if a is not b]
    with ThreadPoolExecutor(len(pairs)) as pool:
        results = list(pool.map(lambda p: lab3.ping(p[0], p[1].underlay_address, 2), pairs))
    for (a, b), res in zip(pairs, results, strict=True):
        assert res.returncode == 0, f"{a.name} -> {b.name}: {res.stdout}{res.stderr}"
        # eth0 is deaf to IP: the kernel answers once (through br-phy), not twice
        assert "DUP" not in res.stdout, f"{a.name} -> {b.name}: {res.stdout}"
    v6 = lab3.ping("h1", lab3.hosts[2].underlay_address6, 1)
    assert v6.returncode == 0, v6.stdout + v6.stderr


def test_tcp_over_the_underlay(lab3: Lab) -> None:
    """TCP through the userspace br-phy of both ends (where unfinished
    checksums would make TCP hang while ping works)."""
    result = lab3.iperf("h1", "h3", seconds=1)
    assert result["gbps"] > 0.02, result


def test_every_agent_answers(lab3: Lab) -> None:
    """Each host's agent answers on its own socket, with its own state, and
    (once its background OVSDB connection is up) talks to its own OVS."""
    for h in lab3.hosts:
        deadline = time.monotonic() + 10
        while True:
            res = lab3.netplumb(h, "--json", "status")
            assert res.returncode == 0, res.stderr
            status = json.loads(res.stdout)
            assert status["state_dir"] == h.state_dir
            ovsdb = {d["name"]: d for d in status["dependencies"]}["ovsdb"]
            if ovsdb.get("up") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ovsdb.get("up"), ovsdb
        assert h.db_socket in ovsdb.get("detail", ""), ovsdb


def test_client_from_the_test_process(lab3: Lab) -> None:
    """A unix socket is reached by its path from any network namespace."""
    for h in lab3.hosts:
        with lab3.client(h) as np:
            assert np.status().state_dir == h.state_dir


def test_exec_command(lab3: Lab) -> None:
    p = ["--prefix", lab3.prefix]
    res = lab_py("exec", *p, "h2", "--", "printenv", "NETPLUMB_SOCKET")
    assert (res.returncode, res.stdout.strip()) == (0, lab3.hosts[1].socket)
    res = lab_py("exec", *p, "3", "--", "netplumb", "status")
    assert res.returncode == 0, res.stderr
    assert lab3.hosts[2].state_dir in res.stdout
    res = lab_py("exec", *p, "h1", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert res.returncode == 7
    res = lab_py("exec", *p, "h1", "--", "ip", "-j", "addr", "show", "dev", "br-phy")
    assert lab3.hosts[0].underlay_address in res.stdout
    assert lab_py("exec", *p, "h9", "--", "true").returncode != 0


def test_restart_agent_command(lab3: Lab) -> None:
    h = lab3.hosts[1]
    for extra in ([], ["--kill"]):
        old = h.agent_pid()
        res = lab_py("restart-agent", "--prefix", lab3.prefix, "h2", *extra)
        assert res.returncode == 0, res.stderr
        new = h.agent_pid()
        assert new and new != old
        assert old is None or not os.path.exists(f"/proc/{old}/ns/net")
        assert lab3.netplumb(h, "status").returncode == 0


def test_stop_and_start_agent(lab3: Lab) -> None:
    h = lab3.hosts[2]
    lab3.stop_agent(h, signal.SIGKILL)
    assert h.agent_pid() is None
    assert lab3.netplumb(h, "status").returncode == 5  # daemon unavailable
    pid = lab3.start_agent(h)
    assert h.agent_pid() == pid
    assert lab3.stop_agent(h) == 0  # SIGTERM: a clean exit
    lab3.start_agent(h)
    assert lab3.netplumb(h, "status").returncode == 0


def test_stop_and_start_ovs(lab3: Lab) -> None:
    h3 = lab3.hosts[2]
    lab3.stop_ovs(h3)
    assert h3.ovs_pid("ovs-vswitchd") is None and h3.ovs_pid("ovsdb-server") is None
    assert lab3.ping("h1", h3.underlay_address, 1, wait=1).returncode != 0
    lab3.start_ovs(h3)
    assert h3.ovs_pid("ovs-vswitchd") and h3.ovs_pid("ovsdb-server")
    res = lab3.ping("h1", h3.underlay_address, 3)
    assert res.returncode == 0, res.stdout
    assert lab_py("status", "--prefix", lab3.prefix).returncode == 0


def test_up_refuses_an_existing_lab(lab3: Lab) -> None:
    with pytest.raises(LabExists):
        Lab(lab3.prefix, 1).up()
    res = lab_py("up", "--prefix", lab3.prefix, "--hosts", "1")
    assert res.returncode != 0 and "exists" in res.stderr
    assert lab3.ping("h1", "h2").returncode == 0  # untouched


def test_no_ovs_lab_with_the_command() -> None:
    require_lab(ovs=False)
    prefix = unique_prefix()
    lab = Lab(prefix, 2, ovs=False)
    try:
        res = lab_py("up", "--prefix", prefix, "--hosts", "2", "--no-ovs", python=SYSTEM_PYTHON)
        assert res.returncode == 0, res.stderr
        res = lab_py("exec", "--prefix", prefix, "h1", "--", "ping", "-c1", "-W2", "198.18.0.12")
        assert res.returncode == 0, res.stdout + res.stderr
        assert lab.ping("h2", "h1").returncode == 0
        for h in lab.hosts:
            assert h.underlay_dev == "eth0"
            assert h.underlay_address in lab.exec(h, ["ip", "addr", "show", "dev", "eth0"]).stdout
            assert not Path(h.ovs_dir).exists()
            assert lab.netplumb(h, "status").returncode == 0
        res = lab_py("status", "--prefix", prefix, python=SYSTEM_PYTHON)
        assert res.returncode == 0, res.stdout + res.stderr
        res = lab_py("down", "--prefix", prefix, python=SYSTEM_PYTHON)
        assert res.returncode == 0, res.stderr
        assert_gone(lab)
    finally:
        teardown(prefix)


def test_down_after_a_crash() -> None:
    """No record, processes still running: down finds it all by prefix."""
    require_lab(ovs=True)
    lab = Lab(unique_prefix(), 2, ovs=True)
    try:
        lab.up()
        pids = [h.agent_pid() for h in lab.hosts] + [h.ovs_pid("ovs-vswitchd") for h in lab.hosts]
        (lab.workdir / "lab.json").unlink()  # as if `up` had died half-way
        res = lab_py("down", "--prefix", lab.prefix)
        assert res.returncode == 0, res.stderr
        assert_gone(lab)
        assert all(p and not os.path.exists(f"/proc/{p}/ns/net") for p in pids)
    finally:
        lab.down()


def test_failed_up_removes_what_it_made(tmp_path: Path) -> None:
    require_lab(ovs=False)
    fake = tmp_path / "netplumbd"
    fake.write_text("#!/bin/sh\necho 'netplumbd: cannot start (test)' >&2\nexit 3\n")
    fake.chmod(0o755)
    lab = Lab(unique_prefix(), 2, ovs=False, bin_dir=tmp_path)
    with pytest.raises(LabError) as err:
        lab.up()
    assert "exited with status 3" in str(err.value)
    assert "cannot start (test)" in str(err.value)
    assert_gone(lab)
