"""pipework's forms on Docker containers (named as pipework users name them),
through the installed drop-in against a real netplumbd and dockerd: the
container ends up as pipework would leave it, and keeps it across
`docker restart`, which pipework could not do.

The same forms on named namespaces: tests/netns/test_pipework_forms.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.dhcp import client_pids, dhcp_server, leased
from fixtures.docker import Containers
from fixtures.host import (
    Daemon,
    Namespaces,
    addresses,
    delete_links,
    link,
    ping,
    routes,
    run,
    unique,
)
from fixtures.pipework import PIPEWORK, pipework, stand_in_nic

REPO = Path(__file__).resolve().parents[2]


def pid_of(name: str) -> int:
    return int(run("docker", "inspect", "-f", "{{.State.Pid}}", name).stdout.strip())


def ns_of(netns: Namespaces, name: str) -> str:
    """A named handle (/run/netns/...) on the container's current namespace,
    so `ip -n` can look inside; removed with the test's namespaces."""
    handle = unique("npcn-")
    run("ip", "netns", "attach", handle, str(pid_of(name)))
    netns.names.append(handle)
    return handle


def restart(name: str) -> None:
    run("docker", "restart", "-t", "0", name, timeout=60)


@pytest.fixture
def nic(netns: Namespaces) -> Iterator[str]:
    """A stand-in host NIC; its peer namespace has 198.18.80.1/24."""
    with stand_in_nic(netns, "198.18.80.1/24") as (name, _):
        yield name


def test_bridge_forms_on_containers_survive_a_restart(
    daemon: Daemon, containers: Containers, netns: Namespaces
) -> None:
    br = unique("brpc")  # missing, starting with br: pipework creates it
    a, _ = containers.run()
    _, b_id = containers.run()
    host = unique("npl")
    try:
        rc, err = pipework(
            daemon, br, "-i", "eth2", "-l", host, a, "198.18.81.5/24@198.18.81.1", "U:web-a"
        )
        assert rc == 0, err
        rc, err = pipework(daemon, br, b_id[:12], "2001:db8:81::6/64", "02:00:00:81:00:06")
        assert rc == 0, err
        rc, err = pipework(daemon, br, "-i", "eth3", b_id[:12], "198.18.81.6/24")
        assert rc == 0, err
        na = ns_of(netns, a)
        assert link(host)["master"] == br  # type: ignore[index]
        mac_a = link("eth2", na)["address"]  # type: ignore[index]
        assert addresses("eth2", na) == {"198.18.81.5/24"}
        assert [r["gateway"] for r in routes(na) if r["dst"] == "default"] == ["198.18.81.1"]
        assert ping(na, "198.18.81.6")
        rc, err = pipework(daemon, "route", a, "add", "198.19.81.0/24", "via", "198.18.81.6")
        assert rc == 0, err
        rc, err = pipework(daemon, "rule", a, "add", "from", "198.18.81.5", "table", "81")
        assert rc == 0, err
        rc, err = pipework(
            daemon, "tc", a, "qdisc", "add", "dev", "eth2", "root", "pfifo", "limit", "81"
        )
        assert rc == 0, err
        restart(a)
        deadline = time.monotonic() + 10
        na = ns_of(netns, a)
        while link("eth2", na) is None or not addresses("eth2", na):
            assert time.monotonic() < deadline, "not re-plumbed after the restart"
            time.sleep(0.1)
        assert link("eth2", na)["address"] == mac_a  # type: ignore[index]
        assert addresses("eth2", na) == {"198.18.81.5/24"}
        assert any(r["dst"] == "198.19.81.0/24" for r in routes(na))
        assert "lookup 81" in run("ip", "-n", na, "rule", "show").stdout

        def qdisc() -> str:
            return run("ip", "netns", "exec", na, "tc", "qdisc", "show", "dev", "eth2").stdout

        # tc runs as a program once the interface is back: a moment later
        while "limit 81" not in qdisc():
            assert time.monotonic() < deadline, f"tc not re-applied: {qdisc()}"
            time.sleep(0.1)
        assert "pfifo" in qdisc()
        assert ping(na, "198.18.81.6")
    finally:
        containers.cleanup()
        containers.names.clear()
        daemon.cli("bridge", "del", br)
        delete_links([br, host])


def test_macvlan_and_direct_phys_on_containers(
    daemon: Daemon, containers: Containers, netns: Namespaces, nic: str
) -> None:
    a, _ = containers.run()
    b, _ = containers.run()
    before = link(nic)
    assert before is not None
    rc, err = pipework(daemon, nic, a, "198.18.80.5/24")
    assert rc == 0, err
    na = ns_of(netns, a)
    assert link("eth1", na)["linkinfo"]["info_kind"] == "macvlan"  # type: ignore[index]
    assert ping(na, "198.18.80.1")
    rc, _, err = daemon.cli("detach", a)
    assert rc == 0, err
    rc, err = pipework(daemon, "--direct-phys", nic, "-i", "eth7", b, "198.18.80.6/24")
    assert rc == 0, err
    nb = ns_of(netns, b)
    assert link(nic) is None and addresses("eth7", nb) == {"198.18.80.6/24"}
    assert ping(nb, "198.18.80.1")
    rc, _, err = daemon.cli("detach", b)
    assert rc == 0, err
    back = link(nic)
    assert back is not None and back["address"] == before["address"]


def test_dhcp_on_a_container_keeps_its_lease_across_restart_and_rm(
    daemon: Daemon, containers: Containers, netns: Namespaces
) -> None:
    br = unique("brdc")
    with dhcp_server(daemon, netns, br, net="198.18.82") as server:
        a, _ = containers.run()
        rc, err = pipework(daemon, br, a, "udhcpc-f", "U:dhcp-c1")
        assert rc == 0, err
        na = ns_of(netns, a)
        (first,) = addresses("eth1", na)
        assert leased(first, server)
        ino = os.stat(f"/proc/{pid_of(a)}/ns/net").st_ino
        assert len(client_pids(ino)) == 1
        restart(a)
        deadline = time.monotonic() + 20
        ino2 = os.stat(f"/proc/{pid_of(a)}/ns/net").st_ino
        na = ns_of(netns, a)
        while not addresses("eth1", na):
            assert time.monotonic() < deadline, "no lease after the restart"
            time.sleep(0.1)
        assert addresses("eth1", na) == {first}  # the same MAC gets the same lease
        assert client_pids(ino) == [] and len(client_pids(ino2)) == 1
        assert ping(na, server.address)
        run("docker", "rm", "-f", a)
        containers.names.remove(a)
        deadline = time.monotonic() + 10
        while client_pids(ino2) or [
            e for e in daemon.cli_json("ls")["endpoints"] if e.get("guest_name") == a
        ]:
            assert time.monotonic() < deadline, "client or record left after docker rm -f"
            time.sleep(0.1)
    daemon.cli("bridge", "del", br)
    delete_links([br])


def test_wait_inside_a_container(daemon: Daemon, containers: Containers) -> None:
    """pipework --wait run inside the container (pipework's own use, with the
    script copied into the image): here the drop-in and its Python are
    bind-mounted read-only into the busybox container."""
    mounts = {"/usr", "/lib", "/lib64", sys.base_prefix, sys.prefix, str(REPO)}
    args = []
    for m in sorted(p for p in mounts if os.path.exists(p)):
        args += ["-v", f"{m}:{m}:ro"]
    name = unique("npc-")
    run(
        "docker",
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        name,
        *args,
        containers.image,
        "sleep",
        "100000",
        timeout=60,
    )
    containers.names.append(name)
    br = unique("brwc")
    waiter = subprocess.Popen(
        ["docker", "exec", name, PIPEWORK, "--wait", "-i", "eth1", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert waiter.poll() is None, waiter.communicate()
        rc, err = pipework(daemon, br, name, "198.18.83.5/24")
        assert rc == 0, err
        out, err = waiter.communicate(timeout=20)
        assert waiter.returncode == 0, (out, err)
    finally:
        waiter.kill()
        waiter.wait()
        containers.cleanup()
        containers.names.clear()
        daemon.cli("bridge", "del", br)
        delete_links([br])
    res = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--net",
            "none",
            *args,
            containers.image,
            PIPEWORK,
            "--wait",
            "--timeout",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 5 and "not up with an address" in res.stderr
